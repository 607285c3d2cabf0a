"""Resellers' carved sub-keys: money moved from a reseller's balance into a key of their own.

A carved key (``ApiKey.carved``) holds its own balance in ``remaining_quota``. Carving it or
topping it up moves quota from the reseller's balance into it; revoking it, or its expiry,
moves what is left back. Each movement is one transaction writing two ledger rows, one per
side: the reseller's (``amount``) and the key's (``key_amount``), both of kind ``to_subkey``
or ``from_subkey``. Calls on the key hold and spend from the key alone (billing.batch), so a
customer's prepaid credit cannot vanish because the reseller spent their own balance.

The books of a carved key: ``balance + open holds == moved in - moved out - consumption``,
which is the general key equation of billing.reconcile; its consumption rows are flagged
``UsageLog.carved`` and left out of the reseller's own equation.

Locks follow the batch's order (users, then keys), so these never deadlock with calls.
"""

from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.balances import ApiKey, User
from billing.models import Hold, LedgerEntry
from config.cache import forget_keys


class SubkeyRefused(Exception):
    """A sub-key movement that cannot happen; ``reason`` is a short code, the message says
    it to a person."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def carve_key(*, api_key: ApiKey, amount: int, by: User | None = None) -> ApiKey:
    """Make a new key a carved sub-key holding ``amount`` quota, taken from its owner's
    balance, with both ledger rows; refused (SubkeyRefused) unless the owner is a reseller
    whose balance covers it and the key has never been used."""
    _check_amount(amount)
    with transaction.atomic():
        owner = User.objects.select_for_update().get(id=api_key.user_id)
        if not owner.is_reseller:
            raise SubkeyRefused("not_reseller", "Only resellers can carve sub-keys.")
        key = ApiKey.objects.select_for_update().get(id=api_key.id)
        if key.carved:
            raise SubkeyRefused("already_carved", "This key is a sub-key already.")
        if key.used_quota or key.last_used_at is not None:
            raise SubkeyRefused("used", "Only a new key can become a sub-key.")
        # A call in flight on it holds from the owner's balance; settled on a carved key it
        # would be charged to the key and its hold never given back. Its batch locked the
        # owner's row too, so under that lock every such hold is committed and seen here.
        if Hold.objects.filter(
            api_key_id=key.id, status__in=[Hold.Status.OPEN, Hold.Status.DELIVERED]
        ).exists():
            raise SubkeyRefused("used", "Only a new key can become a sub-key.")
        if owner.quota < amount:
            raise SubkeyRefused("insufficient_balance", "Your balance does not cover this.")
        # Its allowance so far was a limit on the owner's balance, not money: the key starts
        # from zero, with a ledger row for the change, then receives the carved amount.
        if key.remaining_quota:
            LedgerEntry.objects.create(
                user_id=key.user_id,
                api_key=key,
                kind=LedgerEntry.Kind.KEY_LIMIT,
                amount=0,
                key_amount=-key.remaining_quota,
                note="became a sub-key",
                created_by=by,
            )
        ApiKey.objects.filter(id=key.id).update(
            carved=True, unlimited_quota=False, remaining_quota=0
        )
        _move(user_id=owner.id, key_id=key.id, amount=amount, by=by, note="carved")
        forget_keys([key.lookup_hash])  # the relay caches whether a key is limited
    api_key.refresh_from_db()
    return api_key


def top_up_key(*, api_key: ApiKey, amount: int, by: User | None = None) -> ApiKey:
    """Move ``amount`` more quota from the reseller's balance into their carved key."""
    _check_amount(amount)
    with transaction.atomic():
        owner = User.objects.select_for_update().get(id=api_key.user_id)
        key = ApiKey.objects.select_for_update().get(id=api_key.id)
        if not key.carved:
            raise SubkeyRefused("not_carved", "Only a sub-key holds a balance of its own.")
        if key.revoked_at is not None:
            raise SubkeyRefused("revoked", "This sub-key was revoked.")
        if owner.quota < amount:
            raise SubkeyRefused("insufficient_balance", "Your balance does not cover this.")
        _move(user_id=owner.id, key_id=key.id, amount=amount, by=by, note="top-up")
    api_key.refresh_from_db()
    return api_key


def revoke_key(*, api_key: ApiKey, by: User | None = None) -> int:
    """Revoke a carved key (disabled for good) and return what is left of its balance to the
    reseller, once; the quota returned. What calls in flight leave unspent goes back later,
    by ``return_subkey_balances``."""
    with transaction.atomic():
        User.objects.select_for_update().get(id=api_key.user_id)
        key = ApiKey.objects.select_for_update().get(id=api_key.id)
        if not key.carved:
            raise SubkeyRefused("not_carved", "Only a sub-key can be revoked.")
        if key.revoked_at is None:
            ApiKey.objects.filter(id=key.id).update(
                revoked_at=timezone.now(), status=ApiKey.Status.DISABLED
            )
            forget_keys([key.lookup_hash])  # its calls stop now, not when the cache ages
        returned = _return_rest(key, by=by, note="revoked")
    api_key.refresh_from_db()
    return returned


def return_subkey_balances(*, now: datetime | None = None) -> int:
    """Give back to their resellers the balances of carved keys that were revoked or have
    expired (what late settlements left in them too), each unit once; how many keys."""
    now = now or timezone.now()
    ended = ApiKey.objects.filter(carved=True, remaining_quota__gt=0).filter(
        Q(revoked_at__isnull=False) | Q(expires_at__lte=now)
    )
    returned = 0
    for key_id, user_id in ended.values_list("id", "user_id"):
        with transaction.atomic():
            User.objects.select_for_update().get(id=user_id)
            key = ApiKey.objects.select_for_update().get(id=key_id)
            note = "revoked" if key.revoked_at is not None else "expired"
            returned += _return_rest(key, by=None, note=note) > 0
    return returned


def _return_rest(key: ApiKey, *, by: User | None, note: str) -> int:
    """Move a locked key's positive balance back to its owner (both rows locked already)."""
    rest = key.remaining_quota
    if rest <= 0:
        return 0
    _move(user_id=key.user_id, key_id=key.id, amount=-rest, by=by, note=note)
    return rest


def _move(*, user_id: int, key_id: int, amount: int, by: User | None, note: str) -> None:
    """``amount`` from the user to the key (negative: back), both rows locked by the caller,
    with the two ledger rows."""
    User.objects.filter(id=user_id).update(quota=F("quota") - amount)
    ApiKey.objects.filter(id=key_id).update(remaining_quota=F("remaining_quota") + amount)
    kind = LedgerEntry.Kind.TO_SUBKEY if amount > 0 else LedgerEntry.Kind.FROM_SUBKEY
    common = {"user_id": user_id, "api_key_id": key_id, "kind": kind, "note": note}
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(**common, amount=-amount, key_amount=0, created_by=by),
            LedgerEntry(**common, amount=0, key_amount=amount, created_by=by),
        ]
    )


def _check_amount(amount: int) -> None:
    if not isinstance(amount, int) or amount <= 0:
        raise SubkeyRefused("invalid_amount", "The amount must be above zero.")
