"""Every way money moves. Nothing else in Sluice changes a balance.

Each function is one transaction: the balance and its ledger (or journal) row change together
or not at all. Grants and key limits are conditional UPDATEs; holds are placed, settled and
released by ``apply_batch`` under row locks, each hold's status moving from open exactly once.
Services use plain ``atomic()`` so they compose inside a caller's transaction (Django admin
runs in one).
"""

import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import cache

import psycopg
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from psycopg.types.json import Jsonb

from accounts.models import ApiKey, User
from billing.models import Hold, LedgerEntry, UsageLog
from billing.pricing import Price, TokenUsage


class InsufficientQuota(Exception):
    """A hold could not be placed. ``limit`` says which: "balance" or "key"; ``spent``,
    whether that limit is at or below zero (not merely short of this call's hold)."""

    def __init__(self, limit: str, *, spent: bool = False):
        super().__init__(limit)
        self.limit = limit
        self.spent = spent


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


def spent_limit(*, user_id: int, api_key_id: int) -> str | None:
    """Which limit is at or below zero, if one is: "balance" (the user's) or "key" (the key's
    own allowance, which matters only for a limited key). A read, for refusing a call before
    its body is read; the hold itself is what decides."""
    if not User.objects.filter(id=user_id, quota__gt=0).exists():
        return "balance"
    key = ApiKey.objects.filter(id=api_key_id).values("unlimited_quota", "remaining_quota").first()
    if key and not key["unlimited_quota"] and key["remaining_quota"] <= 0:
        return "key"
    return None


# The hot path's operations: Reserve (place a hold), Settle, Release. ``apply_batch`` runs any
# number of them in one transaction (billing.writer batches the relay's calls this way);
# reserve_quota, settle_hold and release_hold run one alone.
#
# How a batch works: it locks the holds it closes, then the users, then the keys involved, each
# in id order (every writer locks in this order, so two batches can never deadlock), and reads
# their balances. Each operation is then decided in Python, in arrival order, against those
# locked balances, exactly as a conditional UPDATE would decide it, and the changes are written
# back table by table in the same order. A refusal changes nothing, so a batch never needs a
# savepoint.


@dataclass
class Reserve:
    """Set ``amount`` aside for a call, from the balance and the key's allowance, or refuse.

    The balance must cover it and be above zero (checked even for a free call, which holds
    nothing); so must a limited key's allowance. With ``minimum`` set, less is taken when
    less is there: as much as the balance and the allowance both cover, if that is at least
    ``minimum`` (the call then asks the upstream for less output). Result: the open ``Hold``
    (its ``amount`` says what was taken), or ``InsufficientQuota`` naming the limit.
    """

    user_id: int
    api_key_id: int
    unlimited_key: bool
    amount: int
    minimum: int | None = None


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
    service_tier: str = ""
    usage_flag: str = UsageLog.UsageFlag.TRUSTED
    reported_usage: dict | None = None  # the upstream's raw figures when they were not billed


@dataclass
class Settle:
    """Turn a hold into its exact charge, once, with its journal row. Result: the quota
    charged, or None if the hold was settled before.

    A hold the expiry sweep already released (the call outlived HOLD_TTL_SECONDS) is still
    charged in full, since the call did happen; a hold settled before is never charged again.
    """

    hold: Hold
    price: Price
    group_ratio: object
    usage: TokenUsage
    call: CallRecord
    cost: int | None = None  # charged instead of the price's figure (a delivered hold's)


@dataclass
class Release:
    """Give an open hold back in full, once (the call failed before anything was used).
    Result: whether this released it."""

    hold: Hold


@dataclass
class Deliver:
    """Mark an open hold as delivered-but-unsettled, with what it should cost, when its
    settlement could not be written; the expiry sweep then charges it (``settle_delivered``)
    instead of releasing it. Result: whether this marked it."""

    hold: Hold
    quota: int


