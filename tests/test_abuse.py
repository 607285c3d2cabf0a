"""Nothing a client does holds upstream connections or grows memory without bound."""

import asyncio
import contextlib

import httpx
import pytest

from accounts.services import create_api_key
from billing.models import Hold
from billing.pricing import price_cache_key
from config.cache import memo, shared_cache
from tests.conftest import eventually

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]


def test_a_stream_client_that_leaves_before_the_first_upstream_byte_cancels_the_upstream_call(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    mock_upstream.script(*[{"hang_after_headers": True}] * 5)

    async def leave_early():
        async with httpx.AsyncClient(timeout=30) as client:
            for sent in range(1, 6):
                calling = asyncio.create_task(
                    client.post(
                        f"{relay_url}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {alice_key}"},
                        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
                    )
                )
                # Leave once the upstream has the request and has not answered a byte.
                for _ in range(1000):
                    if len(mock_upstream.requests) >= sent:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                assert not calling.done()
                calling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await calling

    asyncio.run(leave_early())

    # Every upstream request was closed by the relay, and every hold given back.
    assert len(mock_upstream.wait_for_cancelled(5, timeout=10)) == 5
    assert eventually(lambda: mock_upstream.open_requests == 0)
    assert eventually(
        lambda: Hold.objects.filter(status=Hold.Status.RELEASED).count() == 5, timeout=10
    )
    books_balance()


def test_calls_in_flight_per_key_are_capped_when_the_operator_asks(
    relay_url, alice, openai_channel, mock_upstream, settings, books_balance
):
    settings.RELAY_MAX_CALLS_PER_KEY = 2
    _, key = create_api_key(user=alice)
    mock_upstream.script(*[{"delay": 1}] * 2)

    async def three_at_once():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *[
                    client.post(
                        f"{relay_url}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "gpt-4o", "messages": HELLO, "max_tokens": 5},
                    )
                    for _ in range(3)
                ]
            )

    statuses = sorted(response.status_code for response in asyncio.run(three_at_once()))

    assert statuses == [200, 200, 429]
    books_balance()


def test_calls_in_flight_per_process_are_capped(
    relay_url, alice, alice_key, openai_channel, mock_upstream, settings
):
    settings.RELAY_MAX_CALLS_IN_FLIGHT = 0

    response = httpx.post(
        f"{relay_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "gpt-4o", "messages": HELLO},
        timeout=30,
    )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_busy"
    assert mock_upstream.requests == []


def test_unknown_model_names_are_not_remembered_and_long_ones_are_refused(
    relay_url, alice, alice_key, openai_channel, mock_upstream
):
    memo.clear()
    for index in range(50):
        response = httpx.post(
            f"{relay_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {alice_key}"},
            json={"model": f"no-such-model-{index}", "messages": HELLO},
            timeout=30,
        )
        assert response.status_code == 404
    assert not any(memo.lookup(("price", f"no-such-model-{i}"))[0] for i in range(50))
    # Nor in the cache every process shares.
    assert not any(
        shared_cache().get(price_cache_key(f"no-such-model-{i}")) is not None for i in range(50)
    )

    response = httpx.post(
        f"{relay_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "m" * 100_000, "messages": HELLO},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
