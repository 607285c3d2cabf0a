"""Drop cached prices the moment the operator changes them."""

from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from billing.models import GroupRatio, ModelPrice
from billing.pricing import group_cache_key, price_cache_key
from config.cache import memo


@receiver([post_save, post_delete], sender=ModelPrice)
def forget_price(sender, instance, **kwargs):
    cache.delete(price_cache_key(instance.model))
    memo.clear()


@receiver([post_save, post_delete], sender=GroupRatio)
def forget_group_ratio(sender, instance, **kwargs):
    cache.delete(group_cache_key(instance.name))
    memo.clear()
