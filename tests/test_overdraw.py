"""200 hostile calls at once on PostgreSQL against 1,000 quota: the balance stays at or above
zero, the books balance and no hold is left open.

Each call is one of the attacks that once overdrew a user by millions: many choices (``n``),
conflicting output limits, a hundred images in a stream cut before its usage, no limit at all,
and negative usage from the upstream. The prompt counts more tokens locally than the mock
reports, so the documented input-count gap is zero here and any overdraw is a hole.
"""

import asyncio

import httpx
import pytest

from accounts.models import ApiKey
from accounts.services import create_api_key
from billing import services as billing
from billing.models import Hold
from tests.conftest import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CALLS = 200
CREDIT = 1000  # quota units
PROMPT = [
    {"role": "user", "content": "Say hello to everyone in the room, please, and politely too"}
]
IMAGES = [{"type": "text", "text": "What is this?"}] + [
    {"type": "image_url", "image_url": {"url": "https://images.example/x.png"}}
] * 100

ATTACKS = [
    ({"messages": PROMPT, "n": 128}, {"chunks": 50}),
    ({"messages": PROMPT, "max_tokens": 32000, "max_completion_tokens": 1}, {"chunks": 50}),
    ({"messages": PROMPT}, {"chunks": 400}),
    ({"messages": [{"role": "user", "content": IMAGES}], "stream": True}, {"cut_after": 1}),
    ({"messages": PROMPT, "max_tokens": 5}, {"usage": {"completion_tokens": -100000}}),
]


async def fire(url: str, key: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CALLS, max_keepalive_connections=CALLS)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *[
                client.post(
                    f"{url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "gpt-4o", **ATTACKS[i % len(ATTACKS)][0]},
                )
                for i in range(CALLS)
            ]
        )


def attack(relay_url, mock_upstream, key):
    # The mock takes behaviours in arrival order; every attack's own is among them often enough
    # that each kind of call meets a hostile answer.
    mock_upstream.script(*[ATTACKS[i % len(ATTACKS)][1] for i in range(CALLS)])
    responses = asyncio.run(fire(relay_url, key))
    assert {r.status_code for r in responses} <= {200, 429}
    assert any(r.status_code == 200 for r in responses)
    assert eventually(lambda: not Hold.objects.filter(status=Hold.Status.OPEN).exists())


def test_a_small_balance_is_never_overdrawn_by_200_hostile_calls(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    billing.grant(user=alice, amount=CREDIT - alice.quota, note="a small balance")

    attack(relay_url, mock_upstream, alice_key)

    alice.refresh_from_db()
    assert 0 <= alice.quota < CREDIT
    books_balance()


def test_a_small_key_allowance_is_never_overdrawn_by_200_hostile_calls(
    relay_url, alice, openai_channel, mock_upstream, books_balance
):
    api_key, key = create_api_key(user=alice, quota=CREDIT)

    attack(relay_url, mock_upstream, key)

    remaining = ApiKey.objects.get(id=api_key.id).remaining_quota
    assert 0 <= remaining < CREDIT
    books_balance()
