"""Trial credit and invite rewards: given at sign-up, and trial credit taken back when it ends.

Every amount is quota units (500,000 = $1). Each grant is a ledger row of its own kind
(``trial``, ``invite_reward``) written in the same transaction as the balance change; an expiry
is a ``trial_expiry`` row. Trial credit counts as spent first: when a grant's lifetime ends, the
expiry takes at most the grant less everything the user consumed since it was given, and never
more than the balance, so money the user paid for is never taken and the balance never goes
below zero because of an expiry.

Credit held by a call in flight when the grant expires is not in the balance, so it is not
taken; if that call is later released, the credit stays with the user. The rule errs towards
the user, never the other way.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing import services
from billing.balances import User
from billing.models import LedgerEntry, TrialGrant, UsageLog


def grant_trial(
    *, user: User, amount: int, days: int, now: datetime | None = None
) -> TrialGrant | None:
    """Give ``user`` ``amount`` of trial credit lasting ``days`` (0: for ever), with its ledger
    row and its TrialGrant, in one transaction; None when there is nothing to give."""
    if amount <= 0:
        return None
    now = now or timezone.now()
    with transaction.atomic():
        entry = services.grant(
            user=user, amount=amount, kind=LedgerEntry.Kind.TRIAL, note="trial credit"
        )
        trial = TrialGrant.objects.create(
            user_id=user.id,
            entry=entry,
            amount=amount,
            expires_at=now + timedelta(days=days) if days else None,
        )
    return trial


def reward_invite(
    *, inviter: User, invitee: User, inviter_amount: int, invitee_amount: int
) -> list[LedgerEntry]:
    """Reward both sides of an invite (each a ledger row naming the other), in one transaction;
    a reward of 0 writes nothing."""
    sides = (
        (invitee, invitee_amount, f"invited by {inviter.get_username()}"),
        (inviter, inviter_amount, f"invited {invitee.get_username()}"),
    )
    entries = []
    with transaction.atomic():
        for user, amount, note in sides:
            if amount > 0:
                entries.append(
                    services.grant(
                        user=user,
                        amount=amount,
                        kind=LedgerEntry.Kind.INVITE_REWARD,
                        note=note[:255],
                    )
                )
    return entries


def consumed_since(*, user_id: int, since: datetime) -> int:
    """Quota the user consumed since ``since``: settled calls still in the journal, plus the
    daily consumption summaries written since (a summary stands for journal rows it replaced)."""
    journal = UsageLog.objects.filter(user_id=user_id, created_at__gte=since).aggregate(
        total=Sum("quota")
    )["total"]
    summaries = LedgerEntry.objects.filter(
        user_id=user_id, kind=LedgerEntry.Kind.CONSUME, created_at__gte=since
    ).aggregate(total=Sum("amount"))["total"]
    return (journal or 0) - (summaries or 0)  # summaries are negative balance changes


def expire_trial(*, trial_id: int, now: datetime | None = None) -> int | None:
    """End one trial grant whose lifetime is over: take what is left of it (at most the
    balance) with a ``trial_expiry`` ledger row. Returns the amount taken, or None when the
    grant was not due or another worker already ended it (each grant ends exactly once)."""
    now = now or timezone.now()
    with transaction.atomic():
        # The status transition: of two workers ending the same grant, one updates the row and
        # the other waits for its commit, then finds nothing left to update.
        closed = TrialGrant.objects.filter(id=trial_id, closed_at=None, expires_at__lte=now).update(
            closed_at=now
        )
        if not closed:
            return None
        trial = TrialGrant.objects.select_related("entry").get(id=trial_id)
        # Lock the balance before reading what was consumed: a settlement locks the same row
        # (billing.batch locks holds, then users), so every settlement that changed this
        # balance is either committed and counted below, or waits for this transaction.
        # Nothing else locks a TrialGrant, so this order cannot deadlock with a batch.
        balance = (
            User.objects.select_for_update().values_list("quota", flat=True).get(id=trial.user_id)
        )
        left = trial.amount - consumed_since(user_id=trial.user_id, since=trial.entry.created_at)
        taken = max(0, min(left, balance))
        if taken:
            updated = User.objects.filter(id=trial.user_id, quota__gte=taken).update(
                quota=F("quota") - taken
            )
            if updated != 1:
                raise RuntimeError(f"user {trial.user_id}'s balance fell while locked")
            LedgerEntry.objects.create(
                user_id=trial.user_id,
                kind=LedgerEntry.Kind.TRIAL_EXPIRY,
                amount=-taken,
                note=f"trial credit of {trial.amount} given {trial.entry.created_at:%Y-%m-%d}"
                " expired",
            )
        TrialGrant.objects.filter(id=trial_id).update(expired_amount=taken)
    return taken


def expire_trials(*, now: datetime | None = None) -> int:
    """End every trial grant whose lifetime is over (``expire_trial``); returns how many this
    call ended."""
    now = now or timezone.now()
    due = TrialGrant.objects.filter(closed_at=None, expires_at__lte=now).values_list(
        "id", flat=True
    )
    return sum(expire_trial(trial_id=trial_id, now=now) is not None for trial_id in list(due))
