"""The upstream pool: RELAY_UPSTREAM_POOL_SIZE connections in use at most, over all upstreams;
a call that waits RELAY_POOL_WAIT_SECONDS for a free one fails with httpx.PoolTimeout."""

import asyncio

import httpx
import pytest
from aiohttp import web

from relay import upstream


class Upstreams:
    """Two loopback upstreams: one sends its headers and then holds the body open until
    ``release``; the other answers at once."""

    def __init__(self):
        self.release = asyncio.Event()
        self.arrived = 0

    async def hang(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"data: {}\n\n")
        await self.release.wait()
        return response

    async def answer(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def __aenter__(self):
        self.runners = []
        self.urls = []
        for handler in (self.hang, self.answer):
            app = web.Application()
            app.router.add_post("/", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.runners.append(runner)
            self.urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}/")
        self.hanging_url, self.answering_url = self.urls
        return self

    async def __aexit__(self, *exc_info):
        self.release.set()
        for runner in self.runners:
            await runner.cleanup()


async def send(url: str, *, stream: bool = False) -> httpx.Response:
    return await upstream.client().send(upstream.request(url, {}, b"{}"), stream=stream)


def run(scenario) -> None:
    """In a loop of the test's own (the shared client is made per loop, from the settings of
    that moment), with a generous bound so a broken pool fails rather than hangs."""

    async def bounded():
        try:
            await asyncio.wait_for(scenario(), 10)
        finally:
            await upstream.close_clients()

    asyncio.run(bounded())


@pytest.fixture
def small_pool(settings):
    settings.RELAY_UPSTREAM_POOL_SIZE = 2
    settings.RELAY_POOL_WAIT_SECONDS = 0.5
    # Far beyond the test's bound: a pool wait reported as a connect timeout would hang here.
    settings.RELAY_CONNECT_TIMEOUT = 60


def test_a_call_that_finds_every_connection_busy_fails_with_pool_timeout(small_pool):
    async def scenario():
        async with Upstreams() as upstreams:
            held = [await send(upstreams.hanging_url, stream=True) for _ in range(2)]
            assert [response.status_code for response in held] == [200, 200]
            # Another upstream: the pool is shared by all of them.
            with pytest.raises(httpx.PoolTimeout):
                await send(upstreams.answering_url)
            for response in held:
                await response.aclose()
            # Closing the two gave their connections back.
            assert (await send(upstreams.answering_url)).json() == {"ok": True}

    run(scenario)


def test_calls_waiting_on_an_upstream_that_never_answers_hold_the_pool_until_cancelled(
    small_pool,
):
    async def scenario():
        async with Upstreams() as upstreams:
            waiting = [asyncio.create_task(send(upstreams.hanging_url)) for _ in range(2)]
            while upstreams.arrived < 2:
                await asyncio.sleep(0.01)
            with pytest.raises(httpx.PoolTimeout):
                await send(upstreams.answering_url)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            assert (await send(upstreams.answering_url)).status_code == 200

    run(scenario)


def test_calls_within_the_pool_size_do_not_wait(small_pool):
    async def scenario():
        async with Upstreams() as upstreams:
            held = await send(upstreams.hanging_url, stream=True)
            assert (await send(upstreams.answering_url)).status_code == 200
            await held.aclose()

    run(scenario)


def test_a_request_carries_the_relay_timeouts_through_the_send(settings):
    settings.RELAY_CONNECT_TIMEOUT = 7
    settings.RELAY_POOL_WAIT_SECONDS = 3
    settings.RELAY_READ_TIMEOUT = 90
    request = upstream.request("http://127.0.0.1:9/", {}, b"{}")
    expected = {"connect": 7, "read": 90, "write": 90, "pool": 3}
    assert request.extensions["timeout"] == expected

    async def scenario():
        with pytest.raises(httpx.TransportError) as failure:  # nothing listens on port 9
            await upstream.client().send(request)
        assert not isinstance(failure.value, httpx.PoolTimeout)

    run(scenario)
    # The transport's translation for aiohttp is for that send only.
    assert request.extensions["timeout"] == expected
