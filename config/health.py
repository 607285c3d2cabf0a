"""``/healthz`` and ``/readyz``, for load balancers and orchestrators: no key, no Django request.

``/healthz`` says the process is up and its event loop answers: it touches nothing else, so a
database outage does not get every node restarted. ``/readyz`` says the node can serve calls:
the database answers a query (otherwise 503, ``"status": "unavailable"``), and every
configured cache takes a write. A cache that fails leaves it 200 with ``"status":
"degraded"``: calls go on without Redis (config.cache serves from each process's copies and
the database), and a balancer that took every node out because Redis restarted would turn a
slower minute into an outage. Either way the check that failed is named (its error goes to
the log, not to an unauthenticated caller).

Both are answered by config.asgi before Django's handler (no middleware, no ALLOWED_HOSTS, so a
balancer may probe by IP) and are not logged when healthy. A failing check is logged at
WARNING once when it starts failing and once when it recovers, not at every probe. Each check
runs in a worker thread with a deadline; a probe arriving while the previous one of the same
check is still stuck waits on that one, so a dependency that hangs cannot pile up threads.
"""

import asyncio
import json
import logging
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

PATHS = frozenset({"/healthz", "/readyz"})
CHECK_SECONDS = 2.0  # longer than this is a failure: a balancer's own timeout is near
READY_CACHE_KEY = "sluice:readyz"

# The probe of each check in progress, so a hanging dependency holds one thread, not many.
_running: dict[str, asyncio.Future] = {}
_failing: set[str] = set()


def _database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        close_old_connections()  # hand the connection back (to the pool, on PostgreSQL)


def _cache(alias: str) -> Callable[[], None]:
    def probe() -> None:
        caches[alias].set(READY_CACHE_KEY, 1, timeout=10)

    return probe


def checks() -> dict[str, Callable[[], None]]:
    """Each dependency a node needs to serve calls, by the name /readyz reports it under."""
    found = {"database": _database}
    for alias in settings.CACHES:
        found["cache" if alias == "default" else f"cache.{alias}"] = _cache(alias)
    return found


async def _passes(name: str, probe: Callable[[], None]) -> bool:
    loop = asyncio.get_running_loop()
    running = _running.get(name)
    if running is None or running.done() or running.get_loop() is not loop:
        running = asyncio.ensure_future(sync_to_async(probe, thread_sensitive=False)())
        _running[name] = running
    try:
        await asyncio.wait_for(asyncio.shield(running), CHECK_SECONDS)
    except TimeoutError:
        problem = f"no answer within {CHECK_SECONDS:g} s"
    except Exception as error:  # noqa: BLE001 - any failure of the dependency is the answer
        problem = f"{type(error).__name__}: {error}"
    else:
        if name in _failing:
            _failing.discard(name)
            logger.warning("readyz: %s answers again", name)
        return True
    if name not in _failing:
        _failing.add(name)
        logger.warning("readyz: %s failed (%s)", name, problem)
    return False


async def readiness() -> dict[str, str]:
    """``{name: "ok" | "failed"}`` for every check, run side by side."""
    found = checks()
    results = await asyncio.gather(*(_passes(name, probe) for name, probe in found.items()))
    return {name: "ok" if passed else "failed" for name, passed in zip(found, results, strict=True)}


async def serve(scope, receive, send) -> None:
    """Answer a GET (or HEAD) of /healthz or /readyz."""
    if scope["method"] not in ("GET", "HEAD"):
        await _answer(send, 405, {"status": "method not allowed"}, allow="GET, HEAD")
    elif scope["path"] == "/healthz":
        await _answer(send, 200, {"status": "ok"})
    else:
        results = await readiness()
        ready = results.get("database") == "ok"
        whole = all(result == "ok" for result in results.values())
        status = "ok" if whole else "degraded" if ready else "unavailable"
        await _answer(send, 200 if ready else 503, {"status": status, "checks": results})


async def _answer(send, status: int, data: dict, allow: str | None = None) -> None:
    body = json.dumps(data).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
