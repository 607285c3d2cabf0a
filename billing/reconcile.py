"""Proof that the books balance: a read of every balance, hold, ledger row and journal row.

For every user and every key, ``balance + open holds == sum(ledger) - sum(consumption)``
(billing.models). For a carved sub-key that reads: key balance + its open holds == moved in -
moved out - its consumption (its ledger rows are the transfers, billing.subkeys); its calls'
journal rows (``UsageLog.carved``) count against the key only, never its reseller.
``manage.py reconcile`` and the tests' ``books_balance`` fixture ask this.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from django.db import connection, transaction
from django.db.models import QuerySet, Sum
from django.db.models.functions import Coalesce

from billing.balances import ApiKey, User
from billing.models import Hold, LedgerEntry, UsageLog


@dataclass(frozen=True)
class Discrepancy:
    """An account whose books do not balance (amounts in quota units)."""

    kind: Literal["user", "key"]
    id: int
    balance: int
    open_holds: int
    ledger: int
    journal: int

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.id}: balance {self.balance} + open holds {self.open_holds} "
            f"!= ledger {self.ledger} - consumption {self.journal}"
        )


def reconcile() -> list[Discrepancy]:
    """Every user and key for which balance + open holds != ledger - consumption."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            # Every query below must see the same moment, or calls settling meanwhile would
            # show up as discrepancies that are not there.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # A delivered hold still holds its money until the sweep settles it.
        open_holds = Hold.objects.filter(status__in=[Hold.Status.OPEN, Hold.Status.DELIVERED])
        user_holds = _sums(open_holds, "user_id", "amount")
        key_holds = _sums(open_holds.exclude(api_key=None), "api_key_id", "key_amount")
        user_ledger = _sums(LedgerEntry.objects.all(), "user_id", "amount")
        key_ledger = _sums(LedgerEntry.objects.exclude(api_key=None), "api_key_id", "key_amount")
        # A carved sub-key's calls are paid by the key alone: its reseller's books leave them
        # out (billing.subkeys).
        user_journal = _sums(UsageLog.objects.filter(carved=False), "user_id", "quota")
        key_journal = _sums(UsageLog.objects.exclude(api_key=None), "api_key_id", "key_quota")
        users = User.objects.values_list("id", "quota")
        keys = ApiKey.objects.values_list("id", "remaining_quota")
        return [
            *_unbalanced("user", users, user_holds, user_ledger, user_journal),
            *_unbalanced("key", keys, key_holds, key_ledger, key_journal),
        ]


def _unbalanced(
    kind: Literal["user", "key"],
    balances: Iterable[tuple[int, int]],
    holds: dict[int, int],
    ledger: dict[int, int],
    journal: dict[int, int],
) -> Iterator[Discrepancy]:
    for account_id, balance in balances:
        held, entered, consumed = (
            holds.get(account_id, 0),
            ledger.get(account_id, 0),
            journal.get(account_id, 0),
        )
        if balance + held != entered - consumed:
            yield Discrepancy(kind, account_id, balance, held, entered, consumed)


def _sums(queryset: QuerySet, group_field: str, value_field: str) -> dict[int, int]:
    rows = queryset.values(group_field).annotate(total=Coalesce(Sum(value_field), 0))
    return {row[group_field]: row["total"] for row in rows}
