"""Everything Sluice caches, in one place: what each process keeps, what drops it, and how
soon the other processes notice.

Two layers. Each process keeps copies in memos (``LocalMemo``, below), read on the event loop
with no I/O. Behind them is the shared cache (``shared_cache()``), which every process of the
site reaches: Redis in production, a folder of files (``SLUICE_DATA_DIR/cache``) in embedded
mode, so a management command or an admin page served by another process reaches the server
the way another node would.

What is kept, where, and what drops it:

- A key's settings (relay.auth): in each process, ``known_keys`` / ``unknown_keys``, made at
  a ``KEYS`` version, for at most RELAY_CACHE_SECONDS; in the shared cache, ``apikey:<lookup
  hash>`` for RELAY_CACHE_SECONDS. Dropped when a key is saved or deleted, or a user's group
  or is_active is saved (relay.signals).
- The enabled channels (relay.routing): in each process, ``channel_table``, made at a
  ``CHANNELS`` version, for at most RELAY_CACHE_SECONDS; nothing shared (decrypted upstream
  keys never leave the process). Dropped when a channel is saved or deleted (relay.signals).
- A price, a group ratio (billing.pricing): in each process, ``memo`` for
  RELAY_LOCAL_CACHE_SECONDS; in the shared cache, ``price:v2:<model>`` and
  ``group-ratio:<group>`` for RELAY_CACHE_SECONDS. Dropped when a ModelPrice or GroupRatio is
  saved or deleted (billing.signals).
- The versions ``KEYS`` and ``CHANNELS``: in each process, ``memo``; in the shared cache,
  ``apikeys:epoch`` and ``channels:version``, with no expiry. They are what moves.
- Users and keys just refused for a spent balance (relay.admission): a memo of its own, for
  3 s, in that process only. Nothing drops them; they expire.

One mechanism drops them all: ``forget`` (through ``forget_keys``, ``forget_channels``,
``forget_shared``), called by the signals of whatever changed. In the process that saved the
change, its copies go at once. Other processes notice within RELAY_LOCAL_CACHE_SECONDS, the
longest they trust their last look at the shared cache: a price's or group ratio's memo entry
expires and the shared entry behind it is gone; keys and channels, dearer to reload, stay in
a process for as long as their shared version has not moved, and ``forget`` moves it. A
change made behind Django's back (SQL) sends no signal: it is noticed once the copies expire,
within RELAY_CACHE_SECONDS for channels, and for prices (plus RELAY_LOCAL_CACHE_SECONDS);
within twice that for keys (a process may have copied a shared entry about to expire).

When the shared cache cannot be reached (Redis stopped, restarting, or not answering within
its socket timeout), nothing fails because of it: ``shared_cache()`` is a ``TolerantCache``
that reads as "not there" and drops writes, so keys, prices and group ratios come from this
process's copies while they are fresh and from the database after; a shared version it cannot
read is "unknown", a number never seen before, kept in ``memo`` for
RELAY_LOCAL_CACHE_SECONDS like any version, so copies made meanwhile live that long and no
longer. After a failure the cache is not asked again for CACHE_RETRY_SECONDS; the first
operation after that which succeeds ends the outage by itself, and the drops (``forget``)
that could not reach it meanwhile are done then, so a key disabled during the outage is
dropped everywhere once it is back. The operator sees one WARNING when it starts failing (and
every WARN_EVERY_SECONDS while it lasts), one when it answers again, and ``/readyz`` reports
it (config.health). docs/faults.md.

Tests forget everything, in every layer, with ``forget_all()``.
"""

import logging
import random
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache

from django.conf import settings
from django.core.cache import caches
from django.db import transaction

SHARED_CACHE = "shared"
WARN_EVERY_SECONDS = 30.0  # while the shared cache stays unreachable, one warning this often

logger = logging.getLogger(__name__)


