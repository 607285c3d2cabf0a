"""The relay's money writes, in group commits: one thread, one transaction per batch.

Every call places a hold before it goes upstream and settles (or releases) it after. Done one
by one, each of those is a thread hop from the event loop plus a transaction and its commit,
which cost more than the rest of the call together (bench/README.md). Here, each process has
one writer thread: calls queue their operation (billing.operations ``Reserve``, ``Settle``,
``Release``, ``Deliver``) and await its outcome; the thread takes everything queued, runs it
with ``billing.batch.apply_batch`` in one transaction, commits once and answers each caller on
its own event loop. Under load a batch holds many calls; at rest it holds one, and nobody
waits for a timer.

On PostgreSQL a batch commits without waiting for the disk, and every settlement is first
written to billing.journal, which keeps it until PostgreSQL has it on disk: this thread checks
PostgreSQL's flushed position now and then (only while something waits for it), makes again
the settlements a PostgreSQL restart may have lost, retries the ones that failed with a growing
pause, and, when it starts, makes the settlements a dead process left in its journal. So a call
never waits for a disk flush, and an answer that was delivered is still billed.

A release that fails because the database is away (a call refused or failed during an outage,
a hold placed after its caller gave up) is tried again the same way, with a growing pause, for
as long as this process lives: a release moves no money out, but a lost one would keep the
user's balance held until the hold's expiry. A process that dies leaves those to the expiry
sweep (billing.tasks), which releases an open hold once it expires.

Nothing about the money changes: every operation is exactly what it is alone, and the books
balance after every commit. If a batch fails because the database is unreachable, every caller
hears so at once (no retry loop in front of them); if it fails otherwise (a deadlock, one bad
operation), each operation is retried alone, so one cannot take the others down with it.
"""

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from typing import Any, TypeAlias, cast, overload

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections

from billing import journal
from billing.batch import apply_batch
from billing.operations import Deliver, HeldQuota, Operation, Outcome, Release, Reserve, Settle

logger = logging.getLogger(__name__)

# (the operation, its caller's event loop and the future it awaits, or None for the writer's
# own retries; the settlement's number in the journal, or None)
Queued: TypeAlias = tuple[
    Operation, asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None", int | None
]

# How often, at most, PostgreSQL is asked how far its disk has caught up, while settlements
# wait on it.
DISK_CHECK_SECONDS = 0.2
# The writer keeps its connection while calls keep coming, and hands it back to the pool once
# it has had nothing to do for this long: taking it from the pool for every batch (the pool's
# health check is a round trip) cost each call at one connection more than its own SQL.
IDLE_SECONDS = 1.0

# What says the database is away rather than that an operation is wrong: Django's wrappers,
# and psycopg's own (billing.batch uses the connection directly).
UNREACHABLE = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)

_queue: "queue.SimpleQueue[Queued]" = queue.SimpleQueue()
# Releases the database was away for, by hold id: (the release, failures so far, when to try it
# again, on the monotonic clock). Only the writer's thread touches it.
_releases_due: dict[int, tuple[Release, int, float]] = {}
# The writer's connection (psycopg's, held so that its id is never another's) and the server run
# it is on: a connection never outlives its server's run, so this is read once per connection.
_server_run: tuple[object, str] | None = None
# Whether the writer holds a database connection now (read by let_go, from another thread).
_connected = False
_thread: threading.Thread | None = None
_started = threading.Lock()


@functools.cache
def journaling() -> bool:
    """Whether settlements go through billing.journal (PostgreSQL: see the module docstring).

    Read once: a process never changes its database, and asking Django's connection handler
    on every settlement (a context-local lookup from the event loop) took about 3 % of the
    event loop's CPU at one connection (py-spy, bench/README.md)."""
    return connections["default"].vendor == "postgresql"


