"""Drop cached channels and keys the moment they change."""

from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import ApiKey, User
from relay.auth import key_cache_key
from relay.models import Channel
from relay.routing import forget_channels


@receiver([post_save, post_delete], sender=Channel)
def forget_channel(sender, **kwargs):
    forget_channels()


@receiver([post_save, post_delete], sender=ApiKey)
def forget_key(sender, instance, **kwargs):
    cache.delete(key_cache_key(instance.lookup_hash))


@receiver(post_save, sender=User)
def forget_user_keys(sender, instance, **kwargs):
    # A key's cached entry carries its user's group and active flag.
    hashes = ApiKey.objects.filter(user_id=instance.id).values_list("lookup_hash", flat=True)
    cache.delete_many([key_cache_key(h) for h in hashes])
