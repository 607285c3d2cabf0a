"""The hot path's books: any number of operations decided and written in one transaction.

``apply_batch`` runs Reserve / Settle / Release / Deliver operations (billing.operations) in one
transaction; billing.writer batches the relay's calls this way, and the services in
billing.services run one alone.
"""

import contextlib
import ipaddress
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, assert_never

import psycopg
from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from billing.balances import KEY_TABLE, USER_TABLE
from billing.models import Hold, UsageLog
from billing.operations import (
    CallRecord,
    Deliver,
    HeldQuota,
    InsufficientQuota,
    Operation,
    Outcome,
    Release,
    Reserve,
    Settle,
)
from billing.pricing import UNPRICED, Price, TokenUsage

HOLD_TABLE = Hold._meta.db_table

# (table, the column read under lock, the ids to lock), in the lock order below.
Locks = list[tuple[str, str, set[int]]]
# A placed hold's row, until the database gives it an id and it becomes a HeldQuota.
HoldRow = dict[str, Any]


# How a batch works: it locks the holds it closes, then the users, then the keys involved, each
# in id order (every writer locks in this order, so two batches can never deadlock), and reads
# their balances. Each operation is then decided in Python, in arrival order, against those
# locked balances, exactly as a conditional UPDATE would decide it, and the changes are written
# back table by table in the same order. A refusal changes nothing, so a batch never needs a
# savepoint.
def apply_batch(operations: Sequence[Operation], *, durable: bool = True) -> list[Outcome]:
    """Run the operations in one transaction; their outcomes, in order.

    A refusal (``InsufficientQuota``) is an outcome, not an exception: it changes nothing and
    the others still commit. A database error fails the whole batch (nothing of it commits).
    ``durable=False``: on PostgreSQL, the commit does not wait for the disk (the ledger writer
    asks for it when billing.journal keeps the batch's settlements until the disk has them).
    """
    closing = [op.hold for op in operations if not isinstance(op, Reserve)]
    reserves = [op for op in operations if isinstance(op, Reserve)]
    user_ids = {op.user_id for op in reserves} | {hold.user_id for hold in closing}
    key_ids = {op.api_key_id for op in reserves}
    key_ids |= {hold.api_key_id for hold in closing if hold.api_key_id}
    locks: Locks = [
        (HOLD_TABLE, HOLD_COLUMNS, {hold.id for hold in closing}),
        (USER_TABLE, "quota", user_ids),
        (KEY_TABLE, KEY_LOCK_COLUMN, key_ids),
    ]
    run = _run_on_postgres if connection.vendor == "postgresql" else _run_on_sqlite
    return run(operations, locks, wait_for_disk=durable and bool(closing))


# What a batch reads of each hold it closes: its status, and what tells it from another hold
# (a replayed settlement checks it is settling the same hold).
HOLD_COLUMNS = "status, user_id, amount, expires_at"
HoldIdentity = tuple[int, int, datetime]  # user id, amount, expiry


# A key's lock reads its balance and whether it is carved (a sub-key with a balance of its
# own, accounts.ApiKey.carved) in the one value the read returns per row: twice the balance,
# plus one when carved. ``_Books`` splits it (``>> 1`` and ``& 1`` are exact for negative
# balances too). The same read, so a carved key costs the batch no extra round trip.
KEY_LOCK_COLUMN = "remaining_quota * 2 + CASE WHEN carved THEN 1 ELSE 0 END"


