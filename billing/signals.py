"""Drop cached prices the moment the operator changes them, and again when the change commits."""

from functools import partial

from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from billing.models import GroupRatio, ModelPrice
from billing.pricing import group_cache_key, price_cache_key
from config.cache import forget_now_and_after_commit, memo


def _forget(cache_key: str) -> None:
    cache.delete(cache_key)
    memo.clear()


@receiver([post_save, post_delete], sender=ModelPrice)
def forget_price(sender, instance, **kwargs):
    forget_now_and_after_commit(partial(_forget, price_cache_key(instance.model)))


@receiver([post_save, post_delete], sender=GroupRatio)
def forget_group_ratio(sender, instance, **kwargs):
    forget_now_and_after_commit(partial(_forget, group_cache_key(instance.name)))
