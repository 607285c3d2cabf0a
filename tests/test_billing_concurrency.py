"""Every kind of movement on one user at once, on PostgreSQL: calls on her own key and on her
sub-keys, redemptions (each code raced twice), carving, top-ups and revocation of sub-keys, and
refunds of her earlier calls, all racing; afterwards ``reconcile`` is clean and each movement
happened exactly as often as it should."""

import asyncio
import threading

import httpx
import pytest
from django.db import connection

from accounts.services import create_api_key
from billing import services, subkeys
from billing.models import Hold, LedgerEntry, UsageLog
from billing.reconcile import reconcile
from billing.redemption import RedemptionRefused, make_batch, redeem_code
from tests.conftest import ALICE_CREDIT, eventually

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROMPT = [{"role": "user", "content": "Say hello to everyone in the room, please"}]
CODES = 10
CODE_QUOTA = 100_000


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


def no_open_holds() -> bool:
    return not Hold.objects.filter(status=Hold.Status.OPEN).exists()


def in_thread(work, errors: list[Exception]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    return threading.Thread(target=run)


def test_calls_redemptions_sub_key_moves_and_refunds_racing_on_one_user_keep_the_books(
    relay_url, carol, openai_channel, books_balance
):
    own_key, own_clear = create_api_key(user=carol, name="her own")
    sub_keys = [create_api_key(user=carol, name=f"customer {i}") for i in range(3)]
    for key, _ in sub_keys[:2]:
        subkeys.carve_key(api_key=key, amount=50_000)
    # Calls already billed, to be refunded while the rest races.
    earlier = asyncio.run(fire(relay_url, own_clear, 10))
    assert {r.status_code for r in earlier} == {200}
    assert eventually(lambda: UsageLog.objects.filter(api_key=own_key).count() == 10)
    to_refund = list(UsageLog.objects.filter(api_key=own_key).values_list("id", flat=True))
    _, codes = make_batch(name="race", quota=CODE_QUOTA, count=CODES)

    errors: list[Exception] = []
    redeemed: list[str] = []
    refunded: list[int] = []

    def redeem(code: str) -> None:
        try:
            redeem_code(user=carol, code=code, ip=None)
            redeemed.append(code)
        except RedemptionRefused as refused:
            assert refused.reason == "used"

    def refund(usage_id: int) -> None:
        services.refund_call(usage=UsageLog.objects.get(id=usage_id), reason="race")
        refunded.append(usage_id)

    def move_money() -> None:
        first, second, third = (key for key, _ in sub_keys)
        for _ in range(10):
            subkeys.top_up_key(api_key=first, amount=1_000)
        subkeys.revoke_key(api_key=second)
        # The third is carved while calls on it (a plain key until then) are in flight: that
        # is refused while one holds from her balance (billing.subkeys).
        try:
            subkeys.carve_key(api_key=third, amount=20_000)
        except subkeys.SubkeyRefused as refused:
            assert refused.reason == "used"
        else:
            subkeys.top_up_key(api_key=third, amount=5_000)

    threads = [in_thread(lambda code=code: redeem(code), errors) for code in codes * 2]
    threads += [in_thread(lambda i=i: refund(i), errors) for i in to_refund]
    threads.append(in_thread(move_money, errors))

    async def calls() -> list[list[httpx.Response]]:
        return await asyncio.gather(
            fire(relay_url, own_clear, 40), *[fire(relay_url, clear, 20) for _, clear in sub_keys]
        )

    for thread in threads:
        thread.start()
    responses = asyncio.run(calls())
    for thread in threads:
        thread.join()

    assert errors == []
    assert {r.status_code for batch in responses for r in batch} <= {200, 401, 403, 429}
    assert all(r.status_code == 200 for r in responses[0])  # her own key had money throughout
    assert eventually(no_open_holds)
    subkeys.return_subkey_balances()  # what calls in flight left in the revoked key

    # Each code credited once, each earlier call refunded once.
    assert sorted(redeemed) == sorted(codes)
    redemptions = LedgerEntry.objects.filter(user=carol, kind=LedgerEntry.Kind.REDEMPTION)
    assert sum(redemptions.values_list("amount", flat=True)) == CODES * CODE_QUOTA
    assert sorted(refunded) == sorted(to_refund)
    refunds = LedgerEntry.objects.filter(user=carol, kind=LedgerEntry.Kind.REFUND)
    assert refunds.count() == len(to_refund)
    own_calls = UsageLog.objects.filter(user=carol, carved=False)
    assert sum(refunds.values_list("amount", flat=True)) == sum(
        own_calls.filter(id__in=to_refund).values_list("quota", flat=True)
    )
    # Her balance written out: credit, codes, refunds, less her own calls, less what sits in
    # the live sub-keys or was spent by them.
    carol.refresh_from_db()
    moved = LedgerEntry.objects.filter(
        user=carol, kind__in=[LedgerEntry.Kind.TO_SUBKEY, LedgerEntry.Kind.FROM_SUBKEY]
    )
    parts = {
        "credit": ALICE_CREDIT,
        "codes": CODES * CODE_QUOTA,
        "refunds": sum(refunds.values_list("amount", flat=True)),
        "own calls": -sum(own_calls.values_list("quota", flat=True)),
        "sub-keys": sum(moved.values_list("amount", flat=True)),
    }
    assert carol.quota == sum(parts.values()), (carol.quota, parts, reconcile())
    assert carol.quota > 0
    books_balance()
