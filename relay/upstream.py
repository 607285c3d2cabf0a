"""The shared HTTP client for upstream calls: one per event loop, aiohttp underneath.

httpx keeps the API readable; its aiohttp transport roughly doubles relay throughput over
httpx's own (measured: see DESIGN.md, "Speed"). Clients are made lazily because the event
loop exists only once the server runs, one per loop because a client is bound to the loop that
made it, and closed by ``close_clients`` from the ASGI lifespan shutdown (config.asgi).

The client keeps no cookies: it is shared by every user's calls, so a cookie one upstream
answer sets must not ride along on the next user's call. (Skipping httpx's cookie jar, which
works through urllib's request shims, is also a quarter of its cost per call here.) Callers
build their ``httpx.Request`` themselves (``request``), which skips merging the client's empty
defaults into every call.

Each client holds at most RELAY_UPSTREAM_POOL_SIZE connections in use, over all upstreams. A
call that finds them all busy waits RELAY_POOL_WAIT_SECONDS for one, then fails with
``httpx.PoolTimeout``: when upstreams slow down, calls are refused quickly rather than queued
behind the pool until their read timeout.
"""

import asyncio
import contextvars

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
# The pool wait of the request being sent (httpx's "pool" timeout), for the connector below.
_pool_wait: contextvars.ContextVar[float | None] = contextvars.ContextVar("pool_wait", default=None)


class PoolFull(Exception):
    """No connection came free within the request's pool wait (raised inside aiohttp)."""


class PoolConnector(aiohttp.TCPConnector):
    """aiohttp's connector with the wait for a free connection bounded on its own.

    aiohttp has one timeout (``connect``) for waiting for a slot and connecting together, and
    raises the same error for both, so the wait is bounded where it happens: in the private
    ``_wait_for_available_connection`` (aiohttp is pinned in requirements.txt, and
    tests/test_upstream_pool.py fails if the method stops being called). ``PoolFull`` is not a
    TimeoutError, so aiohttp lets it through unchanged.
    """

    async def _wait_for_available_connection(self, key, traces) -> None:
        try:
            async with asyncio.timeout(_pool_wait.get()):
                await super()._wait_for_available_connection(key, traces)
        except TimeoutError:
            raise PoolFull from None


class PoolTransport(AiohttpTransport):
    """httpx_aiohttp's transport with a sized pool and httpx's timeouts kept apart.

    The stock transport passes httpx's ``pool`` timeout as aiohttp's ``connect``, which spans
    the wait for a slot and the connect, and reports either as ``ConnectTimeout``. Here
    ``connect`` bounds the TCP (and TLS) connect alone (aiohttp's ``sock_connect``), ``pool``
    the wait for a slot (``PoolConnector``, reported as ``httpx.PoolTimeout``), and aiohttp's
    own ``connect`` gets their sum, a backstop that also covers name resolution.
    """

    def __init__(self, *, pool_size: int):
        self.pool_size = pool_size
        super().__init__(limits=httpx.Limits(max_connections=pool_size))

    def get_client(self) -> aiohttp.ClientSession:
        connector = PoolConnector(
            limit=self.pool_size,
            limit_per_host=0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(connector=connector)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        extensions = request.extensions
        timeout = extensions.get("timeout", {})
        pool, connect = timeout.get("pool"), timeout.get("connect")
        # The stock transport hands "pool" to aiohttp's connect timeout: give it the backstop
        # for this send only (the request keeps its own timeouts).
        backstop = None if pool is None or connect is None else pool + connect
        request.extensions = {**extensions, "timeout": {**timeout, "pool": backstop}}
        waiting = _pool_wait.set(pool)
        try:
            return await super().handle_async_request(request)
        except PoolFull:
            raise httpx.PoolTimeout(
                f"no upstream connection came free within {pool} s", request=request
            ) from None
        finally:
            _pool_wait.reset(waiting)
            request.extensions = extensions


class NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing and sends nothing."""

    def extract_cookies(self, response) -> None:
        pass

    def set_cookie_header(self, request) -> None:
        pass


def client() -> httpx.AsyncClient:
    """The shared client of the running event loop."""
    loop = asyncio.get_running_loop()
    shared = _clients.get(loop)
    if shared is None or shared.is_closed:
        shared = httpx.AsyncClient(
            transport=PoolTransport(pool_size=settings.RELAY_UPSTREAM_POOL_SIZE),
            timeout=_timeouts(),
            # Upstream redirects are not followed: a relay must not be steered elsewhere.
            follow_redirects=False,
        )
        shared._cookies = NoCookies()  # httpx's setter would copy it into a real jar
        _clients[loop] = shared
    return shared


async def close_clients() -> None:
    """Close the clients of the running loop (others are closed by their own loops)."""
    loop = asyncio.get_running_loop()
    shared = _clients.pop(loop, None)
    if shared is not None:
        await shared.aclose()


def request(url: str, headers: dict[str, str], body: bytes) -> httpx.Request:
    """A POST of a JSON body, ready for ``client().send``, with the relay's timeouts."""
    return httpx.Request(
        "POST",
        url,
        headers={**headers, "content-type": "application/json"},
        content=body,
        extensions={"timeout": _timeouts().as_dict()},
    )


def _timeouts() -> httpx.Timeout:
    return httpx.Timeout(
        settings.RELAY_READ_TIMEOUT,
        connect=settings.RELAY_CONNECT_TIMEOUT,
        pool=settings.RELAY_POOL_WAIT_SECONDS,
    )