class TolerantCache:
    """The shared cache's backend, made harmless when it cannot be reached: reads miss
    (``get`` answers its default, ``get_many`` nothing), writes and deletes are dropped, and
    ``incr`` answers None. ``ValueError`` (``incr`` of a missing key) is an answer, not a
    failure, and passes through.

    After a failure, the backend is left alone for CACHE_RETRY_SECONDS, so calls do not each
    wait out its socket timeout; then the next operation tries it again.
    """

    def __init__(self, backend):
        self.backend = backend
        self.failing_since: float | None = None  # wall-clock time of the first failure
        self._retry_at = 0.0
        self._last_warning = 0.0
        self._missed: list[tuple[list[str], SharedVersion | None]] = []
        self._lock = threading.Lock()

    @property
    def reachable(self) -> bool:
        return self.failing_since is None

    def _call(self, operation: str, failed, *args, **kwargs):
        if self.failing_since is not None and time.monotonic() < self._retry_at:
            return failed
        try:
            result = getattr(self.backend, operation)(*args, **kwargs)
        except ValueError:
            raise
        except Exception as problem:  # noqa: BLE001 - any failure of a cache is a miss
            self._failed(problem)
            return failed
        if self.failing_since is not None:
            self._recovered()
        return result

    def _failed(self, problem: Exception) -> None:
        now = time.monotonic()
        self._retry_at = now + settings.CACHE_RETRY_SECONDS
        if self.failing_since is None:
            self.failing_since = time.time()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning(
                "shared cache unreachable (%s: %s): serving from this process's copies and "
                "the database",
                type(problem).__name__,
                problem,
            )

    def _recovered(self) -> None:
        with self._lock:
            if self.failing_since is None:
                return
            lasted = time.time() - self.failing_since
            self.failing_since, self._last_warning = None, 0.0
            missed, self._missed = self._missed, []
        logger.warning("shared cache answers again (unreachable for %.1f s)", lasted)
        for shared_keys, version in missed:  # what forget could not drop meanwhile
            if shared_keys:
                self.delete_many(shared_keys)
            if version is not None:
                version.move()

    def remember_missed(self, shared_keys: list[str], version: "SharedVersion | None") -> None:
        """A drop that could not reach the cache: done again once it answers."""
        with self._lock:
            if len(self._missed) < 10_000:
                self._missed.append((shared_keys, version))
            else:  # a long outage with many changes: move every version instead, once
                self._missed = [([], KEYS), ([], CHANNELS)]

    def lookup(self, key) -> tuple[bool, object]:
        """(True, value or None when missing), or (False, None) when unreachable."""
        unreachable = object()
        value = self._call("get", unreachable, key)
        return (False, None) if value is unreachable else (True, value)

    def get(self, key, default=None, **options):
        return self._call("get", default, key, default, **options)

    def get_many(self, keys, **options):
        return self._call("get_many", {}, keys, **options)

    def set(self, *args, **options) -> None:
        self._call("set", None, *args, **options)

    def add(self, *args, **options) -> bool:
        return self._call("add", False, *args, **options)

    def delete(self, *args, **options) -> bool:
        return self._call("delete", False, *args, **options)

    def delete_many(self, *args, **options) -> None:
        self._call("delete_many", None, *args, **options)

    def incr(self, *args, **options):
        return self._call("incr", None, *args, **options)

    def clear(self) -> None:
        self._call("clear", None)

    def __getattr__(self, name: str):
        return getattr(self.backend, name)  # anything else: the backend's own, untouched


@cache
def shared_cache() -> TolerantCache:
    """The shared cache, one client per process.

    ``django.core.cache.caches[...]`` is context-local: under ASGI every request (and every
    sync_to_async call from it) would get a fresh backend, which for Redis means a fresh
    connection pool and a new TCP connection per call.
    """
    return TolerantCache(caches.create_connection(SHARED_CACHE))


class LocalMemo:
    """Values kept in this process for a moment, in front of the shared cache.

    At most ``max_entries`` are kept, the least recently used going first: some keys come from
    callers (a model name before its price is checked, any presented key's hash), and without a
    bound a caller could grow every worker's memory at will. Lookups and puts run on the event
    loop, but ``clear`` also runs in other threads (signals from admin, management commands): a
    lock around every change keeps the dictionary whole. It is held for microseconds and never
    across an ``await``.

    Every memo made is known to ``forget_all``, wherever it is made.
    """

    _every: "weakref.WeakSet[LocalMemo]" = weakref.WeakSet()

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
        LocalMemo._every.add(self)

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
        seconds = self.seconds * (1 - self.spread * random.random())  # noqa: S311 - not a secret
        with self._lock:
            self._values[key] = (time.monotonic() + seconds, value)
            self._values.move_to_end(key)
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)

    def lookup_at(self, key, version: int) -> tuple[bool, object]:
        """(True, value) while ``key`` is fresh and was put at ``version``, else (False, None)."""
        found, entry = self.lookup(key)
        if found and entry[0] == version:
            return True, entry[1]
        return False, None

    def put_at(self, key, version: int, value) -> None:
        """Keep ``value``, made while the shared version was ``version``."""
        self.put(key, (version, value))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class SharedVersion:
    """A number in the shared cache that moves whenever copies of one kind of thing go stale:
    a process compares it with the one its copy was made at.

    A version that went missing (the shared cache was emptied, or evicted it) reads as 0 and
    restarts from a random number, never from 1: a copy made at the old number would
    otherwise be believed again once the count got back to it.
    """

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"SharedVersion({self.name!r})"

    def read(self) -> int:
        """The version now (sync: a shared cache round trip). When the shared cache cannot
        be reached, "unknown": a negative number never read before, so no copy made at an
        earlier version is trusted, and copies made now live only as long as the caller
        keeps this number (``memo``: RELAY_LOCAL_CACHE_SECONDS)."""
        reached, value = shared_cache().lookup(self.name)
        if not reached:
            return -1 - secrets.randbelow(2**62)
        return value if isinstance(value, int) else 0

    def move(self) -> None:
        """Move the version on, so every process drops its copies made before."""
        try:
            shared_cache().incr(self.name)
        except ValueError:  # missing
            shared_cache().set(self.name, 1 + secrets.randbelow(2**62), None)


