"""The Redis cache the site's rate limits and throttles count in (allauth's sign-in and sign-up
limits, the REST API's throttles): when Redis cannot be reached it fails open, by default.

Django's own Redis cache raises when Redis is away, and allauth and DRF do not catch it: every
sign-in would answer 500 while Redis restarts. With ``RATE_LIMITS_FAIL_OPEN`` (the default)
reads miss and writes are dropped instead, so the limits let people through for as long as
Redis is gone, and after a failure Redis is left alone for ``CACHE_RETRY_SECONDS`` rather
than making each request wait out its socket timeout. Set it off and the limits fail closed
(the errors pass through). Guesses at redemption codes and keys always fail closed: they
count in the "guards" cache, which is Django's Redis cache as it is (billing.redemption,
accounts.views_key).
"""

import logging
import time

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)


class FailOpenRedisCache(RedisCache):
    """Django's Redis cache, answering "not there" and dropping writes while Redis is away."""

    _down_until = 0.0

    def _tolerant(self, operation: str, failed, *args, **kwargs):
        if time.monotonic() < self._down_until:
            return failed
        try:
            return getattr(super(), operation)(*args, **kwargs)
        except ValueError:  # incr of a missing key: an answer, not a failure
            raise
        except Exception as problem:  # noqa: BLE001 - any failure of Redis: the limits open
            if self._down_until == 0.0 or time.monotonic() >= self._down_until + 60:
                logger.warning("rate limits fail open: Redis unreachable (%s)", problem)
            self._down_until = time.monotonic() + settings.CACHE_RETRY_SECONDS
            return failed

    def get(self, key, default=None, version=None):
        return self._tolerant("get", default, key, default, version)

    def get_many(self, keys, version=None):
        return self._tolerant("get_many", {}, keys, version)

    def has_key(self, key, version=None):
        return self._tolerant("has_key", False, key, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("set", None, key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("set_many", [], data, timeout, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        # "Added": allauth takes a lock with add() and counts a lock it cannot get as a limit.
        return self._tolerant("add", True, key, value, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("touch", False, key, timeout, version)

    def incr(self, key, delta=1, version=None):
        return self._tolerant("incr", delta, key, delta, version)

    def decr(self, key, delta=1, version=None):
        return self._tolerant("decr", -delta, key, delta, version)

    def delete(self, key, version=None):
        return self._tolerant("delete", False, key, version)

    def delete_many(self, keys, version=None):
        return self._tolerant("delete_many", None, keys, version)
