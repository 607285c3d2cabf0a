"""Carved sub-keys: a reseller's money moved into a key, spent by that key's calls alone, and
returned when the key is revoked or expires (billing.subkeys)."""

from datetime import timedelta

import openai
import pytest
from django.utils import timezone

from accounts.models import ApiKey, CarvedKeyProtected
from accounts.services import create_api_key
from billing import services as billing
from billing import subkeys
from billing.models import LedgerEntry, UsageLog
from tests.conftest import ALICE_CREDIT, settled_usage

DOLLAR = 500_000


def carved(user, amount, **settings):
    key, clear = create_api_key(user=user, name="customer", **settings)
    subkeys.carve_key(api_key=key, amount=amount)
    key.refresh_from_db()
    return key, clear


def test_carving_moves_the_amount_from_the_reseller_into_the_key(carol, books_balance):
    key, _ = carved(carol, 3 * DOLLAR)

    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT - 3 * DOLLAR
    assert key.carved and not key.unlimited_quota and key.remaining_quota == 3 * DOLLAR
    rows = LedgerEntry.objects.filter(api_key=key, kind=LedgerEntry.Kind.TO_SUBKEY)
    assert sorted((r.amount, r.key_amount) for r in rows) == [(-3 * DOLLAR, 0), (0, 3 * DOLLAR)]
    books_balance()


def test_a_user_who_is_not_a_reseller_cannot_carve(alice, books_balance):
    key, _ = create_api_key(user=alice)
    with pytest.raises(subkeys.SubkeyRefused) as refused:
        subkeys.carve_key(api_key=key, amount=DOLLAR)
    assert refused.value.reason == "not_reseller"
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT
    books_balance()


def test_carving_more_than_the_balance_is_refused_and_moves_nothing(carol, books_balance):
    key, _ = create_api_key(user=carol)
    with pytest.raises(subkeys.SubkeyRefused) as refused:
        subkeys.carve_key(api_key=key, amount=ALICE_CREDIT + 1)
    assert refused.value.reason == "insufficient_balance"
    key.refresh_from_db()
    assert not key.carved and key.remaining_quota == 0
    books_balance()


@pytest.mark.parametrize("amount", [0, -5])
def test_an_amount_must_be_above_zero(carol, amount):
    key, _ = create_api_key(user=carol)
    with pytest.raises(subkeys.SubkeyRefused, match="above zero"):
        subkeys.carve_key(api_key=key, amount=amount)


def test_a_limited_key_carved_starts_from_the_carved_amount(carol, books_balance):
    key, _ = carved(carol, DOLLAR, quota=7 * DOLLAR)

    assert key.remaining_quota == DOLLAR
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT - DOLLAR
    books_balance()


def test_a_key_with_a_call_in_flight_is_not_carved(carol, books_balance):
    """Its hold took from the reseller's balance: settled as a carved key's, the key would pay
    and the hold would never go back to her (found by tests/test_billing_concurrency.py)."""
    key, _ = create_api_key(user=carol, name="customer")
    hold = billing.reserve_quota(
        user_id=carol.id, api_key_id=key.id, unlimited_key=True, amount=10_000
    )
    with pytest.raises(subkeys.SubkeyRefused) as refused:
        subkeys.carve_key(api_key=key, amount=DOLLAR)
    assert refused.value.reason == "used"

    assert billing.release_hold(hold_id=hold.id)
    subkeys.carve_key(api_key=key, amount=DOLLAR)  # nothing in flight any more
    key.refresh_from_db()
    assert key.carved and key.remaining_quota == DOLLAR
    books_balance()


def test_topping_up_moves_more_and_revoking_returns_the_rest_once(carol, books_balance):
    key, _ = carved(carol, DOLLAR)
    subkeys.top_up_key(api_key=key, amount=2 * DOLLAR)
    assert key.remaining_quota == 3 * DOLLAR

    assert subkeys.revoke_key(api_key=key) == 3 * DOLLAR
    assert subkeys.revoke_key(api_key=key) == 0  # again: nothing more to give back

    key.refresh_from_db()
    carol.refresh_from_db()
    assert key.remaining_quota == 0 and key.status == ApiKey.Status.DISABLED and key.revoked_at
    assert carol.quota == ALICE_CREDIT
    with pytest.raises(subkeys.SubkeyRefused) as refused:
        subkeys.top_up_key(api_key=key, amount=DOLLAR)
    assert refused.value.reason == "revoked"
    books_balance()


