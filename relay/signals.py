"""Drop cached channels and keys the moment they change."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import ApiKey, User
from relay.auth import forget_keys
from relay.models import Channel
from relay.routing import forget_channels


@receiver([post_save, post_delete], sender=Channel)
def forget_channel(sender, **kwargs):
    forget_channels()


@receiver([post_save, post_delete], sender=ApiKey)
def forget_key(sender, instance, **kwargs):
    forget_keys([instance.lookup_hash])


@receiver(post_save, sender=User)
def forget_user_keys(sender, instance, **kwargs):
    # A key's cached entry carries its user's group and active flag.
    hashes = ApiKey.objects.filter(user_id=instance.id).values_list("lookup_hash", flat=True)
    forget_keys(hashes)
