"""Carved sub-keys under concurrency, on PostgreSQL: many calls on a key with a small balance
never overdraw it beyond what is in flight and never touch the reseller's balance; top-ups,
revocations and calls racing each other keep the books balanced."""

import asyncio
import threading

import httpx
import pytest
from django.db import connection

from accounts.models import ApiKey
from accounts.services import create_api_key
from billing import subkeys
from billing.models import Hold, LedgerEntry, UsageLog
from tests.conftest import ALICE_CREDIT, eventually

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CALLS = 200
SMALL = 2_000  # quota units: a few calls' worth
PROMPT = [{"role": "user", "content": "Say hello to everyone in the room, please"}]


async def fire(url: str, key: str, calls: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *[
                client.post(
                    f"{url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "gpt-4o", "messages": PROMPT, "max_tokens": 50},
                )
                for _ in range(calls)
            ]
        )


def no_open_holds():
    return not Hold.objects.filter(status=Hold.Status.OPEN).exists()


def test_200_calls_never_overdraw_a_small_carved_key_nor_touch_the_reseller(
    relay_url, carol, openai_channel, books_balance
):
    key, clear = create_api_key(user=carol, name="customer")
    subkeys.carve_key(api_key=key, amount=SMALL)
    carol.refresh_from_db()
    reseller_before = (carol.quota, carol.used_quota)

    responses = asyncio.run(fire(relay_url, clear, CALLS))

    assert {r.status_code for r in responses} <= {200, 429}
    served = sum(r.status_code == 200 for r in responses)
    assert 0 < served < CALLS  # the key ran out, and said so
    assert eventually(no_open_holds)
    key.refresh_from_db()
    carol.refresh_from_db()
    charged = sum(UsageLog.objects.filter(api_key=key).values_list("quota", flat=True))
    # Every hold was covered by the key when placed and the mock reports no more input than
    # counted locally, so the key never goes below zero.
    assert 0 <= key.remaining_quota == SMALL - charged
    assert (carol.quota, carol.used_quota) == reseller_before
    assert UsageLog.objects.filter(api_key=key, carved=False).count() == 0
    books_balance()


def test_top_ups_revocations_and_calls_racing_keep_the_books(
    relay_url, carol, openai_channel, books_balance
):
    made = [create_api_key(user=carol, name=f"customer {i}") for i in range(4)]
    for key, _ in made:
        subkeys.carve_key(api_key=key, amount=SMALL)
    errors: list[Exception] = []

    def topping_up(key: ApiKey) -> None:
        try:
            for _ in range(20):
                try:
                    subkeys.top_up_key(api_key=key, amount=100)
                except subkeys.SubkeyRefused:
                    pass  # revoked meanwhile
        except Exception as error:  # noqa: BLE001 - reported by the main thread, below
            errors.append(error)
        finally:
            connection.close()

    def revoking(key: ApiKey) -> None:
        try:
            subkeys.revoke_key(api_key=key)
            subkeys.revoke_key(api_key=key)
        except Exception as error:  # noqa: BLE001 - reported by the main thread, below
            errors.append(error)
        finally:
            connection.close()

    async def calls() -> None:
        await asyncio.gather(*[fire(relay_url, clear, 25) for _, clear in made])

    threads = [threading.Thread(target=topping_up, args=(key,)) for key, _ in made]
    threads += [threading.Thread(target=revoking, args=(key,)) for key, _ in made[:2]]
    for thread in threads:
        thread.start()
    asyncio.run(calls())
    for thread in threads:
        thread.join()

    assert errors == []
    assert eventually(no_open_holds)
    subkeys.return_subkey_balances()  # what late settlements left in revoked keys
    for key, _ in made[:2]:
        key.refresh_from_db()
        assert key.revoked_at and key.remaining_quota == 0
    # The reseller's balance is exactly what she had less what stayed in the live keys: her
    # own equation, written out.
    carol.refresh_from_db()
    moved = LedgerEntry.objects.filter(user=carol, api_key__isnull=False)
    assert carol.quota == ALICE_CREDIT + sum(moved.values_list("amount", flat=True))
    live = ApiKey.objects.filter(id__in=[key.id for key, _ in made[2:]])
    spent = sum(UsageLog.objects.filter(user=carol).values_list("quota", flat=True))
    assert carol.quota + sum(live.values_list("remaining_quota", flat=True)) + spent == (
        ALICE_CREDIT
    )
    books_balance()
