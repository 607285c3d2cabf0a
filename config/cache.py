"""One cache client per process, for the relay's per-call lookups.

``django.core.cache.cache`` is context-local: under ASGI every request (and every
sync_to_async call from it) gets a fresh backend, which for Redis means a fresh connection
pool and a new TCP connection per call. The hot path reads through this process-wide instance
instead; writes and invalidations may use either, since both reach the same store.
"""

from functools import cache

from django.core.cache import caches


@cache
def shared_cache():
    return caches.create_connection("default")