class _Books:
    """One batch's view of the rows it locked, and the changes it will write back."""

    def __init__(self, users: dict, keys: dict, holds: dict):
        self.users, self.keys, self.holds = users, keys, holds  # id -> balance / hold status
        self.user_changes = defaultdict(lambda: [0, 0, 0])  # id -> [quota, used, requests]
        self.key_changes = defaultdict(lambda: [0, 0, False])  # id -> [remaining, used, used now]
        self.closed: dict[int, str] = {}  # hold id -> its new status
        self.delivered: dict[int, int] = {}  # hold id -> the cost of its delivered answer
        self.new_holds: list[Hold] = []
        self.journal: list[dict] = []

    def give(self, user_id, key_id, amount, key_amount) -> None:
        self.users[user_id] = self.users.get(user_id, 0) + amount
        self.user_changes[user_id][0] += amount
        if key_amount:
            self.keys[key_id] = self.keys.get(key_id, 0) + key_amount
            self.key_changes[key_id][0] += key_amount

    def reserve(self, op: Reserve):
        least = op.amount if op.minimum is None else min(op.minimum, op.amount)
        balance = self.users.get(op.user_id)
        if balance is None or balance < least or balance <= 0:
            return InsufficientQuota("balance", spent=balance is None or balance <= 0)
        amount = min(op.amount, balance)
        if not op.unlimited_key:
            remaining = self.keys.get(op.api_key_id)
            if remaining is None or remaining < least or remaining <= 0:
                return InsufficientQuota("key", spent=remaining is None or remaining <= 0)
            amount = min(amount, remaining)
        key_amount = 0 if op.unlimited_key else amount
        self.give(op.user_id, op.api_key_id, -amount, -key_amount)
        now = timezone.now()
        hold = Hold(
            user_id=op.user_id,
            api_key_id=op.api_key_id,
            amount=amount,
            key_amount=key_amount,
            status=Hold.Status.OPEN,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.HOLD_TTL_SECONDS),
        )
        self.new_holds.append(hold)
        return hold

    def settle(self, op: Settle):
        hold = op.hold
        status = self.holds.get(hold.id)
        if status in (Hold.Status.OPEN, Hold.Status.DELIVERED):
            returned, key_returned = hold.amount, hold.key_amount
        elif status == Hold.Status.RELEASED:
            returned, key_returned = 0, 0
        else:
            return None
        self.holds[hold.id] = self.closed[hold.id] = Hold.Status.SETTLED
        cost = op.price.charge(op.usage, op.group_ratio) if op.cost is None else op.cost
        # A limited key pays from its allowance too; an unlimited key's hold took nothing.
        key_cost = cost if hold.key_amount else 0
        self.give(hold.user_id, hold.api_key_id, returned - cost, key_returned - key_cost)
        self.user_changes[hold.user_id][1] += cost
        self.user_changes[hold.user_id][2] += 1
        key = self.key_changes[hold.api_key_id]
        key[1] += cost
        key[2] = True
        usage, call, price = op.usage, op.call, op.price
        self.journal.append(
            {
                "user_id": hold.user_id,
                "api_key_id": hold.api_key_id,
                "hold_id": hold.id,
                "channel_id": call.channel_id,
                "endpoint": call.endpoint[:32],
                "model": call.model[:128],
                "upstream_model": call.upstream_model[:128],
                "is_stream": call.is_stream,
                "status": call.status,
                **{name: _storable_count(getattr(usage, name)) for name in TOKEN_COLUMNS},
                "service_tier": call.service_tier[:16],
                "usage_flag": call.usage_flag,
                "reported_usage": call.reported_usage,
                "quota": cost,
                "key_quota": key_cost,
                "group_ratio": op.group_ratio,
                "model_ratio": price.model_ratio,
                "completion_ratio": price.completion_ratio,
                "cache_read_ratio": price.cache_read_ratio,
                "cache_write_ratio": price.cache_write_ratio,
                "per_call_quota": price.per_call_quota,
                "latency_ms": min(max(call.latency_ms, 0), 2**31 - 1),
                "client_ip": _storable_ip(call.client_ip),
            }
        )
        return cost

    def deliver(self, op: Deliver) -> bool:
        hold = op.hold
        if self.holds.get(hold.id) != Hold.Status.OPEN:
            return False
        self.holds[hold.id] = self.closed[hold.id] = Hold.Status.DELIVERED
        self.delivered[hold.id] = op.quota
        return True

    def release(self, op: Release) -> bool:
        hold = op.hold
        if self.holds.get(hold.id) != Hold.Status.OPEN:
            return False
        self.holds[hold.id] = self.closed[hold.id] = Hold.Status.RELEASED
        self.give(hold.user_id, hold.api_key_id, hold.amount, hold.key_amount)
        return True


def apply_batch(operations: list) -> list:
    """Run Reserve / Settle / Release operations in one transaction; their results, in order.

    A refusal (``InsufficientQuota``) is a result, not an exception: it changes nothing and the
    others still commit. A database error fails the whole batch (nothing of it commits).
    """
    closing = [op.hold for op in operations if not isinstance(op, Reserve)]
    user_ids = {op.user_id for op in operations if isinstance(op, Reserve)}
    user_ids |= {hold.user_id for hold in closing}
    key_ids = {op.api_key_id for op in operations if isinstance(op, Reserve)}
    key_ids |= {hold.api_key_id for hold in closing if hold.api_key_id}
    locks = [
        (HOLD, "status", {hold.id for hold in closing}),
        (USER, "quota", user_ids),
        (KEY, "remaining_quota", key_ids),
    ]
    run = _run_on_postgres if connection.vendor == "postgresql" else _run_on_sqlite
    return run(operations, locks, reserves_only=not closing)


