"""Reads from the async relay: in a worker thread, connection returned at once, and a
database that is away answered with a quick 503 instead of a hang or a 500.

A call reads the database only when this process's copy of what it needs (a key's settings,
a price, the channel table: config.cache says what is kept and for how long) is stale, and
writes it only through the ledger writer (billing.writer). A read runs in a worker thread and
hands its connection back to the pool as soon as it is done, so a pool of a few connections
serves hundreds of calls in flight.

When the database is away (stopped, restarting, unreachable, or frozen and not answering),
a read fails with a database error, or does not finish within
``RELAY_DATABASE_WAIT_SECONDS``; either way the call gets ``errors.database_unavailable()``
(503, ``x-should-retry: true``, ``Retry-After``) in its own API's format. After such a
failure the process treats the database as away for ``DATABASE_RETRY_SECONDS``: calls that
need it are answered at once, without queueing for a connection the pool cannot make, and
the first call after that tries again. docs/faults.md has the whole picture.

The pool itself (psycopg_pool, through Django) reconnects in the background with an
exponential backoff that would reach 8 or 16 s between attempts during a long outage, so
service could come back many seconds after PostgreSQL did; ``cap_reconnect_backoff`` caps
those waits at ``DATABASE_RECONNECT_MAX_SECONDS``.
"""

import asyncio
import logging
import time

import psycopg
import psycopg_pool.pool
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from config.cache import memo
from relay import errors

logger = logging.getLogger(__name__)

# Errors that mean "the database is away", not "this query is wrong": connection refused or
# lost, the pool's wait for a connection timed out (psycopg_pool.PoolTimeout is an
# OperationalError), statement_timeout, a server shutting down. Django's wrappers, and
# psycopg's own for code that uses the connection directly (billing.batch).
UNREACHABLE = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)

_away_until = 0.0  # monotonic time until which the database is taken to be away
_last_warning = 0.0
WARN_EVERY_SECONDS = 10.0  # one log line per outage and per this many seconds, not per call


def is_unreachable(problem: BaseException) -> bool:
    """Whether ``problem`` says the database is away (as opposed to a bug or bad data)."""
    return isinstance(problem, UNREACHABLE)


def away() -> bool:
    """Whether a recent call found the database away (calls then fail fast for a moment)."""
    return time.monotonic() < _away_until


def _contention(problem: BaseException | str) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): that transaction lost, the
    database is there. psycopg counts these as OperationalError too."""
    if not isinstance(problem, BaseException):
        return False
    sqlstate = getattr(problem, "sqlstate", None) or getattr(problem.__cause__, "sqlstate", None)
    return str(sqlstate or "").startswith("40")


def mark_away(problem: BaseException | str) -> None:
    """Remember the database as away for ``DATABASE_RETRY_SECONDS`` (not for a transaction
    that merely lost a deadlock); warn, rate-limited."""
    global _away_until, _last_warning
    if _contention(problem):
        return
    now = time.monotonic()
    _away_until = now + settings.DATABASE_RETRY_SECONDS
    if now - _last_warning >= WARN_EVERY_SECONDS:
        _last_warning = now
        reason = problem if isinstance(problem, str) else type(problem).__name__
        logger.warning("database unavailable (%s): calls answered 503 until it is back", reason)


def unavailable() -> errors.RelayError:
    return errors.database_unavailable(retry_after=settings.DATABASE_RETRY_SECONDS)


def _run_and_release(function, args, kwargs):
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


async def run(function, /, *args, **kwargs):
    """``function(*args, **kwargs)`` in a thread, its database connection released after; a
    database away raises ``errors.database_unavailable()`` (a RelayError) instead.

    Not thread-sensitive: each call is a self-contained burst (its transactions begin and end
    inside it), so any worker of the shared pool may run it. A thread-sensitive call would
    make Django start a fresh thread for every request.
    """
    if away():
        raise unavailable()
    thread = sync_to_async(_run_and_release, thread_sensitive=False)(function, args, kwargs)
    try:
        # A frozen server answers nothing and no client-side timeout ends the query: the call
        # stops waiting, and the thread finishes (or fails) when the server does.
        return await asyncio.wait_for(thread, settings.RELAY_DATABASE_WAIT_SECONDS)
    except TimeoutError:
        mark_away(f"no answer within {settings.RELAY_DATABASE_WAIT_SECONDS:g} s")
        raise unavailable() from None
    except DatabaseError as problem:
        if not is_unreachable(problem):
            raise
        mark_away(problem)
        raise unavailable() from None


async def remembered(key, load, /, *args):
    """``load(*args)`` through this process's memo (config.cache.memo): no thread hop while the
    value is fresh."""
    found, value = memo.lookup(key)
    if not found:
        value = await run(load, *args)
        memo.put(key, value)
    return value


class CappedBackoff(psycopg_pool.pool.AttemptWithBackoff):
    """psycopg_pool's reconnection schedule, its waits capped (and the first one shorter), so
    the pool reconnects within ``DATABASE_RECONNECT_MAX_SECONDS`` of the server's return."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, settings.DATABASE_RECONNECT_MAX_SECONDS)


def cap_reconnect_backoff() -> None:
    """Make every pool of this process reconnect on the capped schedule (the pool module
    looks the class up by name each time it schedules an attempt)."""
    psycopg_pool.pool.AttemptWithBackoff = CappedBackoff  # type: ignore[misc]


cap_reconnect_backoff()