class _Books:
    """One batch's view of the rows it locked, and the changes it will write back."""

    def __init__(
        self,
        *,
        holds: list[tuple],
        users: dict[int, int],
        keys: dict[int, int],
        now: datetime,
    ):
        self.holds = {row[0]: row[1] for row in holds}  # id -> status
        self.identities: dict[int, HoldIdentity] = {row[0]: tuple(row[2:]) for row in holds}
        self.users = users  # id -> balance
        self.keys = {key_id: read >> 1 for key_id, read in keys.items()}  # id -> balance
        self.carved = {key_id for key_id, read in keys.items() if read & 1}
        self.now = now
        self.user_changes: defaultdict[int, list[int]] = defaultdict(
            lambda: [0, 0, 0]  # id -> [quota, used, requests]
        )
        self.key_changes: defaultdict[int, list[Any]] = defaultdict(
            lambda: [0, 0, False]  # id -> [remaining, used, used now]
        )
        self.closed: dict[int, str] = {}  # hold id -> its new status
        self.delivered: dict[int, int] = {}  # hold id -> the cost of its delivered answer
        self.new_holds: list[HoldRow] = []
        self.journal: list[dict[str, Any]] = []

    def give(self, user_id: int, key_id: int | None, amount: int, key_amount: int) -> None:
        self.users[user_id] = self.users.get(user_id, 0) + amount
        self.user_changes[user_id][0] += amount
        if key_amount and key_id is not None:
            self.keys[key_id] = self.keys.get(key_id, 0) + key_amount
            self.key_changes[key_id][0] += key_amount

    def reserve(self, op: Reserve) -> HoldRow | InsufficientQuota:
        least = op.amount if op.minimum is None else min(op.minimum, op.amount)
        if op.api_key_id in self.carved:
            return self._reserve_carved(op, least)
        balance = self.users.get(op.user_id)
        if balance is None or balance < least + op.spare or balance <= 0:
            return InsufficientQuota("balance", spent=balance is None or balance <= 0)
        amount = min(op.amount, balance - op.spare)
        if not op.unlimited_key:
            remaining = self.keys.get(op.api_key_id)
            if remaining is None or remaining < least + op.spare or remaining <= 0:
                return InsufficientQuota("key", spent=remaining is None or remaining <= 0)
            amount = min(amount, remaining - op.spare)
        key_amount = 0 if op.unlimited_key else amount
        self.give(op.user_id, op.api_key_id, -amount, -key_amount)
        return self._hold(op, amount, key_amount)

    def _reserve_carved(self, op: Reserve, least: int) -> HoldRow | InsufficientQuota:
        """A carved key's hold: from the key's own balance alone, whatever its reseller's
        balance is (the reseller's row is locked but never read or changed)."""
        balance = self.keys.get(op.api_key_id)
        if balance is None or balance < least + op.spare or balance <= 0:
            return InsufficientQuota("key", spent=balance is None or balance <= 0)
        amount = min(op.amount, balance - op.spare)
        self.give(op.user_id, op.api_key_id, 0, -amount)
        # The hold takes nothing from the user (``amount`` 0), all of it from the key.
        return self._hold(op, 0, amount)

    def _hold(self, op: Reserve, amount: int, key_amount: int) -> HoldRow:
        row = {
            "user_id": op.user_id,
            "api_key_id": op.api_key_id,
            "amount": amount,
            "key_amount": key_amount,
            "status": Hold.Status.OPEN,
            "created_at": self.now,
            "expires_at": self.now + timedelta(seconds=settings.HOLD_TTL_SECONDS),
            "closed_at": None,
            "delivered_quota": None,
        }
        self.new_holds.append(row)
        return row

    def settle(self, op: Settle) -> int | None:
        hold = op.hold
        status = self.holds.get(hold.id)
        if op.replayed and not self._same_hold(hold):
            # Its placement was lost with the settlement (or the id now names another hold):
            # nothing was taken for the call, so it is charged without a hold.
            returned, key_returned = 0, 0
        elif status in (Hold.Status.OPEN, Hold.Status.DELIVERED):
            returned, key_returned = hold.amount, hold.key_amount
        elif status == Hold.Status.RELEASED:
            returned, key_returned = 0, 0
        else:
            return None
        if op.replayed and not self._same_hold(hold):
            hold = replace(hold, id=0)  # journaled without a hold (hold_id empty)
        else:
            self.holds[hold.id] = self.closed[hold.id] = Hold.Status.SETTLED
        cost = op.price.charge(op.usage, op.group_ratio) if op.cost is None else op.cost
        carved = hold.api_key_id in self.carved
        if carved:  # the key's balance pays it all; the reseller's is not touched
            self.give(hold.user_id, hold.api_key_id, 0, key_returned - cost)
            key_cost = cost
        else:
            # A limited key pays from its allowance too; an unlimited key's hold took nothing.
            key_cost = cost if hold.key_amount else 0
            self.give(hold.user_id, hold.api_key_id, returned - cost, key_returned - key_cost)
            self.user_changes[hold.user_id][1] += cost
            self.user_changes[hold.user_id][2] += 1
        if hold.api_key_id is not None:  # None: the key was deleted since (never a carved one)
            key = self.key_changes[hold.api_key_id]
            key[1] += cost
            key[2] = True
        self._journal(hold, op.call, op.usage, op.price, op.group_ratio, cost, key_cost)
        return cost

    def _same_hold(self, hold: HeldQuota) -> bool:
        found = self.identities.get(hold.id)
        if found is None:
            return False
        user_id, amount, expires_at = found
        same_expiry = not isinstance(expires_at, datetime) or expires_at == hold.expires_at
        return (user_id, amount) == (hold.user_id, hold.amount) and same_expiry

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
        if op.call is not None:
            self._journal(hold, op.call, TokenUsage(), UNPRICED, Decimal(1), 0, 0)
        return True

    def _journal(
        self,
        hold: HeldQuota,
        call: CallRecord,
        usage: TokenUsage,
        price: Price,
        group_ratio: Decimal,
        cost: int,
        key_cost: int,
    ) -> None:
        """The call's usage row, with every value storable whatever reached it."""
        self.journal.append(
            {
                "user_id": hold.user_id,
                "api_key_id": hold.api_key_id,
                "hold_id": hold.id or None,
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
                "group_ratio": group_ratio,
                "model_ratio": price.model_ratio,
                "completion_ratio": price.completion_ratio,
                "cache_read_ratio": price.cache_read_ratio,
                "cache_write_ratio": price.cache_write_ratio,
                "per_call_quota": price.per_call_quota,
                "latency_ms": min(max(call.latency_ms, 0), 2**31 - 1),
                "client_ip": _storable_ip(call.client_ip),
                "error": call.error[:64],
                "carved": hold.api_key_id in self.carved,
                "created_at": self.now,
                "refunded_at": None,  # billing.services.refund_call, later
            }
        )


