"""The shared HTTP client for upstream calls: one per event loop, aiohttp underneath.

httpx keeps the API readable; its aiohttp transport roughly doubles relay throughput over
httpx's own (measured: see DESIGN.md, "Speed"). Clients are made lazily because the event
loop exists only once the server runs, one per loop because a client is bound to the loop that
made it, and closed by ``close_clients`` from the ASGI lifespan shutdown (config.asgi).
"""

import asyncio

import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def client() -> httpx.AsyncClient:
    """The shared client of the running event loop."""
    loop = asyncio.get_running_loop()
    shared = _clients.get(loop)
    if shared is None or shared.is_closed:
        shared = httpx.AsyncClient(
            transport=AiohttpTransport(),
            timeout=httpx.Timeout(
                settings.RELAY_READ_TIMEOUT, connect=settings.RELAY_CONNECT_TIMEOUT
            ),
            # Upstream redirects are not followed: a relay must not be steered elsewhere.
            follow_redirects=False,
        )
        _clients[loop] = shared
    return shared


async def close_clients() -> None:
    """Close the clients of the running loop (others are closed by their own loops)."""
    loop = asyncio.get_running_loop()
    shared = _clients.pop(loop, None)
    if shared is not None:
        await shared.aclose()
