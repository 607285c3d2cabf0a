"""Reads from the async relay: in a worker thread, connection returned at once.

A call reads the database only when this process's copy of what it needs (a key's settings,
a price, the channel table: config.cache says what is kept and for how long) is stale, and
writes it only through the ledger writer (billing.writer). A read runs in a worker thread and
hands its connection back to the pool as soon as it is done, so a pool of a few connections
serves hundreds of calls in flight.
"""

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from config.cache import memo


def _run_and_release(function, args, kwargs):
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


async def run(function, /, *args, **kwargs):
    """``function(*args, **kwargs)`` in a thread, its database connection released after.

    Not thread-sensitive: each call is a self-contained burst (its transactions begin and end
    inside it), so any worker of the shared pool may run it. A thread-sensitive call would
    make Django start a fresh thread for every request.
    """
    return await sync_to_async(_run_and_release, thread_sensitive=False)(function, args, kwargs)


async def remembered(key, load, /, *args):
    """``load(*args)`` through this process's memo (config.cache.memo): no thread hop while the
    value is fresh."""
    found, value = memo.lookup(key)
    if not found:
        value = await run(load, *args)
        memo.put(key, value)
    return value