def _decide(operations, holds, users, keys) -> tuple[list, "_Books"]:
    books = _Books(holds=holds, users=users, keys=keys)
    results = []
    for op in operations:
        if isinstance(op, Reserve):
            results.append(books.reserve(op))
        elif isinstance(op, Settle):
            results.append(books.settle(op))
        elif isinstance(op, Deliver):
            results.append(books.deliver(op))
        else:
            results.append(books.release(op))
    return results, books


def _changes(books: "_Books", now, journal_values) -> list[tuple[str, list]]:
    """The batch's writes as (statement, rows) pairs, each statement run once per row."""
    statements = []
    if books.closed:
        statements.append(
            (
                f"UPDATE {HOLD} SET status = %s, closed_at = %s,"
                " delivered_quota = COALESCE(%s, delivered_quota) WHERE id = %s",
                [
                    [
                        status,
                        None if status == Hold.Status.DELIVERED else now,
                        books.delivered.get(i),
                        i,
                    ]
                    for i, status in sorted(books.closed.items())
                ],
            )
        )
    if books.user_changes:
        statements.append(
            (
                f"UPDATE {USER} SET quota = quota + %s, used_quota = used_quota + %s,"
                " request_count = request_count + %s WHERE id = %s",
                [[*change, i] for i, change in sorted(books.user_changes.items())],
            )
        )
    if books.key_changes:
        statements.append(
            (
                f"UPDATE {KEY} SET remaining_quota = remaining_quota + %s,"
                " used_quota = used_quota + %s, last_used_at = COALESCE(%s, last_used_at)"
                " WHERE id = %s",
                [
                    [remaining, used, now if used_now else None, i]
                    for i, (remaining, used, used_now) in sorted(books.key_changes.items())
                ],
            )
        )
    if books.journal:
        rows = [journal_values(UsageLog, row) for row in books.journal]
        statements.append((_insert_sql(UsageLog), rows))
    return statements


def _run_on_postgres(operations, locks, *, reserves_only: bool) -> list:
    """Two round trips: the locked reads, then every write with the COMMIT (pipeline mode).

    The cursors bind parameters on the server: Django's default cursor quotes each value into
    the SQL text in Python, which for a batch's hundreds of values cost more than the rest.
    """
    connection.ensure_connection()
    conn = connection.connection
    now = timezone.now()
    with conn.pipeline():
        with conn.transaction():
            if reserves_only:
                _commit_without_waiting_for_disk(conn)
            readers = []
            for table, column, ids in locks:
                reader = psycopg.Cursor(conn)
                if ids:
                    reader.execute(
                        f"SELECT id, {column} FROM {table} WHERE id = ANY(%s)"
                        " ORDER BY id FOR UPDATE",
                        [sorted(ids)],
                    )
                readers.append(reader)
            holds, users, keys = (
                dict(reader.fetchall()) if ids else {}
                for reader, (_, _, ids) in zip(readers, locks, strict=True)
            )
            results, books = _decide(operations, holds, users, keys)
            for row in books.journal:
                row["created_at"] = now
            writer = psycopg.Cursor(conn)
            for sql, rows in _changes(books, now, _values):
                writer.executemany(sql, rows)
            inserter = psycopg.Cursor(conn)
            if books.new_holds:
                inserter.executemany(
                    _insert_sql(Hold) + " RETURNING id",
                    [_values(Hold, _row(hold)) for hold in books.new_holds],
                    returning=True,
                )
    # The transaction has committed; the new holds' ids were answered along with it.
    for index, hold in enumerate(books.new_holds):
        if index:
            inserter.nextset()
        hold.id = inserter.fetchone()[0]
        hold._state.adding = False
    return results


def _run_on_sqlite(operations, locks, *, reserves_only: bool) -> list:
    """Row by row: SQLite is the embedded, single-process default, and its IMMEDIATE
    transactions take the whole database, so there is nothing to lock row by row."""
    now = timezone.now()
    db_now = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic(), connection.cursor() as cursor:
        read = []
        for table, column, ids in locks:
            marks = ", ".join(["%s"] * len(ids))
            if ids:
                cursor.execute(f"SELECT id, {column} FROM {table} WHERE id IN ({marks})", list(ids))
            read.append(dict(cursor.fetchall()) if ids else {})
        results, books = _decide(operations, *read)
        for row in books.journal:
            row["created_at"] = now
        for sql, rows in _changes(books, db_now, _prepared_row):
            cursor.executemany(sql, rows)
        for hold in books.new_holds:
            cursor.execute(_insert_sql(Hold), _prepared_row(Hold, _row(hold)))
            hold.id = cursor.lastrowid
            hold._state.adding = False
    return results


