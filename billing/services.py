"""Every way money moves. Nothing else in Sluice changes a balance.

Each function is one transaction: the balance and its ledger (or journal) row change together
or not at all. Grants and key limits are conditional UPDATEs; holds are placed, settled and
released by ``billing.batch.apply_batch`` under row locks, each hold's status moving from open
exactly once (the relay queues the same operations through ``billing.writer``, many calls to a
transaction). Services use plain ``atomic()`` so they compose inside a caller's transaction
(Django admin runs in one).

Where billing's other parts live: the operations and their outcomes in ``billing.operations``,
the batch that decides them in ``billing.batch``, the proof that the books balance in
``billing.reconcile``, prices in ``billing.pricing``, and where balances are stored (and the
decision to move them) in ``billing.balances``.
"""

from datetime import datetime
from decimal import Decimal
from typing import cast

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.balances import ApiKey, User
from billing.batch import apply_batch
from billing.models import Hold, LedgerEntry, UsageLog
from billing.operations import (
    CallRecord,
    HeldQuota,
    InsufficientQuota,
    Limit,
    Operation,
    Outcome,
    Release,
    Reserve,
    Settle,
    UsageFlag,
)
from billing.pricing import UNPRICED, Price, TokenUsage


def grant(
    *,
    user: User,
    amount: int,
    kind: str = LedgerEntry.Kind.ADJUSTMENT,
    note: str = "",
    by: User | None = None,
) -> LedgerEntry:
    """Add ``amount`` quota (negative to take) to the balance, with its ledger row."""
    with transaction.atomic():
        User.objects.filter(id=user.id).update(quota=F("quota") + amount)
        entry = LedgerEntry.objects.create(
            user_id=user.id, kind=kind, amount=amount, note=note, created_by=by
        )
    user.refresh_from_db(fields=["quota"])
    return entry


def set_key_limit(
    *, api_key: ApiKey, remaining: int | None, by: User | None = None, note: str = ""
) -> ApiKey:
    """Give a key an allowance of ``remaining`` quota (None: unlimited), with its ledger row."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(id=api_key.id)
        if key.carved:  # its balance is money moved in, never set (billing.subkeys)
            raise ValueError("A carved sub-key's balance is topped up or revoked, not set.")
        if remaining is None:
            key.unlimited_quota = True
            key.save(update_fields=["unlimited_quota"])
        else:
            delta = remaining - key.remaining_quota
            key.unlimited_quota = False
            key.remaining_quota = remaining
            key.save(update_fields=["unlimited_quota", "remaining_quota"])
            if delta:
                LedgerEntry.objects.create(
                    user_id=key.user_id,
                    api_key=key,
                    kind=LedgerEntry.Kind.KEY_LIMIT,
                    amount=0,
                    key_amount=delta,
                    note=note,
                    created_by=by,
                )
    api_key.refresh_from_db(fields=["unlimited_quota", "remaining_quota"])
    return api_key


class RefundRefused(Exception):
    """A call whose charge cannot be given back: ``reason`` is "no_reason", "refunded" (once
    only) or "free" (nothing was charged)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def refund_call(*, usage: UsageLog, reason: str, by: User | None = None) -> LedgerEntry:
    """Give a settled call's charge back to whoever paid it (a carved sub-key's balance, or the
    user's and a limited key's allowance), once, with its ``refund`` ledger row naming the call
    and the reason."""
    if not reason.strip():
        raise RefundRefused("no_reason", "Say why the call is refunded.")
    now = timezone.now()
    with transaction.atomic():
        # The status transition: of two refunds of one call, one changes the row.
        claimed = UsageLog.objects.filter(id=usage.id, refunded_at=None, quota__gt=0).update(
            refunded_at=now
        )
        row = UsageLog.objects.get(id=usage.id)
        if not claimed:
            if row.refunded_at is not None:
                raise RefundRefused("refunded", "This call was refunded already.")
            raise RefundRefused("free", "This call was not charged.")
        # Locks in the batch's order, users then keys: a refund never deadlocks with calls.
        user_amount = 0 if row.carved else row.quota
        key_amount = row.key_quota if row.api_key_id is not None else 0
        User.objects.filter(id=row.user_id).update(
            quota=F("quota") + user_amount, used_quota=F("used_quota") - user_amount
        )
        if row.api_key_id is not None:
            ApiKey.objects.filter(id=row.api_key_id).update(
                remaining_quota=F("remaining_quota") + key_amount,
                used_quota=F("used_quota") - row.quota,
            )
        entry = LedgerEntry.objects.create(
            user_id=row.user_id,
            api_key_id=row.api_key_id,
            kind=LedgerEntry.Kind.REFUND,
            amount=user_amount,
            key_amount=key_amount,
            note=f"call {row.id} ({row.model}): {reason.strip()}"[:255],
            created_by=by,
        )
    usage.refunded_at = now
    return entry


