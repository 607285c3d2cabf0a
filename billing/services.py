"""Every way money moves. Nothing else in Sluice changes a balance.

Each function is one transaction: the balance and its ledger (or journal) row change together
or not at all. Concurrency is settled by conditional UPDATEs whose row counts say who won, and
by status transitions (``filter(status=OPEN).update(...)``) that let exactly one caller settle
or release a hold. Services use plain ``atomic()`` so they compose inside a caller's
transaction (Django admin runs in one).
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import ApiKey, User
from billing.models import Hold, LedgerEntry, UsageLog
from billing.pricing import Price, TokenUsage


class InsufficientQuota(Exception):
    """A hold could not be placed. ``limit`` says which: "balance" or "key"."""

    def __init__(self, limit: str):
        super().__init__(limit)
        self.limit = limit


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


def reserve_quota(*, user_id: int, api_key_id: int, unlimited_key: bool, amount: int) -> Hold:
    """Set ``amount`` aside for a call, from the balance and the key's allowance, or refuse.

    The balance must cover it and be above zero (checked even for a free call, which holds
    nothing); so must a limited key's allowance. Both decrements are conditional UPDATEs in one
    transaction, so concurrent calls can never take more than is there.
    """
    now = timezone.now()
    hold = Hold(
        user_id=user_id,
        api_key_id=api_key_id,
        amount=amount,
        key_amount=0 if unlimited_key else amount,
        status=Hold.Status.OPEN,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.HOLD_TTL_SECONDS),
    )
    with transaction.atomic(), connection.cursor() as cursor:
        _commit_without_waiting_for_disk(cursor)
        if not unlimited_key and not _run(cursor, TAKE_FROM_KEY, amount, api_key_id, amount):
            raise InsufficientQuota("key")
        hold.id = _insert(cursor, hold)
        # Last before COMMIT: every call of a user queues on this row's lock, so it is held
        # for the commit alone. A refusal rolls back the key's decrement and the hold with it.
        if not _run(cursor, TAKE_FROM_USER, amount, user_id, amount):
            raise InsufficientQuota("balance")
    hold._state.adding = False
    return hold


# The hot path's statements in plain SQL: building them with the ORM cost more CPU than
# running them (bench/README.md). Table and column names come from the models.
USER, KEY, HOLD = User._meta.db_table, ApiKey._meta.db_table, Hold._meta.db_table
TAKE_FROM_KEY = (
    f"UPDATE {KEY} SET remaining_quota = remaining_quota - %s"
    " WHERE id = %s AND remaining_quota >= %s AND remaining_quota > 0"
)
TAKE_FROM_USER = f"UPDATE {USER} SET quota = quota - %s WHERE id = %s AND quota >= %s AND quota > 0"
CLOSE_HOLD = f"UPDATE {HOLD} SET status = %s, closed_at = %s WHERE id = %s AND status = %s"
CHARGE_KEY = (
    f"UPDATE {KEY} SET remaining_quota = remaining_quota + %s, used_quota = used_quota + %s,"
    " last_used_at = %s WHERE id = %s"
)
CHARGE_USER = (
    f"UPDATE {USER} SET quota = quota + %s, used_quota = used_quota + %s,"
    " request_count = request_count + 1 WHERE id = %s"
)


def _run(cursor, sql: str, *params) -> int:
    """Execute one statement; returns how many rows it changed."""
    cursor.execute(sql, params)
    return cursor.rowcount


def _insert(cursor, row) -> int:
    """INSERT a new model instance's concrete fields (prepared as the ORM would); its id."""
    fields = [f for f in row._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
    sql = (
        f"INSERT INTO {row._meta.db_table} ({', '.join(f.column for f in fields)})"
        f" VALUES ({', '.join(['%s'] * len(fields))})"
    )
    if connection.features.can_return_columns_from_insert:
        cursor.execute(sql + " RETURNING id", values)
        return cursor.fetchone()[0]
    cursor.execute(sql, values)
    return cursor.lastrowid


def _commit_without_waiting_for_disk(cursor) -> None:
    """Let PostgreSQL acknowledge this transaction before its WAL reaches the disk.

    Only for reserve_quota: a crash can lose such a transaction, but only whole, and losing a
    hold together with its decrement leaves the books exact (the call was never answered).
    """
    if connection.vendor == "postgresql":
        cursor.execute("SET LOCAL synchronous_commit TO OFF")


@dataclass(frozen=True)
class CallRecord:
    """What the relay knows about a finished call, for its journal row."""

    endpoint: str
    model: str
    upstream_model: str = ""
    channel_id: int | None = None
    is_stream: bool = False
    status: str = UsageLog.Status.SUCCESS
    latency_ms: int = 0
    client_ip: str | None = None


def settle_hold(
    *, hold: Hold, price: Price, group_ratio, usage: TokenUsage, call: CallRecord
) -> UsageLog | None:
    """Turn a hold into its exact charge, once: returns the journal row, or None if settled.

    A hold the expiry sweep already released (the call outlived HOLD_TTL_SECONDS) is still
    charged in full, since the call did happen; a hold settled before is never charged again.
    """
    cost = price.charge(usage, group_ratio)
    # A limited key pays from its allowance too; an unlimited key's hold took nothing from it.
    key_cost = cost if hold.key_amount else 0
    now = timezone.now()
    db_now = connection.ops.adapt_datetimefield_value(now)
    journal_row = UsageLog(
        created_at=now,
        user_id=hold.user_id,
        api_key_id=hold.api_key_id,
        hold_id=hold.id,
        channel_id=call.channel_id,
        endpoint=call.endpoint,
        model=call.model,
        upstream_model=call.upstream_model,
        is_stream=call.is_stream,
        status=call.status,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        quota=cost,
        key_quota=key_cost,
        group_ratio=group_ratio,
        model_ratio=price.model_ratio,
        completion_ratio=price.completion_ratio,
        cache_read_ratio=price.cache_read_ratio,
        cache_write_ratio=price.cache_write_ratio,
        per_call_quota=price.per_call_quota,
        latency_ms=call.latency_ms,
        client_ip=call.client_ip,
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if _run(cursor, CLOSE_HOLD, Hold.Status.SETTLED, db_now, hold.id, Hold.Status.OPEN):
            returned, key_returned = hold.amount, hold.key_amount
        elif _run(cursor, CLOSE_HOLD, Hold.Status.SETTLED, db_now, hold.id, Hold.Status.RELEASED):
            returned, key_returned = 0, 0
        else:
            return None
        _run(cursor, CHARGE_KEY, key_returned - key_cost, cost, db_now, hold.api_key_id)
        journal_row.id = _insert(cursor, journal_row)
        # The user's row last, so its lock (which all of the user's calls queue on) is held
        # only until COMMIT. Key before user everywhere, so two transactions never deadlock.
        _run(cursor, CHARGE_USER, returned - cost, cost, hold.user_id)
    journal_row._state.adding = False
    return journal_row


def release_hold(*, hold_id: int) -> bool:
    """Give a hold back in full, once (the call failed before anything was used)."""
    with transaction.atomic():
        hold = Hold.objects.filter(id=hold_id, status=Hold.Status.OPEN).first()
        if hold is None:
            return False
        return _release(hold)


def _release(hold: Hold) -> bool:
    if not Hold.objects.filter(id=hold.id, status=Hold.Status.OPEN).update(
        status=Hold.Status.RELEASED, closed_at=timezone.now()
    ):
        return False
    if hold.key_amount:
        ApiKey.objects.filter(id=hold.api_key_id).update(
            remaining_quota=F("remaining_quota") + hold.key_amount
        )
    User.objects.filter(id=hold.user_id).update(quota=F("quota") + hold.amount)
    return True


def release_expired_holds(*, now=None) -> int:
    """Release the holds whose calls died with their worker; returns how many."""
    now = now or timezone.now()
    released = 0
    for hold in Hold.objects.filter(status=Hold.Status.OPEN, expires_at__lt=now):
        with transaction.atomic():
            released += _release(hold)
    return released


@dataclass(frozen=True)
class Discrepancy:
    """An account whose books do not balance."""

    kind: str  # "user" or "key"
    id: int
    balance: int
    open_holds: int
    ledger: int
    journal: int

    def __str__(self):
        return (
            f"{self.kind} {self.id}: balance {self.balance} + open holds {self.open_holds} "
            f"!= ledger {self.ledger} - consumption {self.journal}"
        )


def _sums(queryset, group_field: str, value_field: str) -> dict[int, int]:
    rows = queryset.values(group_field).annotate(total=Coalesce(Sum(value_field), 0))
    return {row[group_field]: row["total"] for row in rows}


def reconcile() -> list[Discrepancy]:
    """Every user and key for which balance + open holds != ledger - consumption."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            # Every query below must see the same moment, or calls settling meanwhile would
            # show up as discrepancies that are not there.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        open_holds = Hold.objects.filter(status=Hold.Status.OPEN)
        user_holds = _sums(open_holds, "user_id", "amount")
        key_holds = _sums(open_holds.exclude(api_key=None), "api_key_id", "key_amount")
        user_ledger = _sums(LedgerEntry.objects.all(), "user_id", "amount")
        key_ledger = _sums(LedgerEntry.objects.exclude(api_key=None), "api_key_id", "key_amount")
        user_journal = _sums(UsageLog.objects.all(), "user_id", "quota")
        key_journal = _sums(UsageLog.objects.exclude(api_key=None), "api_key_id", "key_quota")
        problems = []
        for user_id, balance in User.objects.values_list("id", "quota"):
            entry = Discrepancy(
                "user",
                user_id,
                balance,
                user_holds.get(user_id, 0),
                user_ledger.get(user_id, 0),
                user_journal.get(user_id, 0),
            )
            if entry.balance + entry.open_holds != entry.ledger - entry.journal:
                problems.append(entry)
        for key_id, remaining in ApiKey.objects.values_list("id", "remaining_quota"):
            entry = Discrepancy(
                "key",
                key_id,
                remaining,
                key_holds.get(key_id, 0),
                key_ledger.get(key_id, 0),
                key_journal.get(key_id, 0),
            )
            if entry.balance + entry.open_holds != entry.ledger - entry.journal:
                problems.append(entry)
    return problems