def _one(operation):
    [result] = apply_batch([operation])
    if isinstance(result, Exception):
        raise result
    return result


def reserve_quota(*, user_id: int, api_key_id: int, unlimited_key: bool, amount: int) -> Hold:
    """Place a hold (see ``Reserve``), alone in its transaction; raises InsufficientQuota."""
    return _one(Reserve(user_id, api_key_id, unlimited_key, amount))


def settle_hold(
    *, hold: Hold, price: Price, group_ratio, usage: TokenUsage, call: CallRecord
) -> UsageLog | None:
    """Settle a hold (see ``Settle``), alone in its transaction: its journal row, or None."""
    if _one(Settle(hold, price, group_ratio, usage, call)) is None:
        return None
    return UsageLog.objects.get(hold_id=hold.id)


def release_hold(*, hold_id: int) -> bool:
    """Release an open hold (see ``Release``), alone in its transaction."""
    hold = Hold.objects.filter(id=hold_id).first()
    return hold is not None and _one(Release(hold))


# The batch's statements are plain SQL: building them with the ORM cost more CPU than running
# them (bench/README.md). Table and column names come from the models. Each kind of change is
# one statement run for every row (executemany); on PostgreSQL they go out in pipeline mode
# with server-side parameters, so a whole batch costs two round trips.
USER, KEY, HOLD = User._meta.db_table, ApiKey._meta.db_table, Hold._meta.db_table


@cache
def _columns(model) -> list:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


@cache
def _insert_sql(model) -> str:
    fields = _columns(model)
    return (
        f"INSERT INTO {model._meta.db_table} ({', '.join(f.column for f in fields)})"
        f" VALUES ({', '.join(['%s'] * len(fields))})"
    )


TOKEN_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "web_search_calls",
)
# A journal row must always be writable, whatever figures reached it: a settlement that fails
# on a value would leave a delivered answer unbilled.
LARGEST_COUNT = 2**62


def _storable_count(value) -> int:
    return min(max(int(value), 0), LARGEST_COUNT)


def _storable_ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def _row(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in _columns(type(instance))}


def _values(model, row: dict) -> list:
    """A row's values in column order; psycopg adapts them (aware datetimes, Decimals) itself,
    JSON apart."""
    return [
        Jsonb(row[f.attname]) if f.attname in _json_columns(model) else row[f.attname]
        for f in _columns(model)
    ]


@cache
def _json_columns(model) -> frozenset:
    return frozenset(f.attname for f in _columns(model) if isinstance(f, models.JSONField))


def _prepared_row(model, row: dict) -> list:
    """A row's values in column order, prepared for the database as the ORM would (SQLite)."""
    return [f.get_db_prep_save(row[f.attname], connection) for f in _columns(model)]


def _commit_without_waiting_for_disk(conn) -> None:
    """Let PostgreSQL acknowledge this transaction before its WAL reaches the disk.

    Only for a batch of reserves and nothing else: a crash can lose such a transaction,
    but only whole, and losing holds together with their decrements leaves the books exact
    (none of those calls was answered).
    """
    conn.execute("SET LOCAL synchronous_commit TO OFF")


def release_expired_holds(*, now=None) -> int:
    """Release the holds whose calls died with their worker, and charge the ones whose answer
    was delivered but not settled (``settle_delivered_holds``); returns how many released."""
    now = now or timezone.now()
    settle_delivered_holds()
    released = 0
    for hold in Hold.objects.filter(status=Hold.Status.OPEN, expires_at__lt=now):
        released += _one(Release(hold))
    return released


# What a delivered hold's journal row records: its cost is the one the call computed.
_UNPRICED = Price(
    model="",
    model_ratio=Decimal(0),
    completion_ratio=Decimal(0),
    cache_read_ratio=Decimal(0),
    cache_write_ratio=Decimal(0),
    per_call_quota=None,
    is_free=False,
    max_output_tokens=0,
)


def settle_delivered_holds() -> int:
    """Charge every hold whose answer was delivered but whose settlement failed, at the cost
    its call computed (the held amount if it recorded none), each once; returns how many."""
    settled = 0
    for hold in Hold.objects.filter(status=Hold.Status.DELIVERED):
        cost = hold.delivered_quota if hold.delivered_quota is not None else hold.amount
        record = CallRecord(endpoint="", model="", usage_flag=UsageLog.UsageFlag.SETTLED_LATE)
        settled += _one(Settle(hold, _UNPRICED, Decimal(1), TokenUsage(), record, cost)) is not None
    return settled


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
        # A delivered hold still holds its money until the sweep settles it.
        open_holds = Hold.objects.filter(status__in=[Hold.Status.OPEN, Hold.Status.DELIVERED])
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
