"""Reads of the books for people who are not the account's owner on the site: a key's holder
(the /key page, /v1/dashboard/billing) and the operator (statements, daily summaries, top
spenders in admin). Reads only: nothing here changes a balance.

Amounts are quota units (500,000 = $1). Consumption comes from the usage journal, so it covers
the retention period; older days live on as daily ``consume`` ledger rows (billing.models).
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Count, Sum
from django.db.models.functions import Coalesce, TruncDate

from billing.balances import ApiKey, User
from billing.models import Hold, LedgerEntry, UsageLog

# --- A key's holder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyStanding:
    """What a key can still spend, and what it spent. ``spendable``: a carved key's own
    balance, a limited key's allowance capped by its owner's balance, or for an unlimited key
    its owner's balance."""

    spendable: int
    used: int
    carved: bool
    unlimited: bool
    expires_at: datetime | None
    allowed_models: list[str]


def key_standing(*, api_key_id: int) -> KeyStanding:
    key = ApiKey.objects.select_related("user").get(id=api_key_id)
    balance = key.user.quota
    if key.carved:
        spendable = key.remaining_quota
    elif key.unlimited_quota:
        spendable = balance
    else:
        spendable = min(key.remaining_quota, balance)
    return KeyStanding(
        spendable=max(spendable, 0),
        used=key.used_quota,
        carved=key.carved,
        unlimited=key.unlimited_quota and not key.carved,
        expires_at=key.expires_at,
        allowed_models=list(key.allowed_models or []),
    )


@dataclass(frozen=True)
class DayUsage:
    day: date
    model: str
    quota: int
    calls: int


def key_usage_by_day(*, api_key_id: int, start: datetime, end: datetime) -> list[DayUsage]:
    """The key's charged calls from ``start`` (inclusive) to ``end`` (exclusive), summed by
    day (the site's time zone) and model, oldest first."""
    rows = (
        UsageLog.objects.filter(api_key_id=api_key_id, created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at"))
        .values("day", "model")
        .annotate(quota=Coalesce(Sum("quota"), 0), calls=Count("id"))
        .order_by("day", "model")
    )
    return [DayUsage(r["day"], r["model"], r["quota"], r["calls"]) for r in rows]


def key_recent_calls(*, api_key_id: int, limit: int = 20) -> list[dict]:
    """The key's latest calls: when, model, tokens, cost, status (never text)."""
    rows = (
        UsageLog.objects.filter(api_key_id=api_key_id)
        .order_by("-id")
        .values(
            "created_at", "model", "input_tokens", "output_tokens", "quota", "status", "is_stream"
        )[:limit]
    )
    return [dict(row) for row in rows]


# --- The operator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One user's balance over ``[start, end)``: the opening balance, every movement summed
    by kind, and the closing balance, which is opening + movements. Ledger rows and journal
    rows (calls, as ``consume (calls)``) both count; open holds are money set aside, not
    spent, and are shown apart."""

    user_id: int
    start: datetime
    end: datetime
    opening: int
    movements: dict[str, int]
    closing: int
    open_holds_now: int
    balance_now: int

    @property
    def moved(self) -> int:
        return sum(self.movements.values())


CALLS_KIND = "consume (calls)"


def user_statement(*, user_id: int, start: datetime, end: datetime) -> Statement:
    """The statement of ``user_id`` over ``[start, end)``, tying to the ledger: the books'
    equation makes the balance at a moment the sum of ledger rows less the calls before it."""
    ledger = LedgerEntry.objects.filter(user_id=user_id)
    calls = UsageLog.objects.filter(user_id=user_id, carved=False)
    opening = _total(ledger.filter(created_at__lt=start), "amount") - _total(
        calls.filter(created_at__lt=start), "quota"
    )
    movements: dict[str, int] = {}
    during = ledger.filter(created_at__gte=start, created_at__lt=end)
    for row in during.values("kind").annotate(total=Sum("amount")).order_by("kind"):
        if row["total"]:
            movements[row["kind"]] = row["total"]
    spent = _total(calls.filter(created_at__gte=start, created_at__lt=end), "quota")
    if spent:
        movements[CALLS_KIND] = -spent
    user = User.objects.get(id=user_id)
    held = _total(
        Hold.objects.filter(user_id=user_id, status__in=[Hold.Status.OPEN, Hold.Status.DELIVERED]),
        "amount",
    )
    return Statement(
        user_id=user_id,
        start=start,
        end=end,
        opening=opening,
        movements=movements,
        closing=opening + sum(movements.values()),
        open_holds_now=held,
        balance_now=user.quota,
    )


REVENUE_KINDS = (LedgerEntry.Kind.REDEMPTION, LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.VIP_PURCHASE)


def daily_summary(*, start: datetime, end: datetime) -> list[dict]:
    """Per day over ``[start, end)``: revenue by kind (redemptions, top-ups, VIP purchases; a
    VIP purchase's price is the negative of its row) and consumption by model, channel and
    group, in quota units. One dict per day, oldest first."""
    days: defaultdict[date, dict] = defaultdict(
        lambda: {"revenue": {}, "by_model": {}, "by_channel": {}, "by_group": {}, "calls": 0}
    )
    revenue = (
        LedgerEntry.objects.filter(
            created_at__gte=start, created_at__lt=end, kind__in=REVENUE_KINDS
        )
        .annotate(day=TruncDate("created_at"))
        .values("day", "kind")
        .annotate(total=Sum("amount"))
    )
    for row in revenue:
        total = -row["total"] if row["kind"] == LedgerEntry.Kind.VIP_PURCHASE else row["total"]
        days[row["day"]]["revenue"][row["kind"]] = total
    calls = UsageLog.objects.filter(created_at__gte=start, created_at__lt=end).annotate(
        day=TruncDate("created_at")
    )
    for field, name in (("model", "by_model"), ("channel_id", "by_channel")):
        for row in calls.values("day", field).annotate(total=Sum("quota"), n=Count("id")):
            days[row["day"]][name][row[field]] = row["total"]
            if field == "model":
                days[row["day"]]["calls"] += row["n"]
    # The group a call was charged in is the user's group now: the journal keeps the ratio
    # charged, not the group's name.
    for row in calls.values("day", "user__group").annotate(total=Sum("quota")):
        days[row["day"]]["by_group"][row["user__group"]] = row["total"]
    return [{"day": day, **days[day]} for day in sorted(days)]


def top_spenders(*, start: datetime, end: datetime, limit: int = 20) -> list[dict]:
    """The users who spent most over ``[start, end)`` (their own and their sub-keys' calls)."""
    return list(
        UsageLog.objects.filter(created_at__gte=start, created_at__lt=end)
        .values("user_id", "user__username")
        .annotate(spent=Sum("quota"), calls=Count("id"))
        .order_by("-spent")[:limit]
    )


def _total(queryset, field: str) -> int:
    return queryset.aggregate(total=Coalesce(Sum(field), 0))["total"]
