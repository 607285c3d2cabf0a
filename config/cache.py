"""One cache client per process, for the relay's per-call lookups.

``django.core.cache.cache`` is context-local: under ASGI every request (and every
sync_to_async call from it) gets a fresh backend, which for Redis means a fresh connection
pool and a new TCP connection per call. The hot path reads through this process-wide instance
instead; writes and invalidations may use either, since both reach the same store.
"""

import random
import threading
import time
from collections import OrderedDict
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

    At most ``max_entries`` are kept, the least recently used going first: some keys come from
    callers (a model name before its price is checked, any presented key's hash), and without a
    bound a caller could grow every worker's memory at will. Lookups and puts run on the event
    loop, but ``clear`` also runs in other threads (signals from admin, management commands): a
    lock around every change keeps the dictionary whole. It is held for microseconds and never
    across an ``await``.
    """

    def __init__(self, seconds: float, spread: float = 0.0, max_entries: int | None = None):
        self.seconds = seconds
        # Entries loaded together (a server warming up) expire at different moments when
        # spread > 0, rather than all being reloaded in one burst.
        self.spread = spread
        if max_entries is None:
            max_entries = settings.RELAY_LOCAL_CACHE_ENTRIES
        if max_entries < 1:
            raise ValueError("a LocalMemo keeps at least one entry")
        self.max_entries = max_entries
        # key -> (expires at, value), least recently used first
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def lookup(self, key) -> tuple[bool, object]:
        """(True, value) while ``key`` is fresh, else (False, None)."""
        with self._lock:
            hit = self._values.get(key)
            if hit is None:
                return False, None
            if hit[0] <= time.monotonic():
                del self._values[key]
                return False, None
            self._values.move_to_end(key)
            return True, hit[1]

    def put(self, key, value) -> None:
        seconds = self.seconds * (1 - self.spread * random.random())
        with self._lock:
            self._values[key] = (time.monotonic() + seconds, value)
            self._values.move_to_end(key)
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


memo = LocalMemo(seconds=settings.RELAY_LOCAL_CACHE_SECONDS)