def submit(operation: Operation) -> "asyncio.Future[Outcome | Exception]":
    """Queue ``operation``; the future gets its outcome (or the exception that failed it)
    once committed. A refusal is an outcome (``InsufficientQuota``), as in ``apply_batch``.
    A settlement is written to the journal first, where the writer finds it again if it fails."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    number = None
    if isinstance(operation, Settle) and journaling():
        number = journal.journal().record(operation)
    _queue.put((operation, loop, future, number))
    if _thread is None or not _thread.is_alive():
        _start()
    return future


@overload
async def run(operation: Reserve) -> HeldQuota: ...
@overload
async def run(operation: Settle) -> int | None: ...
@overload
async def run(operation: Release | Deliver) -> bool: ...
async def run(operation: Operation) -> Outcome:
    """Queue ``operation`` and wait for it to commit; its outcome, a refusal raised.

    Shielded: if the caller is cancelled meanwhile, the operation still commits.
    """
    outcome = await asyncio.shield(submit(operation))
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def forget() -> None:
    """Drop the releases waiting to be tried again (tests only: each test's database is new, and
    a hold id of another test's must not be released in it)."""
    _releases_due.clear()


def let_go(timeout: float = 5.0) -> bool:
    """Wait until the writer has handed its connection back (it does once idle for
    ``IDLE_SECONDS``); whether it has. For whatever must be alone with the database, such as
    the test suite's last step, which drops its database."""
    deadline = time.monotonic() + timeout
    while _connected and _thread is not None and _thread.is_alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _start() -> None:
    global _thread
    with _started:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_work, name="sluice-ledger-writer", daemon=True)
            _thread.start()


def _work() -> None:
    if journaling():
        _queue_again(journal.journal().adopt_orphans())
    last_check = 0.0
    last_batch = time.monotonic()
    while True:
        waiting = _journal_waiting() or bool(_releases_due)
        timeout = DISK_CHECK_SECONDS if waiting else IDLE_SECONDS if _connected else None
        try:
            first = _queue.get(timeout=timeout)
        except queue.Empty:
            first = None
        if first is not None:
            batch = [first]
            while True:
                try:
                    batch.append(_queue.get_nowait())
                except queue.Empty:
                    break
            outcomes, runs = _apply(batch)
            _answer(batch, outcomes)
            _journal_outcomes(batch, outcomes, runs)
            _retry_releases(batch, outcomes)
            last_batch = time.monotonic()
        _queue_due_releases()
        if _journal_waiting() and time.monotonic() - last_check >= DISK_CHECK_SECONDS:
            last_check = time.monotonic()
            _check_disk()
        idle = time.monotonic() - last_batch >= IDLE_SECONDS
        if idle and _connected and not (_journal_waiting() or _releases_due) and _queue.empty():
            _reset_connection()  # idle: hand the connection back to the pool


def _journal_waiting() -> bool:
    return journaling() and bool(journal.journal().entries)


def _queue_again(settlements: list[tuple[int, Settle]]) -> None:
    for number, settle in settlements:
        _queue.put((settle, None, None, number))


def _journal_outcomes(
    batch: list[Queued], outcomes: list[Outcome | Exception], runs: list[str | None]
) -> None:
    """Tell the journal which settlements committed (and on which run of the server), and
    which failed, to be tried again."""
    committed: dict[str, list[int]] = {}
    for (_, _, _, number), outcome, run in zip(batch, outcomes, runs, strict=True):
        if number is None:
            continue
        if isinstance(outcome, Exception) or run is None:
            lasting = not isinstance(outcome, UNREACHABLE)
            journal.journal().failed(number, lasting=lasting)
        else:
            committed.setdefault(run, []).append(number)
    for run, numbers in committed.items():
        journal.journal().committed(numbers, run)


def _retry_releases(batch: list[Queued], outcomes: list[Outcome | Exception]) -> None:
    """Keep the releases the database was away for, to try again after a pause that grows."""
    for (operation, _, _, _), outcome in zip(batch, outcomes, strict=True):
        if not isinstance(operation, Release):
            continue
        hold_id = operation.hold.id
        if not isinstance(outcome, UNREACHABLE):
            _releases_due.pop(hold_id, None)  # made (or refused for good: logged by its caller)
            continue
        _, failures, _ = _releases_due.get(hold_id, (operation, 0, 0.0))
        pause = min(journal.FIRST_RETRY_SECONDS * 2**failures, journal.LAST_RETRY_SECONDS)
        _releases_due[hold_id] = (operation, failures + 1, time.monotonic() + pause)


