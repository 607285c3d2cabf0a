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
"""

import asyncio

import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


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
            transport=AiohttpTransport(),
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
    return httpx.Timeout(settings.RELAY_READ_TIMEOUT, connect=settings.RELAY_CONNECT_TIMEOUT)