def _decide(operations: Sequence[Operation], books: _Books) -> list[Outcome | HoldRow]:
    """Each operation's outcome, in order; a placed hold is its row until it has an id."""
    results: list[Outcome | HoldRow] = []
    for op in operations:
        if isinstance(op, Reserve):
            results.append(books.reserve(op))
        elif isinstance(op, Settle):
            results.append(books.settle(op))
        elif isinstance(op, Release):
            results.append(books.release(op))
        elif isinstance(op, Deliver):
            results.append(books.deliver(op))
        else:
            assert_never(op)
    return results


def _outcomes(results: list[Outcome | HoldRow], ids: Iterable[int]) -> list[Outcome]:
    """The batch's outcomes, each placed hold as a ``HeldQuota`` with the id it was given
    (``ids`` in the order the holds were inserted, which is the order they were decided)."""
    next_id = iter(ids).__next__
    return [
        HeldQuota(
            id=next_id(),
            user_id=result["user_id"],
            api_key_id=result["api_key_id"],
            amount=result["amount"],
            key_amount=result["key_amount"],
            expires_at=result["expires_at"],
        )
        if isinstance(result, dict)
        else result
        for result in results
    ]


def _run_on_postgres(
    operations: Sequence[Operation], locks: Locks, *, wait_for_disk: bool
) -> list[Outcome]:
    """Two round trips, whatever the batch holds: the transaction's start, the locked reads
    and the new holds' ids in one query; then every write and the commit in another.

    psycopg's work per statement and per parameter (and its pipeline mode's, which this
    replaced) cost more CPU than PostgreSQL's own (bench/README.md), so each round trip is one
    query of several statements, with no parameters: the reads carry only ids, written as
    integers, and the writes carry one JSON document of every row, quoted by libpq
    (``PQescapeLiteral``), which PostgreSQL unpacks into each table. Inside an open
    transaction (a service called within ``transaction.atomic``) the batch is a savepoint.
    """
    connection.ensure_connection()
    conn = connection.connection
    now = timezone.now()
    reserves = sum(1 for op in operations if isinstance(op, Reserve))
    if conn.autocommit:
        begin, commit, undo = "BEGIN", "COMMIT", "ROLLBACK"
    else:
        begin, commit = "SAVEPOINT sluice_batch", "RELEASE SAVEPOINT sluice_batch"
        undo = "ROLLBACK TO SAVEPOINT sluice_batch"
    statements = [begin]
    if not wait_for_disk:
        statements.append(COMMIT_WITHOUT_WAITING_FOR_DISK)
    for table, column, ids in locks:
        if ids:
            statements.append(
                f"SELECT id, {column} FROM {table} WHERE id IN ({_id_list(ids)})"
                " ORDER BY id FOR UPDATE"
            )
    if reserves:
        statements.append(
            f"SELECT nextval(pg_get_serial_sequence('{HOLD_TABLE}', 'id'))"
            f" FROM generate_series(1, {reserves})"
        )
    with psycopg.Cursor(conn) as cursor:
        try:
            cursor.execute("; ".join(statements))  # no parameters: one query, many statements
            for _ in range(1 if wait_for_disk else 2):  # BEGIN, SET: nothing to read
                cursor.nextset()
            read: list[list[tuple]] = []
            for _, _, ids in locks:
                read.append(cursor.fetchall() if ids else [])
                if ids:
                    cursor.nextset()
            new_ids = sorted(row[0] for row in cursor.fetchall()) if reserves else []
            holds, users, keys = read
            books = _Books(holds=holds, users=dict(users), keys=dict(keys), now=now)
            results = _decide(operations, books)
            for row, hold_id in zip(books.new_holds, new_ids, strict=False):
                row["id"] = hold_id
            writes = _writes(books, now, conn)
            cursor.execute(f"{writes}; {commit}" if writes else commit)
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection is dropped by its owner
                conn.execute(undo)
            raise
    return _outcomes(results, new_ids)


