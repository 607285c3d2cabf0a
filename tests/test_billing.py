"""The money rules, service by service: holds, settlement, release, pricing, reconcile."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import create_api_key
from billing import services
from billing.batch import apply_batch
from billing.models import Hold, LedgerEntry, ModelPrice, UsageLog
from billing.operations import (
    CallRecord,
    HeldQuota,
    InsufficientQuota,
    Release,
    Reserve,
    Settle,
)
from billing.pricing import Demand, Price, TokenUsage, price_for
from billing.reconcile import reconcile
from tests.charges import expected_charge

pytestmark = pytest.mark.django_db

CALL = CallRecord(endpoint="chat", model="gpt-4o")


def gpt4o() -> Price:
    return price_for("gpt-4o")


def test_one_ratio_is_one_quota_per_token_and_rounds_up_once():
    price = Price("m", Decimal("1"), Decimal("1"), Decimal("1"), Decimal("1"), None, False, 100)
    assert price.charge(TokenUsage(input_tokens=1000), Decimal(1)) == 1000  # $0.002 per 1K
    cheap = Price(
        "m", Decimal("0.075"), Decimal("4"), Decimal("0.5"), Decimal("1.25"), None, False, None
    )
    usage = TokenUsage(
        input_tokens=10, cached_input_tokens=7, cache_write_tokens=3, output_tokens=5
    )
    # 0.075 × (10 + 7×0.5 + 3×1.25 + 5×4) = 0.075 × 37.25 = 2.79375 -> 3
    assert cheap.charge(usage, Decimal(1)) == 3
    assert cheap.charge(usage, Decimal("2")) == 6  # 5.5875 -> 6


def test_a_per_call_price_replaces_tokens_and_a_free_model_costs_nothing():
    fixed = Price("m", Decimal("9"), Decimal("9"), Decimal(1), Decimal(1), 5000, False, 100)
    assert fixed.charge(TokenUsage(input_tokens=10**6), Decimal("0.8")) == 4000
    free = Price("m", Decimal("9"), Decimal("9"), Decimal(1), Decimal(1), None, True, 100)
    assert free.charge(TokenUsage(input_tokens=10**6), Decimal(1)) == 0


def test_the_hold_covers_every_choice_and_the_models_largest_output(settings):
    settings.RELAY_DEFAULT_MAX_OUTPUT_TOKENS = 1000
    price = gpt4o()  # ratio 1.25, completion 4
    one = Demand(input_tokens=100, output_tokens=10)
    assert price.most(one, Decimal(1)) == 175  # 1.25 × (100 + 10×4)
    # n = 50: fifty outputs of 10 tokens each.
    assert price.most(Demand(input_tokens=100, output_tokens=10, choices=50), Decimal(1)) == 2625
    assert price.max_output_tokens == 16384  # shipped with the default table
    row = ModelPrice.objects.get(model="gpt-4o")
    row.max_output_tokens = None
    row.save()  # and, without one, the setting's
    assert gpt4o().max_output_tokens == 1000


def test_dearer_input_and_paid_options_raise_the_hold():
    claude = Price.from_row(ModelPrice.objects.get(model="claude-sonnet-4-5"))  # 1.5, out 5
    plain = Demand(input_tokens=1000, output_tokens=0)
    assert claude.most(plain, Decimal(1)) == 1500
    # Input that may be written to the 1-hour cache is held at 2×, the 5-minute one at 1.25×.
    assert claude.most(replace(plain, cache_writes="5m"), Decimal(1)) == 1875
    assert claude.most(replace(plain, cache_writes="1h"), Decimal(1)) == 3000
    searching = replace(claude, web_search_quota=5000)
    assert searching.most(replace(plain, web_searches=3), Decimal(1)) == 1500 + 15000


def test_the_output_a_short_balance_covers_is_the_largest_that_fits():
    price = gpt4o()  # 1.25 × (input + 4 × output)
    demand = Demand(input_tokens=100, output_tokens=16384, choices=2)
    for amount in (200, 1000, 12345, 99999):
        limit = price.output_covered(amount, demand, Decimal(1))
        assert price.most(replace(demand, output_tokens=limit), Decimal(1)) <= amount
        assert price.most(replace(demand, output_tokens=limit + 1), Decimal(1)) > amount
    assert price.output_covered(10**9, demand, Decimal(1)) == 16384


def test_the_shipped_table_prices_known_models_at_list_price():
    row = ModelPrice.objects.get(model="claude-sonnet-4-5")  # $3 in, $15 out, $0.30 cached
    assert (row.model_ratio, row.completion_ratio, row.cache_read_ratio) == (
        Decimal("1.5"),
        Decimal("5"),
        Decimal("0.1"),
    )
    assert price_for("no-such-model") is None


def test_a_grant_moves_the_balance_with_its_ledger_row(alice, ops):
    services.grant(user=alice, amount=-1234, note="correction", by=ops)
    alice.refresh_from_db()
    assert alice.quota == 10_000_000 - 1234
    entry = LedgerEntry.objects.filter(user=alice).first()
    assert (entry.kind, entry.amount, entry.created_by) == ("adjustment", -1234, ops)


def test_a_hold_takes_from_balance_and_key_and_settles_to_the_exact_cost(alice, books_balance):
    key, _ = create_api_key(user=alice, quota=50_000)
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=10_000
    )
    alice.refresh_from_db()
    key.refresh_from_db()
    assert (alice.quota, key.remaining_quota) == (10_000_000 - 10_000, 40_000)
    books_balance()

    usage = TokenUsage(input_tokens=100, output_tokens=50)
    log = services.settle_hold(
        hold=hold, price=gpt4o(), group_ratio=Decimal(1), usage=usage, call=CALL
    )
    cost = 375  # 1.25 × (100 + 50×4)
    assert expected_charge("gpt-4o", input=100, output=50) == cost  # the tests' formula agrees
    assert (log.quota, log.key_quota) == (cost, cost)
    alice.refresh_from_db()
    key.refresh_from_db()
    assert (alice.quota, alice.used_quota, alice.request_count) == (10_000_000 - cost, cost, 1)
    assert (key.remaining_quota, key.used_quota) == (50_000 - cost, cost)
    assert key.last_used_at is not None
    books_balance()


def test_a_hold_is_settled_exactly_once(alice, alice_key, books_balance):
    key = ApiKey.objects.find(alice_key).get()
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1000
    )
    usage = TokenUsage(input_tokens=100)
    assert services.settle_hold(
        hold=hold, price=gpt4o(), group_ratio=Decimal(1), usage=usage, call=CALL
    )
    assert (
        services.settle_hold(
            hold=hold, price=gpt4o(), group_ratio=Decimal(1), usage=usage, call=CALL
        )
        is None
    )
    assert not services.release_hold(hold_id=hold.id)
    assert UsageLog.objects.count() == 1
    assert User.objects.get(id=alice.id).quota == 10_000_000 - 125
    books_balance()


def test_a_released_hold_gives_everything_back(alice, books_balance):
    key, _ = create_api_key(user=alice, quota=5000)
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=4000
    )
    assert services.release_hold(hold_id=hold.id)
    assert not services.release_hold(hold_id=hold.id)
    alice.refresh_from_db()
    key.refresh_from_db()
    assert (alice.quota, key.remaining_quota) == (10_000_000, 5000)
    assert Hold.objects.get().status == Hold.Status.RELEASED
    books_balance()


def test_no_hold_when_the_balance_or_the_key_cannot_cover_it(alice, books_balance):
    key, _ = create_api_key(user=alice, quota=100)
    with pytest.raises(InsufficientQuota) as refused:
        services.reserve_quota(user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=101)
    assert refused.value.limit == "key"
    with pytest.raises(InsufficientQuota) as refused:
        services.reserve_quota(
            user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=10_000_001
        )
    assert refused.value.limit == "balance"
    # Neither attempt left anything behind: the balance decrement rolled back with the key's.
    alice.refresh_from_db()
    assert alice.quota == 10_000_000 and not Hold.objects.exists()
    books_balance()


def test_no_hold_once_the_balance_is_at_or_below_zero(alice, alice_key):
    key = ApiKey.objects.find(alice_key).get()
    services.grant(user=alice, amount=-10_000_000)
    with pytest.raises(InsufficientQuota):
        services.reserve_quota(user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1)


def test_an_overrun_may_take_the_balance_below_zero_but_the_books_still_balance(
    alice, alice_key, books_balance
):
    key = ApiKey.objects.find(alice_key).get()
    services.grant(user=alice, amount=-(10_000_000 - 200))
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=200
    )
    services.settle_hold(
        hold=hold,
        price=gpt4o(),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=100, output_tokens=100),
        call=CALL,
    )
    alice.refresh_from_db()
    assert alice.quota == 200 - 625
    books_balance()


def test_expired_holds_are_released_and_a_late_settle_still_charges_once(
    alice, alice_key, books_balance
):
    key = ApiKey.objects.find(alice_key).get()
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1000
    )
    fresh = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=10
    )
    Hold.objects.filter(id=hold.id).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert services.release_expired_holds() == 1
    assert Hold.objects.get(id=fresh.id).status == Hold.Status.OPEN
    assert User.objects.get(id=alice.id).quota == 10_000_000 - 10
    books_balance()
    # The call did finish after all: it is charged in full, from the balance, exactly once.
    services.settle_hold(
        hold=hold,
        price=gpt4o(),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=100),
        call=CALL,
    )
    assert User.objects.get(id=alice.id).quota == 10_000_000 - 10 - 125
    books_balance()


def test_a_key_limit_change_is_ledgered_for_the_key(alice, books_balance):
    key, _ = create_api_key(user=alice)
    services.set_key_limit(api_key=key, remaining=700)
    services.set_key_limit(api_key=key, remaining=300)
    assert list(LedgerEntry.objects.filter(api_key=key).values_list("key_amount", flat=True)) == [
        -400,
        700,
    ]
    assert not key.unlimited_quota and key.remaining_quota == 300
    books_balance()


def test_reconcile_names_an_account_whose_books_do_not_balance(alice, bob):
    User.objects.filter(id=bob.id).update(quota=1)  # a change with no ledger row
    problems = reconcile()
    assert [(p.kind, p.id) for p in problems] == [("user", bob.id)]
    assert "balance 1" in str(problems[0])


def test_a_batch_decides_each_operation_in_order_against_what_the_ones_before_left(
    alice, bob, books_balance
):
    """billing.writer runs many calls' operations in one transaction: each must be decided
    exactly as it would be alone, after the ones queued before it."""
    key, _ = create_api_key(user=alice, quota=30_000)
    bob_key, _ = create_api_key(user=bob)
    User.objects.filter(id=bob.id).update(quota=5_000)
    LedgerEntry.objects.create(user=bob, kind="adjustment", amount=5_000 - bob.quota)
    settled = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=10_000
    )
    released = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=10_000
    )

    bob_holds = Reserve(user_id=bob.id, api_key_id=bob_key.id, unlimited_key=True, amount=4_000)
    alice_holds = Reserve(user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=15_000)
    settling = Settle(
        hold=settled,
        price=gpt4o(),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=800),
        call=CALL,
    )

    results = apply_batch(
        [
            bob_holds,
            bob_holds,  # 1,000 left: refused
            # The key's allowance has 10,000 left until the release below gives 10,000 back.
            alice_holds,
            settling,
            Release(released),
            alice_holds,
            settling,
        ]
    )

    first, refused, too_early, cost, given_back, placed, again = results
    assert isinstance(first, HeldQuota) and first.id and first.amount == 4_000
    assert isinstance(refused, InsufficientQuota) and refused.limit == "balance"
    assert isinstance(too_early, InsufficientQuota) and too_early.limit == "key"
    assert cost == 1_000  # gpt-4o: 1.25 × 800
    assert given_back is True
    assert isinstance(placed, HeldQuota) and placed.id and placed.key_amount == 15_000
    assert again is None  # a hold settles once, even twice in one batch
    assert Hold.objects.filter(status=Hold.Status.OPEN).count() == 2
    key.refresh_from_db()
    assert key.remaining_quota == 30_000 - 1_000 - 15_000
    assert User.objects.get(id=bob.id).quota == 1_000
    assert UsageLog.objects.get().quota == 1_000
    books_balance()


def test_a_failed_batch_leaves_nothing_behind(alice, alice_key, books_balance):
    key = ApiKey.objects.find(alice_key).get()
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1_000
    )
    broken = CallRecord(endpoint="chat", model="gpt-4o", channel_id="not a number")
    with pytest.raises(Exception):  # noqa: B017 - whichever error the database raises
        apply_batch(
            [
                Reserve(user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=2_000),
                Settle(
                    hold=hold,
                    price=gpt4o(),
                    group_ratio=Decimal(1),
                    usage=TokenUsage(input_tokens=8),
                    call=broken,
                ),
            ]
        )
    assert Hold.objects.get().status == Hold.Status.OPEN
    assert User.objects.get(id=alice.id).quota == 10_000_000 - 1_000
    books_balance()


@pytest.mark.django_db(transaction=True)
def test_the_ledger_writer_answers_each_call_and_one_bad_operation_fails_alone(
    alice, alice_key, books_balance
):
    import asyncio

    from billing import writer

    key = ApiKey.objects.find(alice_key).get()
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1_000
    )
    broken = CallRecord(endpoint="chat", model="gpt-4o", channel_id="not a number")
    reserve = Reserve(user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=100)
    settle = Settle(
        hold=hold,
        price=gpt4o(),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=8),
        call=broken,
    )

    async def many_calls():
        reserves = [writer.run(reserve) for _ in range(40)]
        bad = writer.run(settle)
        return await asyncio.gather(*reserves, bad, return_exceptions=True)

    *holds, failure = asyncio.run(many_calls())

    assert all(isinstance(h, HeldQuota) and h.id for h in holds)
    assert len({h.id for h in holds}) == 40
    assert isinstance(failure, Exception)
    assert not isinstance(failure, InsufficientQuota)
    assert Hold.objects.filter(status=Hold.Status.OPEN).count() == 41
    assert User.objects.get(id=alice.id).quota == 10_000_000 - 1_000 - 40 * 100
    books_balance()


def test_the_ledger_writer_answers_the_others_when_one_callers_event_loop_is_gone():
    import asyncio

    from billing import writer

    gone = asyncio.new_event_loop()
    gone_future = gone.create_future()
    gone.close()

    async def live_caller():
        future = asyncio.get_running_loop().create_future()
        batch = [
            ("closed", gone, gone_future, None),
            ("live", asyncio.get_running_loop(), future, None),
        ]
        await asyncio.to_thread(writer._answer, batch, ["for nobody", "for the live caller"])
        return await asyncio.wait_for(future, timeout=5)

    assert asyncio.run(live_caller()) == "for the live caller"


def test_saving_a_stale_user_or_key_never_overwrites_what_was_billed(alice, books_balance):
    """An admin form (or any code) holding rows loaded before a call was billed saves them."""
    key, _ = create_api_key(user=alice, quota=5_000)
    stale_user = User.objects.get(id=alice.id)
    stale_key = ApiKey.objects.get(id=key.id)
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=1_000
    )
    services.settle_hold(
        hold=hold,
        price=gpt4o(),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=100),
        call=CALL,
    )

    stale_user.group = "vip"
    stale_user.save()
    stale_key.name = "renamed"
    stale_key.save()

    alice.refresh_from_db()
    key.refresh_from_db()
    assert (alice.group, alice.quota, alice.used_quota, alice.request_count) == (
        "vip",
        10_000_000 - 125,
        125,
        1,
    )
    assert (key.name, key.remaining_quota, key.used_quota) == ("renamed", 5_000 - 125, 125)
    assert key.last_used_at is not None
    books_balance()
