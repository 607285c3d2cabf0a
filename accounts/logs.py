"""What the log pages read: one user's calls (``UsageLog``) and balance movements
(``LedgerEntry``), filtered, totalled, paged and exported.

Every query starts from ``user_id``: no filter, cursor or export can reach another user's rows.

Pages are cut by keyset on ``id`` (newest first), never by OFFSET, so the thousandth page
costs what the first does. A date range on calls becomes id bounds first (through the
``(user, created_at)`` index), so a range far in the past is an index range on ``(user, id)``
instead of a walk through every newer row; the exact ``created_at`` condition is kept beside
the bounds, which only have to be wide enough (see ``ID_BOUND_SLACK``).

Money is quota units (500,000 = $1); the CSV shows dollars too, exactly
(``accounts.templatetags.money.to_dollars``).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import ApiKey
from accounts.templatetags.money import to_dollars
from billing.models import LedgerEntry, UsageLog

PAGE_SIZE = 50
EXPORT_CHUNK = 2000
# A call's id and its created_at come from different moments (the row's time is taken before
# the ledger writer inserts its batch), so ids are ordered by time only roughly. The id bounds
# of a date range are taken this much wider; the exact time condition does the rest.
ID_BOUND_SLACK = timedelta(minutes=10)

CALLS = "calls"
LEDGER = "ledger"

# The ledger's kinds as the site names them (billing's own labels are for operators).
KIND_LABELS = {
    LedgerEntry.Kind.CONSUME: _("Usage (daily summary)"),
    LedgerEntry.Kind.REFUND: _("Refund"),
    LedgerEntry.Kind.TOPUP: _("Top-up"),
    LedgerEntry.Kind.REDEMPTION: _("Redeemed code"),
    LedgerEntry.Kind.TRIAL: _("Trial credit"),
    LedgerEntry.Kind.TRIAL_EXPIRY: _("Trial credit expired"),
    LedgerEntry.Kind.INVITE_REWARD: _("Invite reward"),
    LedgerEntry.Kind.VIP_PURCHASE: _("VIP purchase"),
    LedgerEntry.Kind.ADJUSTMENT: _("Adjustment"),
    LedgerEntry.Kind.KEY_LIMIT: _("Key limit change"),
}

STATUS_LABELS = {
    UsageLog.Status.SUCCESS: _("OK"),
    UsageLog.Status.CLIENT_GONE: _("Client left"),
    UsageLog.Status.UPSTREAM_ERROR: _("Upstream failed"),
    UsageLog.Status.FAILED: _("Failed (no charge)"),
}


@dataclass(frozen=True)
class LogFilter:
    """What the person asked to see. Dates are whole days in the site's time zone, both
    ends included; empty fields filter nothing."""

    start: date | None = None
    end: date | None = None
    api_key_id: int | None = None
    model: str = ""
    kind: str = ""

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        """[from, until) as aware datetimes."""
        zone = timezone.get_current_timezone()
        since = datetime.combine(self.start, time.min, tzinfo=zone) if self.start else None
        until = (
            datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=zone)
            if self.end
            else None
        )
        return since, until


@dataclass
class Page:
    """One page of rows, newest first, and the cursors to its neighbours (None: no more)."""

    rows: list[Any]
    older: int | None = None  # pass as ?before=
    newer: int | None = None  # pass as ?after=
    totals: dict[str, Any] = field(default_factory=dict)


def key_names(user_id: int) -> dict[int, str]:
    """The user's keys, id -> name (a person has a handful; no join per row)."""
    return {
        key_id: name or hint
        for key_id, name, hint in ApiKey.objects.filter(user_id=user_id)
        .order_by("name", "id")
        .values_list("id", "name", "hint")
    }


def calls(user_id: int, wanted: LogFilter) -> QuerySet[UsageLog]:
    """The user's calls that match ``wanted``, in no particular order."""
    rows = UsageLog.objects.filter(user_id=user_id)
    since, until = wanted.time_range()
    if since or until:
        lower, upper = _id_bounds(user_id, since, until)
        if lower is None:  # no call at all in the (widened) range
            return rows.none()
        rows = rows.filter(id__gte=lower, id__lte=upper)
        if since:
            rows = rows.filter(created_at__gte=since)
        if until:
            rows = rows.filter(created_at__lt=until)
    if wanted.api_key_id:
        rows = rows.filter(api_key_id=wanted.api_key_id)
    if wanted.model:
        rows = rows.filter(model=wanted.model)
    return rows


def movements(user_id: int, wanted: LogFilter) -> QuerySet[LedgerEntry]:
    """The user's ledger rows that match ``wanted`` (a person has few: no id bounds needed)."""
    rows = LedgerEntry.objects.filter(user_id=user_id)
    since, until = wanted.time_range()
    if since:
        rows = rows.filter(created_at__gte=since)
    if until:
        rows = rows.filter(created_at__lt=until)
    if wanted.api_key_id:
        rows = rows.filter(api_key_id=wanted.api_key_id)
    if wanted.kind:
        rows = rows.filter(kind=wanted.kind)
    return rows


