"""Settlements the relay owes PostgreSQL's disk: a local journal, until the disk has them.

A call's answer reaches its client before its settlement is written (relay.calls), and the
ledger writer (billing.writer) commits settlements without waiting for PostgreSQL to flush them
to disk (``synchronous_commit = off``): waiting would add a disk flush, 1-4 ms on the machines
measured, to every call, for every caller of the same user, since the settlement's row locks
are held until the flush. Such a commit is lost only if PostgreSQL crashes within a fraction of
a second of it. So that a delivered answer is still billed then, every settlement is first
written to this journal: one line in a file of this process under
``SLUICE_DATA_DIR/settlements/``, before the settlement is queued. A line leaves the journal only
once PostgreSQL's flushed WAL position has passed the settlement's commit, on the same server
run (``pg_postmaster_start_time``). Until then:

- a settlement that failed (the database went away) is tried again, with a growing pause;
- if PostgreSQL restarted since the commit, the settlement is made again: settling is
  idempotent (a hold's status moves once), and a replayed settlement whose hold is missing, or
  is not the same hold any more, charges the call without it (``Settle.replayed``);
- if this process dies, the next one that starts a ledger writer on this machine finds its file
  (no process holds its lock any more) and makes its settlements again.

What is not covered: the machine's own power failing before the file reached its disk (the
journal is written without fsync, which would cost the same flush it exists to avoid), and a
node that never starts Sluice again while PostgreSQL also lost the commit (its settlements wait
in its data folder). Only PostgreSQL is journaled: SQLite (the embedded default) commits in the
process itself, and a process that dies after the commit does not lose it.

Every method is called by the ledger writer's thread except ``record``, which the event loop
calls as it queues a settlement; one lock keeps the file and the entries consistent between
them.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from django.conf import settings

from billing.operations import CallRecord, HeldQuota, Settle
from billing.pricing import Price, TokenUsage

logger = logging.getLogger(__name__)

# A segment file is started afresh (the old one deleted once all its lines are on disk) past this.
SEGMENT_BYTES = 4 * 1024 * 1024
FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 10.0
# A settlement the database refuses for a reason of its own (not for being unreachable) this many
# times is given up, loudly: it would fail forever, and keep the journal from emptying.
LASTING_FAILURES = 5


def journal_folder() -> Path:
    return Path(settings.DATA_DIR) / "settlements"


# --- Settlements as lines --------------------------------------------------------------------


def _encode(value):
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, datetime.datetime):
        return {"$t": value.isoformat()}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _decode(value: dict):
    if "$d" in value:
        return Decimal(value["$d"])
    if "$t" in value:
        return datetime.datetime.fromisoformat(value["$t"])
    return value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind))
    return names


def _flat(value: Any) -> dict:
    """A dataclass's fields by name, one level deep: what is in them is already JSON's (with
    Decimals and datetimes, which ``_encode`` spells), so nothing is copied (dataclasses.asdict
    deep-copies every value, which cost more than the rest of a settlement's line)."""
    return {name: getattr(value, name) for name in _field_names(type(value))}


def settlement_line(number: int, settle: Settle) -> bytes:
    """One journal line: the settlement's number in its process and everything it holds."""
    fields = _flat(settle)
    fields |= {
        "hold": _flat(settle.hold),
        "price": _flat(settle.price),
        "usage": _flat(settle.usage),
        "call": _flat(settle.call),
    }
    text = json.dumps({"n": number, "settle": fields}, default=_encode, separators=(",", ":"))
    return text.encode() + b"\n"


def read_line(line: bytes) -> tuple[int, Settle]:
    """The number and settlement of a journal line (``ValueError`` if it is not one)."""
    try:
        record = json.loads(line, object_hook=_decode)
        fields = record["settle"]
        price: dict[str, Any] = {
            name: tuple(tuple(pair) for pair in value) if isinstance(value, list) else value
            for name, value in fields["price"].items()
        }
        settle = Settle(
            hold=HeldQuota(**fields["hold"]),
            price=Price(**price),
            group_ratio=fields["group_ratio"],
            usage=TokenUsage(**fields["usage"]),
            call=CallRecord(**fields["call"]),
            cost=fields.get("cost"),
            replayed=True,
        )
        return int(record["n"]), settle
    except (KeyError, TypeError, AttributeError) as problem:
        raise ValueError(f"not a journal line: {problem!r}") from None


# --- The journal -----------------------------------------------------------------------------


@dataclass
class Entry:
    """A journaled settlement, until PostgreSQL has it on disk."""

    settle: Settle
    segment: Path
    # Once committed: (a WAL position at or past its commit, or None until the next disk check
    # reads one, and the server run it was committed on).
    commit: tuple[int | None, str] | None = None
    failures: int = 0
    lasting_failures: int = 0
    retry_at: float = 0.0  # monotonic time; 0 while it waits in the writer's queue


@dataclass
class Journal:
    """This process's journal: its open segment file and the settlements not yet on disk."""

    folder: Path
    entries: dict[int, Entry] = field(default_factory=dict)
    segments: dict[Path, int] = field(default_factory=dict)  # segment -> its file descriptor
    active: Path | None = None
    written: int = 0  # bytes in the active segment
    serial: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, settle: Settle) -> int:
        """Write ``settle`` down before it is queued; its number in this journal."""
        with self.lock:
            self.serial += 1
            number = self.serial
            self._append(number, settle)
            return number

    def _append(self, number: int, settle: Settle) -> None:
        if self.active is None or self.written > SEGMENT_BYTES:
            self._start_segment()
        segment = cast(Path, self.active)
        line = settlement_line(number, settle)
        os.write(self.segments[segment], line)
        self.written += len(line)
        self.entries[number] = Entry(settle, segment)

    def _start_segment(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.journal"
        path = self.folder / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # Held for as long as this process lives: a segment nobody holds is an orphan.
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.segments[path] = descriptor
        self.active, self.written = path, 0

    def committed(self, numbers: list[int], server_start: str) -> None:
        """These settlements committed, on the server run that started at ``server_start``."""
        with self.lock:
            for number in numbers:
                if number in self.entries:
                    self.entries[number].commit = (None, server_start)

    def failed(self, number: int, *, lasting: bool = False) -> None:
        """This settlement could not be written: try it again after a pause that grows.
        ``lasting``: the database refused it (rather than being unreachable)."""
        with self.lock:
            entry = self.entries.get(number)
            if entry is not None and lasting:
                entry.lasting_failures += 1
                if entry.lasting_failures >= LASTING_FAILURES:
                    logger.error(
                        "giving up a settlement the database refuses: hold %s, %s",
                        entry.settle.hold,
                        entry.settle.call,
                    )
                    del self.entries[number]
                    self._drop_finished_segments()
                    return
            if entry is not None:
                entry.failures += 1
                pause = min(FIRST_RETRY_SECONDS * 2 ** (entry.failures - 1), LAST_RETRY_SECONDS)
                entry.retry_at = time.monotonic() + pause
                entry.commit = None

    def waiting_on_disk(self) -> bool:
        """Whether some committed settlement is not known to be on disk yet."""
        return any(entry.commit is not None for entry in self.entries.values())

    def due(self) -> list[tuple[int, Settle]]:
        """Failed settlements whose pause is over, to queue again (as replays)."""
        now = time.monotonic()
        with self.lock:
            due = [
                (number, entry)
                for number, entry in self.entries.items()
                if entry.commit is None and entry.retry_at and entry.retry_at <= now
            ]
            for _, entry in due:
                entry.retry_at = 0.0
        return [(number, dataclasses.replace(entry.settle, replayed=True)) for number, entry in due]

    def on_disk(self, inserted: int, flushed: int, server_start: str) -> list[tuple[int, Settle]]:
        """Given the server's WAL positions now (``inserted``: written so far, past every commit
        made before; ``flushed``: on disk) and its run: forget the settlements it has flushed,
        and return those committed on an earlier run (it restarted since: they may be lost), to
        be made again. A settlement committed since the last check is given ``inserted`` as the
        position to wait for."""
        again = []
        with self.lock:
            for number, entry in list(self.entries.items()):
                if entry.commit is None:
                    continue
                position, started = entry.commit
                if started != server_start:
                    entry.commit = None
                    again.append((number, dataclasses.replace(entry.settle, replayed=True)))
                    continue
                if position is None:
                    position = inserted
                    entry.commit = (position, started)
                if position <= flushed:
                    del self.entries[number]
            self._drop_finished_segments()
        return again

    def _drop_finished_segments(self) -> None:
        live = {entry.segment for entry in self.entries.values()}
        for path, descriptor in list(self.segments.items()):
            if path in live:
                continue
            if path == self.active:
                if self.written:  # nothing pending in it: start it over, in place
                    os.ftruncate(descriptor, 0)
                    self.written = 0
                continue
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(descriptor)
            del self.segments[path]

    def adopt_orphans(self) -> list[tuple[int, Settle]]:
        """The settlements in segments no living process holds (their process died), written
        into this journal and returned, to be made again; the orphan files are then removed."""
        if not self.folder.is_dir():
            return []
        adopted = []
        for path in sorted(self.folder.glob("*.journal")):
            if path in self.segments:
                continue
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                with open(descriptor, "rb", closefd=False) as orphan:
                    lines = orphan.read().splitlines()
                with self.lock:
                    for line in lines:
                        try:
                            _, settle = read_line(line)
                        except ValueError:  # a line cut short when its process died
                            logger.warning("skipping an unreadable line in %s", path.name)
                            continue
                        self.serial += 1
                        self._append(self.serial, settle)
                        adopted.append((self.serial, settle))
                path.unlink()
            finally:
                os.close(descriptor)
        if adopted:
            logger.warning("replaying %d settlements left by a process that died", len(adopted))
        return adopted


_journal: Journal | None = None
_made = threading.Lock()


def forget() -> None:
    """Start a new journal, dropping this process's pending settlements (tests only: each test's
    database is new, and another test's settlements must not be made in it)."""
    global _journal
    with _made:
        if _journal is not None:
            for descriptor in _journal.segments.values():
                os.close(descriptor)
            for path in _journal.segments:
                with contextlib.suppress(OSError):
                    path.unlink()
        _journal = None


def journal() -> Journal:
    """This process's journal (made on first use)."""
    global _journal
    with _made:
        if _journal is None:
            _journal = Journal(journal_folder())
        return _journal
