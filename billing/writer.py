"""The relay's money writes, in group commits: one thread, one transaction per batch.

Every call places a hold before it goes upstream and settles (or releases) it after. Done one
by one, each of those is a thread hop from the event loop plus a transaction and its commit,
which cost more than the rest of the call together (bench/README.md). Here, each process has
one writer thread: calls queue their operation (billing.operations ``Reserve``, ``Settle``,
``Release``, ``Deliver``) and await its outcome; the thread takes everything queued, runs it
with ``billing.batch.apply_batch`` in one transaction, commits once and answers each caller on
its own event loop. Under load a batch holds many calls; at rest it holds one, and nobody
waits for a timer.

Nothing about the money changes: every operation is exactly what it is alone, the books
balance after every commit, and a call's answer waits for its settlement to commit. If a batch
fails (the database went away, a deadlock), each of its operations is retried alone, so one
bad operation cannot take the others down with it.
"""

import asyncio
import contextlib
import logging
import queue
import threading
from typing import Any, TypeAlias, overload

from django.db import connection

from billing.batch import apply_batch
from billing.operations import Deliver, HeldQuota, Operation, Outcome, Release, Reserve, Settle

logger = logging.getLogger(__name__)

# (the operation, its caller's event loop, the future the caller awaits)
Queued: TypeAlias = tuple[Operation, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]

_queue: "queue.SimpleQueue[Queued]" = queue.SimpleQueue()
_thread: threading.Thread | None = None
_started = threading.Lock()


def submit(operation: Operation) -> "asyncio.Future[Outcome | Exception]":
    """Queue ``operation``; the future gets its outcome (or the exception that failed it)
    once committed. A refusal is an outcome (``InsufficientQuota``), as in ``apply_batch``."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    _queue.put((operation, loop, future))
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


def _start() -> None:
    global _thread
    with _started:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_work, name="sluice-ledger-writer", daemon=True)
            _thread.start()


def _work() -> None:
    while True:
        batch = [_queue.get()]
        while True:
            try:
                batch.append(_queue.get_nowait())
            except queue.Empty:
                break
        _answer(batch, _apply(batch))
        if _queue.empty():
            _reset_connection()  # idle: hand the connection back to the pool


def _answer(batch: list[Queued], outcomes: list[Outcome | Exception]) -> None:
    """Hand each caller its outcome, on the caller's own event loop."""
    for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
        try:
            loop.call_soon_threadsafe(_deliver, future, outcome)
        except RuntimeError:  # that caller's event loop is gone; the others still hear
            pass


def _apply(batch: list[Queued]) -> list[Outcome | Exception]:
    operations = [operation for operation, _, _ in batch]
    try:
        return list(apply_batch(operations))
    except Exception:
        logger.warning("ledger batch of %d failed; retrying one by one", len(batch), exc_info=True)
        _reset_connection()
    outcomes: list[Outcome | Exception] = []
    for operation in operations:
        try:
            [outcome] = apply_batch([operation])
        except Exception as problem:  # noqa: BLE001 - handed to the caller
            _reset_connection()
            outcomes.append(problem)
        else:
            outcomes.append(outcome)
    return outcomes


def _reset_connection() -> None:
    with contextlib.suppress(Exception):  # a broken connection is dropped either way
        connection.close()


def _deliver(future: "asyncio.Future[Any]", outcome: Outcome | Exception) -> None:
    if not future.done():
        future.set_result(outcome)
