"""Drop cached prices the moment the operator changes them, and again when the change commits
(config.cache says what each drop reaches and how soon)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from billing.models import GroupRatio, ModelPrice
from billing.pricing import group_cache_key, price_cache_key
from config.cache import forget_shared


@receiver([post_save, post_delete], sender=ModelPrice)
def forget_price(sender, instance, **kwargs):
    forget_shared(price_cache_key(instance.model))


@receiver([post_save, post_delete], sender=GroupRatio)
def forget_group_ratio(sender, instance, **kwargs):
    forget_shared(group_cache_key(instance.name))