def test_a_plain_key_cannot_be_topped_up_or_revoked(carol):
    key, _ = create_api_key(user=carol)
    moves = (
        lambda: subkeys.top_up_key(api_key=key, amount=1),
        lambda: subkeys.revoke_key(api_key=key),
    )
    for move in moves:
        with pytest.raises(subkeys.SubkeyRefused) as refused:
            move()
        assert refused.value.reason == "not_carved"


def test_an_expired_sub_key_returns_its_balance_once(carol, books_balance):
    key, _ = carved(carol, 2 * DOLLAR, expires_at=timezone.now() + timedelta(days=1))
    later = timezone.now() + timedelta(days=2)

    assert subkeys.return_subkey_balances(now=timezone.now()) == 0  # not expired yet
    assert subkeys.return_subkey_balances(now=later) == 1
    assert subkeys.return_subkey_balances(now=later) == 0

    carol.refresh_from_db()
    key.refresh_from_db()
    assert carol.quota == ALICE_CREDIT and key.remaining_quota == 0
    returned = LedgerEntry.objects.filter(api_key=key, kind=LedgerEntry.Kind.FROM_SUBKEY)
    assert sorted((r.amount, r.key_amount) for r in returned) == [(0, -2 * DOLLAR), (2 * DOLLAR, 0)]
    books_balance()


def test_a_carved_key_is_never_deleted(carol):
    key, _ = carved(carol, DOLLAR)
    with pytest.raises(CarvedKeyProtected):
        key.delete()
    with pytest.raises(CarvedKeyProtected):
        ApiKey.objects.filter(user=carol).delete()
    assert ApiKey.objects.filter(id=key.id).exists()


def test_spent_limit_reads_a_carved_key_alone(carol):
    key, _ = carved(carol, DOLLAR)
    carol.refresh_from_db()
    billing.grant(user=carol, amount=-carol.quota, note="reseller spent everything")

    assert billing.spent_limit(user_id=carol.id, api_key_id=key.id) is None
    subkeys.revoke_key(api_key=key)
    assert billing.spent_limit(user_id=carol.id, api_key_id=key.id) == "key"


# --- Calls on a carved key (real HTTP through the relay) -------------------------------------


def test_calls_on_a_carved_key_spend_the_key_and_never_the_reseller(
    carol, openai_channel, make_openai, books_balance
):
    key, clear = carved(carol, DOLLAR)
    # The reseller spends everything else: the customer's key keeps working.
    carol.refresh_from_db()
    billing.grant(user=carol, amount=-carol.quota, note="reseller spent everything")

    answer = make_openai(clear).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )
    assert answer.usage.total_tokens > 0

    [row] = settled_usage(1)
    key.refresh_from_db()
    carol.refresh_from_db()
    assert row.carved and row.quota > 0 and row.key_quota == row.quota
    assert key.remaining_quota == DOLLAR - row.quota
    assert carol.quota == 0 and carol.used_quota == 0
    books_balance()


def test_a_spent_carved_key_is_refused_while_its_reseller_has_money(
    carol, openai_channel, make_openai, books_balance
):
    key, clear = carved(carol, 1)

    with pytest.raises(openai.RateLimitError) as refused:
        make_openai(clear).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
    assert "key" in str(refused.value)
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT - 1
    assert not UsageLog.objects.exclude(status=UsageLog.Status.FAILED).exists()
    books_balance()


def test_a_revoked_key_is_refused_and_what_calls_left_in_it_goes_back(
    carol, openai_channel, make_openai, books_balance
):
    key, clear = carved(carol, DOLLAR)
    make_openai(clear).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )
    [row] = settled_usage(1)
    subkeys.revoke_key(api_key=key)

    with pytest.raises(openai.PermissionDeniedError):
        make_openai(clear).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT - row.quota
    books_balance()


def test_a_resellers_spent_balance_refused_a_moment_ago_does_not_refuse_the_sub_key(
    carol, openai_channel, make_openai, books_balance
):
    key, clear = carved(carol, DOLLAR)
    _, own = create_api_key(user=carol, name="carol's own")
    carol.refresh_from_db()
    billing.grant(user=carol, amount=-carol.quota, note="reseller spent everything")
    ask = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}

    with pytest.raises(openai.RateLimitError):  # her own key: her balance is spent
        make_openai(own).chat.completions.create(**ask)
    # The relay remembers her spent balance for a few seconds; the sub-key does not use it.
    assert make_openai(clear).chat.completions.create(**ask).usage.total_tokens > 0
    books_balance()