# For a batch of reserves and nothing else: a crash can lose such a transaction, but only
# whole, and losing holds together with their decrements leaves the books exact. And for the
# ledger writer's batches when billing.journal keeps their settlements until the disk has
# them (a lost settlement is then made again).
COMMIT_WITHOUT_WAITING_FOR_DISK = "SET LOCAL synchronous_commit TO OFF"


def _id_list(ids: Iterable[int]) -> str:
    """Ids as SQL text: each made an int first, so nothing else can reach the query."""
    return ", ".join(str(int(i)) for i in sorted(ids))


def _writes(books: _Books, now: datetime, conn: psycopg.Connection) -> str:
    """Every change of the batch as one statement ("" if none): a data-modifying CTE per table
    it changes, reading its rows from one JSON document. Each row is changed at most once, as
    such CTEs require, and each UPDATE also names its ids, so PostgreSQL finds the rows by
    their index (it cannot tell how many rows a JSON array holds, and guessed a table scan)."""
    document: dict[str, list] = {}
    parts = []
    if books.closed:
        closed = sorted(books.closed.items())
        document["closed"] = [
            {
                "id": i,
                "status": status,
                "closed_at": None if status == Hold.Status.DELIVERED else now,
                "delivered": books.delivered.get(i),
            }
            for i, status in closed
        ]
        parts.append(_CLOSE_HOLDS.format(ids=_id_list(books.closed)))
    if books.user_changes:
        users = sorted(books.user_changes.items())
        document["users"] = [
            {"id": i, "quota": quota, "used": used, "requests": requests}
            for i, (quota, used, requests) in users
        ]
        parts.append(_CHANGE_USERS.format(ids=_id_list(books.user_changes)))
    if books.key_changes:
        keys = sorted(books.key_changes.items())
        document["keys"] = [
            {"id": i, "remaining": remaining, "used": used, "used_at": now if used_now else None}
            for i, (remaining, used, used_now) in keys
        ]
        parts.append(_CHANGE_KEYS.format(ids=_id_list(books.key_changes)))
    if books.journal:
        document["usage"] = [_row(UsageLog, row) for row in books.journal]
        parts.append(_insert_sql_from_document(UsageLog, "usage"))
    if books.new_holds:
        document["holds"] = [_row(Hold, row) for row in books.new_holds]
        parts.append(_insert_sql_from_document(Hold, "holds"))
    if not parts:
        return ""
    text = json.dumps(document, default=_json_value, separators=(",", ":"))
    literal = psycopg.pq.Escaping(conn.pgconn).escape_literal(text.encode()).decode()
    return f"WITH d(j) AS (SELECT {literal}::jsonb), {', '.join(parts)} SELECT 1"