def _queue_due_releases() -> None:
    now = time.monotonic()
    for hold_id, (release, failures, retry_at) in list(_releases_due.items()):
        if 0 < retry_at <= now:
            _releases_due[hold_id] = (release, failures, 0.0)  # queued: not again until it fails
            _queue.put((release, None, None, None))


def _check_disk() -> None:
    """Forget the settlements PostgreSQL has on disk, make again those a restart may have
    lost, and queue the failed ones whose pause is over."""
    global _connected
    book = journal.journal()
    if book.waiting_on_disk():
        _connected = True
        try:
            connection.ensure_connection()
            with connection.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text,"
                    " pg_postmaster_start_time()::text"
                )
                inserted, flushed, server_start = cast(tuple[str, str, str], cursor.fetchone())
            _queue_again(book.on_disk(_lsn(inserted), _lsn(flushed), server_start))
        except (DatabaseError, *UNREACHABLE):  # away: checked again in a moment
            _reset_connection()
        except Exception:  # no one check may end the writer's thread: it is tried again
            logger.warning("checking PostgreSQL's flushed position failed", exc_info=True)
            _reset_connection()
    _queue_again(book.due())


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _server_start() -> str:
    """When the server the writer's connection is on started (read once per connection)."""
    global _server_run
    connection.ensure_connection()
    raw = connection.connection
    if _server_run is None or _server_run[0] is not raw:
        with raw.cursor() as cursor:
            cursor.execute("SELECT pg_postmaster_start_time()::text")
            (started,) = cast(tuple[str], cursor.fetchone())
        _server_run = (raw, started)
    return _server_run[1]


def _answer(batch: list[Queued], outcomes: list[Outcome | Exception]) -> None:
    """Hand each caller its outcome, on the caller's own event loop."""
    for (_, loop, future, _), outcome in zip(batch, outcomes, strict=True):
        if loop is None or future is None:
            continue  # the writer's own retry: nobody waits for it
        try:
            loop.call_soon_threadsafe(_deliver, future, outcome)
        except RuntimeError:  # that caller's event loop is gone; the others still hear
            pass


def _apply(batch: list[Queued]) -> tuple[list[Outcome | Exception], list[str | None]]:
    """Each operation's outcome, and the server run each committed on (None on SQLite, or
    for one that did not commit)."""
    global _connected
    operations = [operation for operation, _, _, _ in batch]
    durable = not journaling()
    _connected = True
    try:
        run = None if durable else _server_start()
        outcomes: list[Outcome | Exception] = list(apply_batch(operations, durable=durable))
        return outcomes, [run] * len(outcomes)
    except UNREACHABLE as problem:
        _reset_connection()
        if _lost_a_race(problem):
            logger.warning("ledger batch of %d lost a deadlock; retrying one by one", len(batch))
            return _one_by_one(operations, durable)
        # The database is away: every operation would fail the same way, one by one.
        logger.warning("ledger batch of %d failed, database unreachable: %s", len(batch), problem)
        return [problem] * len(batch), [None] * len(batch)
    except Exception:
        logger.warning("ledger batch of %d failed; retrying one by one", len(batch), exc_info=True)
        _reset_connection()
    return _one_by_one(operations, durable)


def _one_by_one(
    operations: list[Operation], durable: bool
) -> tuple[list[Outcome | Exception], list[str | None]]:
    outcomes: list[Outcome | Exception] = []
    runs: list[str | None] = []
    for operation in operations:
        try:
            run = None if durable else _server_start()
            [outcome] = apply_batch([operation], durable=durable)
        except Exception as problem:  # noqa: BLE001 - handed to the caller
            _reset_connection()
            outcomes.append(problem)
            runs.append(None)
        else:
            outcomes.append(outcome)
            runs.append(run)
    return outcomes, runs


def _lost_a_race(problem: BaseException) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): that transaction lost, the
    database is there."""
    sqlstate = getattr(problem, "sqlstate", None) or getattr(problem.__cause__, "sqlstate", None)
    return str(sqlstate or "").startswith("40")


def _reset_connection() -> None:
    global _connected
    with contextlib.suppress(Exception):  # a broken connection is dropped either way
        connection.close()
    _connected = False


def _deliver(future: "asyncio.Future[Any]", outcome: Outcome | Exception) -> None:
    if not future.done():
        future.set_result(outcome)
