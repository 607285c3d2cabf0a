"""One cache client per process, for the relay's per-call lookups.

``django.core.cache.cache`` is context-local: under ASGI every request (and every
sync_to_async call from it) gets a fresh backend, which for Redis means a fresh connection
pool and a new TCP connection per call. The hot path reads through this process-wide instance
instead; writes and invalidations may use either, since both reach the same store.
"""

import random
import time
from functools import cache

from django.conf import settings
from django.core.cache import caches


@cache
def shared_cache():
    return caches.create_connection("default")


class LocalMemo:
    """Values kept in this process for a moment, in front of the shared cache.

    For what every call reads and operators rarely change (keys, prices, group ratios, the
    channel table's version): a saved change clears this process's memo at once (billing.signals,
    relay.signals) and reaches other processes within ``seconds``.
    """

    def __init__(self, seconds: float, spread: float = 0.0):
        self.seconds = seconds
        # Entries loaded together (a server warming up) expire at different moments when
        # spread > 0, rather than all being reloaded in one burst.
        self.spread = spread
        self._values: dict = {}

    def get(self, key, load):
        found, value = self.lookup(key)
        if not found:
            value = load()
            self.put(key, value)
        return value

    def lookup(self, key) -> tuple[bool, object]:
        """(True, value) while ``key`` is fresh, else (False, None)."""
        hit = self._values.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def put(self, key, value) -> None:
        seconds = self.seconds * (1 - self.spread * random.random())
        self._values[key] = (time.monotonic() + seconds, value)

    def clear(self) -> None:
        self._values.clear()


memo = LocalMemo(seconds=settings.RELAY_LOCAL_CACHE_SECONDS)