_CLOSE_HOLDS = (
    f"closed AS (UPDATE {HOLD_TABLE} AS t SET status = v.status, closed_at = v.closed_at,"
    " delivered_quota = COALESCE(v.delivered, t.delivered_quota)"
    " FROM d, jsonb_to_recordset(d.j->'closed')"
    " AS v(id bigint, status text, closed_at timestamptz, delivered bigint)"
    " WHERE t.id IN ({ids}) AND t.id = v.id)"
)
_CHANGE_USERS = (
    f"users AS (UPDATE {USER_TABLE} AS t SET quota = t.quota + v.quota,"
    " used_quota = t.used_quota + v.used, request_count = t.request_count + v.requests"
    " FROM d, jsonb_to_recordset(d.j->'users')"
    " AS v(id bigint, quota bigint, used bigint, requests bigint)"
    " WHERE t.id IN ({ids}) AND t.id = v.id)"
)
_CHANGE_KEYS = (
    f"keys AS (UPDATE {KEY_TABLE} AS t SET remaining_quota = t.remaining_quota + v.remaining,"
    " used_quota = t.used_quota + v.used, last_used_at = COALESCE(v.used_at, t.last_used_at)"
    " FROM d, jsonb_to_recordset(d.j->'keys')"
    " AS v(id bigint, remaining bigint, used bigint, used_at timestamptz)"
    " WHERE t.id IN ({ids}) AND t.id = v.id)"
)


@cache
def _insert_sql_from_document(model: type[models.Model], part: str) -> str:
    """Rows of ``model`` from the document's ``part``, read as the table's own row type, so
    each value is checked against its column as an INSERT of it would be. New holds carry the
    ids the batch took for them (their outcomes need them)."""
    names = (["id"] if model is Hold else []) + [str(f.column) for f in _columns(model)]
    columns = ", ".join(names)
    table = model._meta.db_table
    return (
        f"{part} AS (INSERT INTO {table} ({columns}) SELECT {columns}"
        f" FROM d, jsonb_populate_recordset(NULL::{table}, d.j->'{part}'))"
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: PostgreSQL reads the text as numeric
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _row(model: type[models.Model], row: dict[str, Any]) -> dict[str, Any]:
    """A row as its table's columns; a column the batch does not set takes its default."""
    values = {"id": row["id"]} if "id" in row else {}
    for f in _columns(model):
        values[f.column] = row[f.attname] if f.attname in row else f.get_default()
    return values


def _run_on_sqlite(
    operations: Sequence[Operation], locks: Locks, *, wait_for_disk: bool
) -> list[Outcome]:
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
            read.append(cursor.fetchall() if ids else [])
        holds, users, keys = read
        books = _Books(holds=holds, users=dict(users), keys=dict(keys), now=now)
        results = _decide(operations, books)
        for sql, rows in _sqlite_changes(books, db_now):
            cursor.executemany(sql, rows)
        hold_ids = []
        for row in books.new_holds:
            cursor.execute(_insert_sql(Hold), _prepared_row(Hold, row))
            hold_ids.append(cursor.lastrowid)
    return _outcomes(results, hold_ids)


# The batch's statements are plain SQL: building them with the ORM cost more CPU than running
# them (bench/README.md). Table and column names come from the models.


def _sqlite_changes(books: _Books, now: Any) -> list[tuple[str, list[list]]]:
    """The batch's writes as (statement, rows) pairs, each statement run once per row."""
    statements = []
    if books.closed:
        statements.append(
            (
                f"UPDATE {HOLD_TABLE} SET status = %s, closed_at = %s,"
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
                f"UPDATE {USER_TABLE} SET quota = quota + %s, used_quota = used_quota + %s,"
                " request_count = request_count + %s WHERE id = %s",
                [[*change, i] for i, change in sorted(books.user_changes.items())],
            )
        )
    if books.key_changes:
        statements.append(
            (
                f"UPDATE {KEY_TABLE} SET remaining_quota = remaining_quota + %s,"
                " used_quota = used_quota + %s, last_used_at = COALESCE(%s, last_used_at)"
                " WHERE id = %s",
                [
                    [remaining, used, now if used_now else None, i]
                    for i, (remaining, used, used_now) in sorted(books.key_changes.items())
                ],
            )
        )
    if books.journal:
        rows = [_prepared_row(UsageLog, row) for row in books.journal]
        statements.append((_insert_sql(UsageLog), rows))
    return statements


@cache
def _columns(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


@cache
def _insert_sql(model: type[models.Model]) -> str:
    fields = _columns(model)
    return (
        f"INSERT INTO {model._meta.db_table} ({', '.join(str(f.column) for f in fields)})"
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


def _storable_count(value: Any) -> int:
    return min(max(int(value), 0), LARGEST_COUNT)


def _storable_ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def _prepared_row(model: type[models.Model], row: dict[str, Any]) -> list:
    """A row's values in column order, prepared for the database as the ORM would (SQLite)."""
    return [
        f.get_db_prep_save(row[f.attname] if f.attname in row else f.get_default(), connection)
        for f in _columns(model)
    ]
