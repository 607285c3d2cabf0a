"""billing's typed hot-path API, as the relay uses it: operations in, frozen values out."""

import ast
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from decimal import Decimal
from pathlib import Path

import pytest

from accounts.models import ApiKey
from accounts.services import create_api_key
from billing import services
from billing.batch import apply_batch
from billing.models import Hold, ModelPrice, UsageLog
from billing.operations import (
    CallRecord,
    CallStatus,
    Deliver,
    HeldQuota,
    InsufficientQuota,
    Release,
    Reserve,
    Settle,
    UsageFlag,
)
from billing.pricing import TokenUsage, price_for, priced_models

pytestmark = pytest.mark.django_db

BILLING = Path(__file__).resolve().parent.parent / "billing"


def settle(hold: HeldQuota, **call) -> Settle:
    return Settle(
        hold=hold,
        price=price_for("gpt-4o"),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=100),
        call=CallRecord(endpoint="chat", model="gpt-4o", **call),
    )


def test_a_placed_hold_is_a_value_that_says_what_its_row_holds(alice, books_balance):
    key, _ = create_api_key(user=alice, quota=5_000)
    [held] = apply_batch(
        [Reserve(user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=4_000)]
    )

    row = Hold.objects.get()
    assert held == HeldQuota(
        id=row.id,
        user_id=alice.id,
        api_key_id=key.id,
        amount=4_000,
        key_amount=4_000,
        expires_at=row.expires_at,
    )
    with pytest.raises(FrozenInstanceError):
        held.amount = 0  # type: ignore[misc]
    books_balance()


def test_a_refusal_is_a_value_naming_the_limit_and_the_batch_goes_on(alice, books_balance):
    key, _ = create_api_key(user=alice, quota=0)
    refused, placed = apply_batch(
        [
            Reserve(user_id=alice.id, api_key_id=key.id, unlimited_key=False, amount=10),
            Reserve(user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=10),
        ]
    )

    assert isinstance(refused, InsufficientQuota)
    assert (refused.limit, refused.spent) == ("key", True)
    assert isinstance(placed, HeldQuota) and placed.key_amount == 0
    books_balance()


def test_settle_release_and_deliver_take_the_held_value_and_each_closes_a_hold_once(
    alice, alice_key, books_balance
):
    key = ApiKey.objects.find(alice_key).get()
    reserve = Reserve(user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1_000)
    settled, released, delivered = apply_batch([reserve, reserve, reserve])

    outcomes = apply_batch(
        [
            settle(settled),
            Release(released),
            Deliver(delivered, 125),
            settle(settled),
            Release(released),
            Deliver(delivered, 125),
        ]
    )

    assert outcomes == [125, True, True, None, False, False]
    statuses = dict(Hold.objects.values_list("id", "status"))
    assert statuses == {settled.id: "settled", released.id: "released", delivered.id: "delivered"}
    books_balance()


def test_the_journal_row_keeps_the_status_and_usage_flag_the_relay_names(
    alice, alice_key, books_balance
):
    key = ApiKey.objects.find(alice_key).get()
    held = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1_000
    )

    apply_batch([settle(held, status=CallStatus.CLIENT_GONE, usage_flag=UsageFlag.CLAMPED)])

    log = UsageLog.objects.get()
    assert (log.status, log.usage_flag) == ("client_gone", "clamped")
    assert (CallStatus.SUCCESS, UsageFlag.TRUSTED) == ("success", "")  # today's stored values
    books_balance()


HOSTILE_TEXT = "o'brien \\' \"; DROP TABLE billing_hold; -- %s %(x)s 100% \u00e9\u4e2d\U0001f600"


@pytest.mark.django_db(transaction=True)  # a batch of its own (BEGIN), not a savepoint
def test_every_text_of_a_call_reaches_its_usage_row_as_it_was(alice, alice_key, books_balance):
    """On PostgreSQL the batch's rows travel inside its SQL as one quoted JSON document:
    quotes, backslashes, placeholders and SQL in any text stay text."""
    key = ApiKey.objects.find(alice_key).get()
    held = services.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=1_000
    )
    raw = {HOSTILE_TEXT: HOSTILE_TEXT, "nested": [HOSTILE_TEXT, {"n": 2**62}]}

    [cost] = apply_batch(
        [
            settle(
                held,
                upstream_model=HOSTILE_TEXT,
                error=HOSTILE_TEXT[:64],
                usage_flag=UsageFlag.REJECTED,
                reported_usage=raw,
            )
        ]
    )

    log = UsageLog.objects.get()
    assert (log.upstream_model, log.error) == (HOSTILE_TEXT, HOSTILE_TEXT[:64])
    assert log.reported_usage == raw
    assert (log.quota, Hold.objects.get().status) == (cost, "settled")
    books_balance()


def test_holds_whose_key_was_deleted_settle_in_one_batch_with_others(alice, books_balance):
    kept, _ = create_api_key(user=alice)
    gone, _ = create_api_key(user=alice)
    first = services.reserve_quota(
        user_id=alice.id, api_key_id=kept.id, unlimited_key=True, amount=1_000
    )
    orphan = services.reserve_quota(
        user_id=alice.id, api_key_id=gone.id, unlimited_key=True, amount=1_000
    )
    gone.delete()  # the hold keeps its money; its key column is emptied
    orphan = HeldQuota.from_row(Hold.objects.get(id=orphan.id))
    assert orphan.api_key_id is None

    assert apply_batch([settle(first), settle(orphan)]) == [125, 125]

    assert set(Hold.objects.values_list("status", flat=True)) == {"settled"}
    alice.refresh_from_db()
    assert (alice.quota, alice.used_quota) == (10_000_000 - 250, 250)
    books_balance()


def test_priced_models_are_the_ones_a_call_may_name_free_ones_included():
    ModelPrice.objects.create(model="house-model", is_free=True)

    offered = {"gpt-4o", "house-model", "nobody-priced-this"}

    assert priced_models(offered) == {"gpt-4o", "house-model"}
    assert priced_models(set()) == set()


def test_billing_imports_nothing_from_accounts_so_the_apps_depend_one_way():
    """accounts calls billing (a key's allowance, grants); billing reaches today's balance
    columns through its own foreign keys (billing.balances), never by importing accounts."""
    imported = {
        (path.relative_to(BILLING).as_posix(), module)
        for path in BILLING.rglob("*.py")
        for module in _imports(ast.parse(path.read_text()))
    }

    assert ("services.py", "billing.batch") in imported  # the walk sees billing's imports
    assert {(name, module) for name, module in imported if module.startswith("accounts")} == set()


def _imports(node: ast.AST) -> Iterator[str]:
    """The modules ``node`` imports when it runs (an ``if TYPE_CHECKING:`` body is read by
    type checkers only)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
        yield node.module
    if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
        children = node.orelse
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _imports(child)
