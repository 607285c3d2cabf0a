"""Drop cached channels and keys the moment they change, and again when the change commits
(config.cache says what each drop reaches and how soon)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import ApiKey, User
from config.cache import forget_channels, forget_keys
from relay.models import Channel


@receiver([post_save, post_delete], sender=Channel)
def forget_channel(sender, **kwargs):
    forget_channels()


@receiver([post_save, post_delete], sender=ApiKey)
def forget_key(sender, instance, **kwargs):
    forget_keys([instance.lookup_hash])


# What a key's cached settings carry of its user.
CACHED_USER_FIELDS = {"group", "is_active"}


@receiver(post_save, sender=User)
def forget_user_keys(sender, instance, update_fields=None, **kwargs):
    if update_fields is not None and not CACHED_USER_FIELDS & set(update_fields):
        return  # e.g. the last_login write at every sign-in: no key needs reloading
    hashes = list(ApiKey.objects.filter(user_id=instance.id).values_list("lookup_hash", flat=True))
    forget_keys(hashes)