def spent_limit(*, user_id: int, api_key_id: int) -> Limit | None:
    """Which limit is at or below zero, if one is: "balance" (the user's) or "key" (the key's
    own allowance, which matters only for a limited key, or a carved key's balance). A read,
    for refusing a call before its body is read; the hold itself is what decides."""
    key = (
        ApiKey.objects.filter(id=api_key_id)
        .values("unlimited_quota", "remaining_quota", "carved")
        .first()
    )
    if key and key["carved"]:  # a carved key spends its own balance, never its owner's
        return "key" if key["remaining_quota"] <= 0 else None
    if not User.objects.filter(id=user_id, quota__gt=0).exists():
        return "balance"
    if key and not key["unlimited_quota"] and key["remaining_quota"] <= 0:
        return "key"
    return None


def _one(operation: Operation) -> Outcome:
    [outcome] = apply_batch([operation])
    if isinstance(outcome, InsufficientQuota):
        raise outcome
    return outcome


def reserve_quota(*, user_id: int, api_key_id: int, unlimited_key: bool, amount: int) -> HeldQuota:
    """Place a hold (see ``Reserve``), alone in its transaction; raises InsufficientQuota."""
    reserving = Reserve(
        user_id=user_id, api_key_id=api_key_id, unlimited_key=unlimited_key, amount=amount
    )
    return cast(HeldQuota, _one(reserving))  # a refusal was raised


def settle_hold(
    *, hold: HeldQuota, price: Price, group_ratio: Decimal, usage: TokenUsage, call: CallRecord
) -> UsageLog | None:
    """Settle a hold (see ``Settle``), alone in its transaction: its journal row, or None if
    it was settled before."""
    settling = Settle(hold=hold, price=price, group_ratio=group_ratio, usage=usage, call=call)
    if _one(settling) is None:
        return None
    return UsageLog.objects.get(hold_id=hold.id)


def release_hold(*, hold_id: int) -> bool:
    """Release an open hold (see ``Release``), alone in its transaction; whether this did."""
    row = Hold.objects.filter(id=hold_id).first()
    return row is not None and _one(Release(HeldQuota.from_row(row))) is True


def release_expired_holds(*, now: datetime | None = None) -> int:
    """Release the holds whose calls died with their worker, and charge the ones whose answer
    was delivered but not settled (``settle_delivered_holds``); returns how many released."""
    now = now or timezone.now()
    settle_delivered_holds()
    released = 0
    for row in Hold.objects.filter(status=Hold.Status.OPEN, expires_at__lt=now):
        released += _one(Release(HeldQuota.from_row(row))) is True
    return released


_SETTLED_LATE = CallRecord(endpoint="", model="", usage_flag=UsageFlag.SETTLED_LATE)


def settle_delivered_holds() -> int:
    """Charge every hold whose answer was delivered but whose settlement failed, at the cost
    its call computed (the held amount if it recorded none), each once; returns how many."""
    settled = 0
    for row in Hold.objects.filter(status=Hold.Status.DELIVERED):
        settling = Settle(
            hold=HeldQuota.from_row(row),
            price=UNPRICED,
            group_ratio=Decimal(1),
            usage=TokenUsage(),
            call=_SETTLED_LATE,
            cost=row.delivered_quota if row.delivered_quota is not None else row.amount,
        )
        settled += _one(settling) is not None
    return settled
