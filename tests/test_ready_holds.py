"""Holds placed ahead of a key's next calls (relay.ready_holds): the next call goes upstream
without waiting for its hold, and the money is exactly what it would have been.

Each ready hold is a normal hold: placed under the same rules, used by one call that it covers
in full, settled once; the unused ones are given back when the key goes idle.
"""

import time

import pytest

from billing.models import Hold, UsageLog
from tests.charges import expected_charge
from tests.conftest import ALICE_CREDIT, eventually, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def ready_holds_on(settings):
    settings.RELAY_READY_HOLDS = 2
    settings.RELAY_READY_HOLD_IDLE_SECONDS = 2  # a key called again within 1 s is in steady use


def open_holds() -> set[int]:
    return set(Hold.objects.filter(status=Hold.Status.OPEN).values_list("id", flat=True))


def test_the_next_call_uses_a_hold_placed_ahead_and_costs_what_it_would_have(
    alice, alice_key, openai_channel, make_openai, ready_holds_on, books_balance
):
    client = make_openai(alice_key)
    client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
    settled_usage(1)
    assert not open_holds()  # a key's first call places nothing ahead

    client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
    ahead = eventually(lambda: len(open_holds()) == 2 and open_holds())
    assert ahead, "in steady use, two holds are placed ahead for the key's next calls"

    client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)

    rows = settled_usage(3)
    assert rows[2].hold_id in ahead  # it went upstream on a hold placed before it arrived
    for row in rows:
        assert row.quota == expected_charge("gpt-4o", input=row.input_tokens, output=3)
    # Idle: what was set aside comes back, and the balance is the credit less the charges.
    assert eventually(lambda: not open_holds(), timeout=10)
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - sum(row.quota for row in rows)
    books_balance()


def test_a_call_a_ready_hold_does_not_cover_places_its_own(
    alice, alice_key, openai_channel, make_openai, ready_holds_on, books_balance
):
    client = make_openai(alice_key)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
    ahead = eventually(lambda: len(open_holds()) == 2 and open_holds())
    assert ahead

    client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=2000)

    bigger = UsageLog.objects.order_by("id").last()
    assert bigger.hold_id not in ahead
    own = Hold.objects.get(id=bigger.hold_id).amount
    assert own >= expected_charge("gpt-4o", output=2000)
    assert own > max(Hold.objects.filter(id__in=ahead).values_list("amount", flat=True))
    # The smaller holds would not cover the key's calls now: given back at once, not when the
    # key goes idle, and the ones placed next cover the larger call.
    released = Hold.Status.RELEASED
    assert eventually(
        lambda: set(Hold.objects.filter(status=released).values_list("id", flat=True)) == ahead,
        timeout=1.5,
    )
    assert eventually(lambda: len(open_holds()) == 2)
    assert min(Hold.objects.filter(id__in=open_holds()).values_list("amount", flat=True)) >= own
    assert eventually(lambda: not open_holds(), timeout=10)
    books_balance()


def test_a_key_called_less_often_than_holds_are_kept_places_none_ahead(
    alice, alice_key, openai_channel, make_openai, ready_holds_on, settings, books_balance
):
    settings.RELAY_READY_HOLD_IDLE_SECONDS = 0.2
    client = make_openai(alice_key)
    for count in (1, 2, 3):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
        settled_usage(count)
        time.sleep(1.5)  # past the idle spell: each call is the key's first again

    assert Hold.objects.count() == 3  # the calls' own holds, nothing placed and given back
    books_balance()


def test_no_hold_is_placed_ahead_unless_the_balance_covers_several_more_calls(
    alice, alice_key, openai_channel, make_openai, ready_holds_on, books_balance
):
    from billing import services

    one_call = expected_charge("gpt-4o", input=20, output=20)
    # Enough for the calls themselves, not for holds set aside beside them.
    services.grant(user=alice, amount=one_call * 6 - alice.quota)
    client = make_openai(alice_key)
    for count in (1, 2, 3):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
        settled_usage(count)

    assert Hold.objects.count() == 3  # no hold ahead: it would leave less than 8 calls' worth
    assert not open_holds()
    alice.refresh_from_db()
    assert alice.quota >= 0
    books_balance()


def test_the_balance_left_for_other_keys_is_kept_when_holds_are_placed_ahead(
    alice, alice_key, openai_channel, make_openai, ready_holds_on, books_balance
):
    from billing import services
    from relay.ready_holds import SPARE_CALLS

    one_call = expected_charge("gpt-4o", input=20, output=20)
    services.grant(user=alice, amount=one_call * 40 - alice.quota)
    client = make_openai(alice_key)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
    assert eventually(lambda: len(open_holds()) == 2)

    alice.refresh_from_db()
    held = sum(Hold.objects.filter(status=Hold.Status.OPEN).values_list("amount", flat=True))
    assert alice.quota >= SPARE_CALLS * held // 2  # several calls' worth still free
    assert eventually(lambda: not open_holds(), timeout=10)
    books_balance()


def test_a_key_in_steady_use_before_a_rest_places_holds_ahead_from_its_first_call_after_it(
    alice, alice_key, openai_channel, make_openai, ready_holds_on, books_balance
):
    client = make_openai(alice_key)

    def call(count: int) -> UsageLog:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
        return settled_usage(count)[-1]

    call(1)
    call(2)  # in steady use: holds are placed ahead
    assert eventually(lambda: len(open_holds()) == 2)
    assert eventually(lambda: not open_holds(), timeout=10)  # idle: given back

    first_after_rest = call(3)
    ahead = eventually(lambda: len(open_holds()) == 2 and open_holds())
    assert ahead, "the key was in steady use before its rest: its first call places holds ahead"
    assert first_after_rest.hold_id not in ahead  # that call itself placed its own
    assert call(4).hold_id in ahead  # the second call after the rest waits for no hold

    # A spell of one call (placed ahead, as the key was in steady use before): given back
    # unused, and the key is not taken to be in steady use any more.
    assert eventually(lambda: not open_holds(), timeout=10)
    call(5)
    assert eventually(lambda: len(open_holds()) == 2)
    assert eventually(lambda: not open_holds(), timeout=10)
    before = Hold.objects.count()
    call(6)
    time.sleep(0.5)
    assert Hold.objects.count() == before + 1  # its own hold, nothing placed ahead
    books_balance()
