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
from django.db import transaction


@cache
def shared_cache():
    return caches.create_connection("default")


def forget_now_and_after_commit(forget) -> None:
    """Drop cached copies now, and again once the change that made them stale commits.

    Signals fire inside the saving transaction: another process that reloads in between
    would read the old row and cache it again. The second drop removes that copy. (Outside a
    transaction the change is already committed: once is enough.)
    """
    forget()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(forget)


def version(name: str) -> int:
    """A shared version number (0 until first moved): processes compare it with the one their
    copy of something was made at."""
    return shared_cache().get(name, 0)


def move_version(name: str) -> None:
    """Move a shared version number on, so every process drops its copy."""
    try:
        shared_cache().incr(name)
    except ValueError:  # never moved before (or evicted)
        shared_cache().set(name, 1, None)


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