KEYS = SharedVersion("apikeys:epoch")
CHANNELS = SharedVersion("channels:version")

# --- What each process keeps ------------------------------------------------------------------

memo = LocalMemo(seconds=settings.RELAY_LOCAL_CACHE_SECONDS)
"""Prices (``("price", model)``), group ratios (``("group", name)``) and the shared versions
(relay.database.remembered): a change saved elsewhere reaches this process when they expire."""

# Made-up keys remembered per process (real ones: settings.RELAY_LOCAL_CACHE_ENTRIES).
UNKNOWN_KEYS_KEPT = 1000

known_keys = LocalMemo(seconds=settings.RELAY_CACHE_SECONDS, spread=0.5)
"""Lookup hash -> (KEYS version, relay.auth.KeyInfo)."""
unknown_keys = LocalMemo(seconds=settings.RELAY_CACHE_SECONDS, max_entries=UNKNOWN_KEYS_KEPT)
"""Lookup hash -> (KEYS version, None). Unknown keys are remembered too (a client retrying a
wrong key should not reach the database every call), but apart and in a few entries: anyone
can present any number of made-up keys, and those must not push real keys out."""

channel_table = LocalMemo(seconds=settings.RELAY_CACHE_SECONDS, max_entries=1)
"""``"enabled"`` -> (CHANNELS version, [relay.routing.ChannelInfo])."""

# --- Dropping copies when something changes ---------------------------------------------------


def key_cache_key(lookup_hash: str) -> str:
    """A key's entry in the shared cache."""
    return f"apikey:{lookup_hash}"


def forget(
    *,
    shared_keys: Iterable[str] = (),
    version: SharedVersion | None = None,
    memos: Iterable[LocalMemo] = (),
) -> None:
    """Drop the copies a change being saved makes stale: ``shared_keys`` from the shared cache,
    ``memos`` and ``memo`` (so this process also re-reads the versions at once) from this
    process, and, by moving ``version``, every other process's copies made before.

    Done now, and again once the saving transaction commits: signals fire inside it, and
    another process that reloads in between would read the old row and cache it again; the
    second drop removes that copy. (Outside a transaction the change is already committed:
    once is enough.)
    """
    shared_keys, memos = list(shared_keys), [*memos, memo]

    def drop() -> None:
        if shared_keys:
            shared_cache().delete_many(shared_keys)
        if version is not None:
            version.move()
        if not shared_cache().reachable:  # done again once it answers (TolerantCache)
            shared_cache().remember_missed(shared_keys, version)
        for each in memos:
            each.clear()

    drop()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(drop)


def forget_keys(lookup_hashes: Iterable[str]) -> None:
    """Drop keys from the shared cache and make every process forget the keys it knows."""
    forget(
        shared_keys=map(key_cache_key, lookup_hashes),
        version=KEYS,
        memos=(known_keys, unknown_keys),
    )


def forget_channels() -> None:
    """Make every process reload its channels."""
    forget(version=CHANNELS, memos=(channel_table,))


def forget_shared(*shared_keys: str) -> None:
    """Drop entries from the shared cache, and this process's ``memo`` (prices, group ratios):
    other processes' memo entries expire within RELAY_LOCAL_CACHE_SECONDS."""
    forget(shared_keys=shared_keys)


def forget_all() -> None:
    """Forget every copy of everything, in this process and in the shared cache (for tests:
    cached rows must not outlive the test database they came from)."""
    for each in list(LocalMemo._every):
        each.clear()
    shared_cache().clear()
    caches["default"].clear()
