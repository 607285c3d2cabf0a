"""VIP tiers: a group (and so its ratio and channels) for a number of days.

A tier is bought with balance (``buy_tier``: its price and the credit it includes are two
ledger rows of kind ``vip_purchase`` in one transaction) or with a redemption code whose batch
carries it (billing.redemption). Either way ``grant_tier`` sets the user's group: buying the
tier a user is already in extends it by its days; buying another one replaces it from now.
When a membership ends, the beat task ``end_expired_tiers`` puts the user back in
``default``, exactly once (a status transition on the membership). Ending moves no money: the
included credit was paid for with the price, so it stays with the user, and no ledger row is
written.

Every function here locks the user's row first (then the membership), so two of them on one
user queue instead of deadlocking. The group is saved through the model, not an UPDATE, so
the relay drops the user's cached keys (relay.signals) and the next call is priced and routed
by the new group.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from billing import services
from billing.balances import User
from billing.models import LedgerEntry, TierMembership, VipTier

DEFAULT_GROUP = "default"


class TierRefused(Exception):
    """A tier that could not be bought: ``reason`` is "unavailable" or "insufficient_balance"."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(message)


def _set_group(user: User, group: str) -> None:
    if user.group != group:
        user.group = group
        user.save(update_fields=["group"])  # signals: the relay reloads the user's keys


def grant_tier(*, user: User, tier: VipTier, now: datetime | None = None) -> TierMembership:
    """Put ``user`` in ``tier`` for its days (extending an open membership of the same tier,
    replacing one of another); moves no money."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = User.objects.select_for_update().get(id=user.id)
        current = (
            TierMembership.objects.select_for_update()
            .filter(user_id=user.id, ended_at=None)
            .first()
        )
        if current is not None and current.tier_id == tier.id and current.ends_at > now:
            current.ends_at += timedelta(days=tier.days)
            current.save(update_fields=["ends_at"])
            membership = current
        else:
            if current is not None:
                TierMembership.objects.filter(id=current.id, ended_at=None).update(ended_at=now)
            membership = TierMembership.objects.create(
                user_id=user.id,
                tier=tier,
                started_at=now,
                ends_at=now + timedelta(days=tier.days),
            )
        _set_group(locked, tier.group)
    user.group = tier.group
    return membership


def buy_tier(*, user: User, tier: VipTier) -> TierMembership:
    """Pay ``tier``'s price from the balance and join it, with the credit it includes, in one
    transaction; raises TierRefused when it is not for sale or the balance cannot pay."""
    with transaction.atomic():
        locked = User.objects.select_for_update().get(id=user.id)
        if not VipTier.objects.filter(id=tier.id, is_active=True).exists():
            raise TierRefused("unavailable", "This tier is not for sale.")
        if locked.quota < tier.price:
            raise TierRefused("insufficient_balance", "Your balance cannot pay for this tier.")
        what = f"tier {tier.name} ({tier.days} days)"
        if tier.price:
            services.grant(
                user=locked, amount=-tier.price, kind=LedgerEntry.Kind.VIP_PURCHASE, note=what
            )
        if tier.included_quota:
            services.grant(
                user=locked,
                amount=tier.included_quota,
                kind=LedgerEntry.Kind.VIP_PURCHASE,
                note=f"credit included with {what}",
            )
        membership = grant_tier(user=locked, tier=tier)
    user.refresh_from_db(fields=["quota", "group"])
    return membership


def end_membership(*, membership_id: int, now: datetime | None = None) -> bool:
    """End a membership whose time is up and put its user back in ``default``; whether this
    call did (a membership ends once, however many sweeps meet it)."""
    now = now or timezone.now()
    user_id = (
        TierMembership.objects.filter(id=membership_id).values_list("user_id", flat=True).first()
    )
    if user_id is None:
        return False
    with transaction.atomic():
        locked = User.objects.select_for_update().get(id=user_id)
        ended = TierMembership.objects.filter(
            id=membership_id, ended_at=None, ends_at__lte=now
        ).update(ended_at=now)
        if not ended:
            return False
        tier_group = (
            TierMembership.objects.filter(id=membership_id)
            .values_list("tier__group", flat=True)
            .get()
        )
        # An operator who moved the user to another group meanwhile has the last word.
        if locked.group == tier_group:
            _set_group(locked, DEFAULT_GROUP)
    return True


def end_expired_tiers(*, now: datetime | None = None) -> int:
    """End every membership whose time is up; returns how many this call ended."""
    now = now or timezone.now()
    due = TierMembership.objects.filter(ended_at=None, ends_at__lte=now)
    return sum(
        end_membership(membership_id=id_, now=now) for id_ in due.values_list("id", flat=True)
    )


def current_membership(user: User) -> TierMembership | None:
    """The user's open membership, if any (what the site shows)."""
    return (
        TierMembership.objects.select_related("tier").filter(user_id=user.id, ended_at=None).first()
    )
