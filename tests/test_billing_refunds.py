"""Refunds: an operator gives a settled call's charge back to whoever paid it, once, with a
``refund`` ledger row naming the call, the reason and the operator; the books stay balanced."""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from accounts.models import User
from accounts.services import create_api_key
from billing import services, subkeys
from billing.models import LedgerEntry, UsageLog
from billing.operations import CallRecord
from billing.pricing import TokenUsage, price_for
from tests.conftest import ALICE_CREDIT

pytestmark = pytest.mark.django_db


def a_settled_call(user, key) -> UsageLog:
    """One gpt-4o call of 1,000 input tokens, held and settled as the relay does it."""
    hold = services.reserve_quota(
        user_id=user.id, api_key_id=key.id, unlimited_key=key.unlimited_quota, amount=50_000
    )
    usage = services.settle_hold(
        hold=hold,
        price=price_for("gpt-4o"),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=1_000),
        call=CallRecord(endpoint="chat", model="gpt-4o"),
    )
    assert usage is not None and usage.quota > 0
    return usage


def test_a_refund_gives_the_charge_back_once_with_the_reason_and_operator(
    alice, ops, books_balance
):
    key, _ = create_api_key(user=alice, name="laptop")
    call = a_settled_call(alice, key)
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - call.quota

    entry = services.refund_call(usage=call, reason="upstream answered garbage", by=ops)

    alice.refresh_from_db()
    assert (alice.quota, alice.used_quota) == (ALICE_CREDIT, 0)
    assert (entry.kind, entry.amount, entry.created_by) == (
        LedgerEntry.Kind.REFUND,
        call.quota,
        ops,
    )
    assert entry.note == f"call {call.id} (gpt-4o): upstream answered garbage"
    assert UsageLog.objects.get(id=call.id).refunded_at is not None
    with pytest.raises(services.RefundRefused) as refused:
        services.refund_call(usage=call, reason="again", by=ops)
    assert refused.value.reason == "refunded"
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT
    books_balance()


def test_a_limited_keys_allowance_comes_back_with_the_balance(alice, books_balance):
    key, _ = create_api_key(user=alice, name="limited", quota=100_000)
    call = a_settled_call(alice, key)
    key.refresh_from_db()
    assert key.remaining_quota == 100_000 - call.quota

    services.refund_call(usage=call, reason="test")

    key.refresh_from_db()
    alice.refresh_from_db()
    assert (key.remaining_quota, key.used_quota, alice.quota) == (100_000, 0, ALICE_CREDIT)
    books_balance()


def test_a_sub_keys_call_is_refunded_to_the_key_never_the_reseller(carol, books_balance):
    key, _ = create_api_key(user=carol, name="customer")
    subkeys.carve_key(api_key=key, amount=200_000)
    carol.refresh_from_db()
    reseller_before = (carol.quota, carol.used_quota)
    call = a_settled_call(carol, key)
    assert call.carved

    entry = services.refund_call(usage=call, reason="customer complaint")

    key.refresh_from_db()
    carol.refresh_from_db()
    assert key.remaining_quota == 200_000
    assert (carol.quota, carol.used_quota) == reseller_before
    assert (entry.amount, entry.key_amount) == (0, call.quota)
    books_balance()


def test_a_refund_into_a_revoked_sub_key_goes_back_to_the_reseller_by_the_sweep(
    carol, books_balance
):
    key, _ = create_api_key(user=carol, name="customer")
    subkeys.carve_key(api_key=key, amount=200_000)
    call = a_settled_call(carol, key)
    subkeys.revoke_key(api_key=key)
    carol.refresh_from_db()
    after_revoking = carol.quota

    services.refund_call(usage=call, reason="late complaint")
    assert subkeys.return_subkey_balances() == 1

    carol.refresh_from_db()
    key.refresh_from_db()
    assert (carol.quota, key.remaining_quota) == (after_revoking + call.quota, 0)
    books_balance()


def test_a_refund_needs_a_reason_and_a_charge(alice, books_balance):
    key, _ = create_api_key(user=alice, name="laptop")
    call = a_settled_call(alice, key)
    with pytest.raises(services.RefundRefused) as refused:
        services.refund_call(usage=call, reason="  ")
    assert refused.value.reason == "no_reason"
    free = UsageLog.objects.create(user=alice, api_key=key, endpoint="chat", model="x", quota=0)
    with pytest.raises(services.RefundRefused) as refused:
        services.refund_call(usage=free, reason="why not")
    assert refused.value.reason == "free"
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND).exists()
    books_balance()


def test_admin_asks_for_a_reason_then_refunds_the_selected_calls(client, ops, alice, books_balance):
    key, _ = create_api_key(user=alice, name="laptop")
    calls = [a_settled_call(alice, key) for _ in range(2)]
    client.force_login(ops)
    selected = {"action": "refund_calls", "_selected_action": [call.id for call in calls]}

    asked = client.post("/admin/billing/usagelog/", selected)
    assert asked.status_code == 200 and b'name="reason"' in asked.content
    without = client.post("/admin/billing/usagelog/", {**selected, "apply": "1", "reason": ""})
    assert b"Say why" in without.content
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND).exists()

    done = client.post(
        "/admin/billing/usagelog/", {**selected, "apply": "1", "reason": "outage credit"}
    )
    assert done.status_code == 302
    refunds = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND)
    assert refunds.count() == 2 and {entry.created_by for entry in refunds} == {ops}
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT
    books_balance()


def test_staff_without_the_permission_are_not_offered_refunds(client, alice):
    clerk = User.objects.create_user(username="clerk", password="x", is_staff=True)
    clerk.user_permissions.add(*_permissions("view_usagelog"))
    key, _ = create_api_key(user=alice, name="laptop")
    call = a_settled_call(alice, key)
    client.force_login(clerk)
    page = client.get("/admin/billing/usagelog/")
    assert page.status_code == 200 and b"refund_calls" not in page.content
    client.post(
        "/admin/billing/usagelog/",
        {"action": "refund_calls", "_selected_action": [call.id], "apply": "1", "reason": "x"},
    )
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND).exists()


def _permissions(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="billing", codename__in=codenames)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_refunds_of_one_call_give_it_back_once(alice, books_balance):
    key, _ = create_api_key(user=alice, name="laptop")
    call = a_settled_call(alice, key)
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def refund() -> None:
        try:
            start.wait()
            services.refund_call(usage=UsageLog.objects.get(id=call.id), reason="race")
            outcomes.append("done")
        except services.RefundRefused as refused:
            outcomes.append(refused.reason)
        finally:
            connection.close()

    threads = [threading.Thread(target=refund) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["done"] + ["refunded"] * 19  # refused: refunded already
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND).count() == 1
    books_balance()
