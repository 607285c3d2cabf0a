"""Many calls at once on PostgreSQL: limits hold, overdraw stays bounded, books balance."""

import asyncio
import threading

import httpx
import pytest
from django.conf import settings
from django.db import connection

from accounts.models import ApiKey, User
from accounts.services import create_api_key
from billing import services as billing
from billing.models import Hold, ModelPrice, UsageLog
from billing.operations import InsufficientQuota
from billing.reconcile import reconcile

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CALLS = 200
KEY_LIMIT = 1000  # quota units
MESSAGES = [{"role": "user", "content": "hi"}]


def connections_in_use() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


async def fire(url: str, key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *[
                client.post(
                    f"{url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "flat", "messages": MESSAGES, "max_tokens": 5},
                )
                for _ in range(count)
            ]
        )


def test_200_concurrent_calls_never_overdraw_a_small_key_limit_beyond_the_bound(
    relay_url, alice, openai_channel, mock_upstream, books_balance
):
    # A flat price: 1 quota per token. The mock bills 11 + 3 = 14 per call; the hold for
    # "hi" with max_tokens 5 is smaller, so every call overruns its hold a little.
    ModelPrice.objects.create(model="flat", model_ratio=1, completion_ratio=1)
    openai_channel.served_models.append("flat")
    openai_channel.save()
    api_key, key = create_api_key(user=alice, quota=KEY_LIMIT)
    mock_upstream.script(*[{"delay": 0.2}] * CALLS)

    peak = [0]
    done = threading.Event()

    def watch():
        try:
            while not done.wait(0.05):
                peak[0] = max(peak[0], connections_in_use())
        finally:
            connection.close()  # this thread's own connection

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        responses = asyncio.run(fire(relay_url, key, CALLS))
    finally:
        done.set()
        watcher.join()

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    succeeded = statuses.count(200)
    refused = [r.json()["error"] for r in responses if r.status_code == 429]
    assert all(e["code"] == "insufficient_quota" and "key" in e["message"] for e in refused)
    assert succeeded >= 1 and refused, "the limit must have been reached"

    logs = UsageLog.objects.filter(api_key=api_key)
    assert logs.count() == succeeded
    cost = 14
    assert {log.quota for log in logs} == {cost}
    api_key.refresh_from_db()
    hold_size = Hold.objects.filter(api_key=api_key).first().amount
    overrun = cost - hold_size
    assert 0 < overrun < cost
    # Every successful call had its hold covered when it was placed; only the overruns of the
    # calls in flight can take the key below zero.
    assert api_key.remaining_quota == KEY_LIMIT - succeeded * cost
    assert api_key.remaining_quota >= -succeeded * overrun
    assert succeeded * hold_size <= KEY_LIMIT + hold_size
    assert not Hold.objects.filter(status=Hold.Status.OPEN).exists()
    alice.refresh_from_db()
    assert alice.quota == 10_000_000 - succeeded * cost
    # The pool kept PostgreSQL's connections far below its limit (and the pool size).
    pool_max = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    assert peak[0] <= pool_max + 5, peak[0]  # + this test's own connections
    books_balance()


def test_concurrent_holds_on_one_balance_never_take_more_than_is_there(alice, alice_key):
    """Straight at the service, in threads: the conditional UPDATE decides who wins."""
    from concurrent.futures import ThreadPoolExecutor

    billing.grant(user=alice, amount=-(10_000_000 - 10_000))  # 10,000 left
    key_id = ApiKey.objects.find(alice_key).get().id

    def try_hold(_):
        try:
            billing.reserve_quota(
                user_id=alice.id, api_key_id=key_id, unlimited_key=True, amount=300
            )
            return True
        except InsufficientQuota:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        won = sum(pool.map(try_hold, range(100)))

    assert won == 10_000 // 300
    assert User.objects.get(id=alice.id).quota == 10_000 - won * 300
    assert reconcile() == []