def _id_bounds(
    user_id: int, since: datetime | None, until: datetime | None
) -> tuple[int | None, int | None]:
    """Ids that enclose every call of the user in [since, until), read from the
    ``(user, created_at)`` index; (None, None) when nothing is near the range."""
    near = UsageLog.objects.filter(user_id=user_id)
    if since:
        near = near.filter(created_at__gte=since - ID_BOUND_SLACK)
    if until:
        near = near.filter(created_at__lt=until + ID_BOUND_SLACK)
    lower = near.order_by("created_at").values_list("id", flat=True).first()
    if lower is None:
        return None, None
    upper = near.order_by("-created_at").values_list("id", flat=True).first()
    # The first and last rows by time bound the ids only roughly (see ID_BOUND_SLACK): the
    # widened range's ends are far enough from the asked range's that no row inside it has an
    # id beyond them, unless a row's id and time disagree by more than the slack.
    return lower, upper


def page(rows: QuerySet[Any], *, before: int | None = None, after: int | None = None) -> Page:
    """``PAGE_SIZE`` rows newest first: those older than ``before``, or the ones just newer
    than ``after`` (going back towards the newest), or the newest."""
    if after is not None:
        newer_first = list(rows.filter(id__gt=after).order_by("id")[: PAGE_SIZE + 1])
        more_newer = len(newer_first) > PAGE_SIZE
        found = list(reversed(newer_first[:PAGE_SIZE]))
        more_older = rows.filter(id__lte=after).exists()
    else:
        if before is not None:
            rows_here = rows.filter(id__lt=before)
        else:
            rows_here = rows
        found = list(rows_here.order_by("-id")[: PAGE_SIZE + 1])
        more_older = len(found) > PAGE_SIZE
        found = found[:PAGE_SIZE]
        more_newer = before is not None and rows.filter(id__gte=before).exists()
    return Page(
        rows=found,
        older=found[-1].id if found and more_older else None,
        newer=found[0].id if found and more_newer else None,
    )


def call_totals(rows: QuerySet[UsageLog]) -> dict[str, Any]:
    """Calls, tokens and cost of every row that matches (not just the page)."""
    sums = rows.aggregate(
        calls=Count("id"),
        input_tokens=Sum("input_tokens"),
        cached_input_tokens=Sum("cached_input_tokens"),
        output_tokens=Sum("output_tokens"),
        quota=Sum("quota"),
    )
    return {name: value or 0 for name, value in sums.items()}


def movement_totals(rows: QuerySet[LedgerEntry]) -> dict[str, Any]:
    """How many movements match and what they add up to."""
    sums = rows.aggregate(entries=Count("id"), amount=Sum("amount"))
    return {name: value or 0 for name, value in sums.items()}


def models_used(user_id: int) -> list[str]:
    """The model names in the user's calls, for the filter's choices (a loose index scan on
    ``(user, model)``: one probe per distinct name, however many calls)."""
    return list(_distinct_models(user_id))


def _distinct_models(user_id: int) -> Iterator[str]:
    # SELECT DISTINCT would read every one of the user's rows; stepping from one name to the
    # next through the (user, model, -id) index reads one row per name.
    model = ""
    base = UsageLog.objects.filter(user_id=user_id)
    for _step in range(200):  # the filter's list stays short even for a strange client
        found = (
            base.filter(model__gt=model).order_by("model").values_list("model", flat=True).first()
        )
        if found is None:
            return
        yield found
        model = found


# --- CSV export ------------------------------------------------------------------------------

CALL_COLUMNS = (
    "time",
    "key",
    "model",
    "endpoint",
    "stream",
    "status",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "quota",
    "latency_ms",
)
LEDGER_COLUMNS = ("time", "kind", "amount_usd", "quota", "key", "note")


def in_chunks(rows: QuerySet[Any], fields: tuple[str, ...]) -> Iterator[list[tuple]]:
    """Every matching row's ``fields``, newest first, ``EXPORT_CHUNK`` at a time by keyset on
    id: one short query per chunk, never the whole result in memory."""
    before: int | None = None
    while True:
        chunk_rows = rows if before is None else rows.filter(id__lt=before)
        chunk = list(chunk_rows.order_by("-id").values_list("id", *fields)[:EXPORT_CHUNK])
        if not chunk:
            return
        yield chunk
        if len(chunk) < EXPORT_CHUNK:
            return
        before = chunk[-1][0]


CALL_FIELDS = (
    "created_at",
    "api_key_id",
    "model",
    "endpoint",
    "is_stream",
    "status",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "quota",
    "latency_ms",
)
LEDGER_FIELDS = ("created_at", "kind", "amount", "api_key_id", "note")


def call_record(row: tuple, names: dict[int, str]) -> list[Any]:
    """One CSV line of a call, from ``in_chunks(..., CALL_FIELDS)``."""
    (_id, created, key_id, model, endpoint, stream, status, *tokens, quota, latency) = row
    return [
        _iso(created),
        _cell(names.get(key_id, "")),
        _cell(model),
        endpoint,
        "yes" if stream else "no",
        status,
        *tokens,
        to_dollars(quota),
        quota,
        latency,
    ]


def movement_record(row: tuple, names: dict[int, str]) -> list[Any]:
    """One CSV line of a ledger movement, from ``in_chunks(..., LEDGER_FIELDS)``."""
    _id, created, kind, amount, key_id, note = row
    key_name = _cell(names.get(key_id, ""))
    return [_iso(created), kind, to_dollars(amount), amount, key_name, _cell(note)]


def _iso(moment: datetime) -> str:
    return timezone.localtime(moment).isoformat(timespec="seconds")


def _cell(text: str) -> str:
    """Text a spreadsheet will not run as a formula (key names and model names come from
    people and clients)."""
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text
