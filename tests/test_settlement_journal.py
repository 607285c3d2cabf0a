"""A delivered answer is billed even when its settlement's commit is lost or fails.

On PostgreSQL the ledger writer commits settlements without waiting for the disk, and keeps
each in billing.journal until PostgreSQL has it on disk: a failed settlement is tried again, a
settlement a PostgreSQL restart may have lost is made again (once: settling is idempotent), and
a dead process's journal is made again by the next. These tests break those steps on purpose.
"""

import asyncio
import fcntl
import os
from dataclasses import replace
from decimal import Decimal

import pytest
from django.db import OperationalError
from django.utils import timezone

from billing import journal, services, writer
from billing.models import Hold, UsageLog
from billing.operations import CallRecord, HeldQuota, Settle
from billing.pricing import Price, TokenUsage, price_for
from tests.conftest import ALICE_CREDIT, eventually

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CALL = CallRecord(endpoint="chat", model="gpt-4o", is_stream=True)
USAGE = TokenUsage(input_tokens=100, cached_input_tokens=20, output_tokens=50)


def placed_hold(user, amount=10_000):
    return services.reserve_quota(
        user_id=user.id, api_key_id=user.api_keys.get().id, unlimited_key=True, amount=amount
    )


def settlement(hold) -> Settle:
    return Settle(
        hold=hold, price=price_for("gpt-4o"), group_ratio=Decimal("0.9"), usage=USAGE, call=CALL
    )


def cost() -> int:
    return price_for("gpt-4o").charge(USAGE, Decimal("0.9"))


def settle_through_the_writer(operation: Settle):
    async def run():
        try:
            return await writer.run(operation)
        except Exception as problem:  # noqa: BLE001 - the test looks at it
            return problem

    return asyncio.run(run())


def journal_emptied() -> bool:
    return eventually(lambda: not journal.journal().entries, timeout=15)


def test_a_settlement_line_reads_back_as_the_same_settlement():
    hold = HeldQuota(
        id=7, user_id=3, api_key_id=None, amount=900, key_amount=0, expires_at=timezone.now()
    )
    price = Price(
        "gpt-4o", Decimal("1.25"), Decimal(4), Decimal("0.5"), Decimal(1), None, False, 100
    )
    price = replace(price, image_quotas=(("1024x1024", 100),), audio_input_ratio=Decimal("12.5"))
    original = Settle(
        hold=hold,
        price=price,
        group_ratio=Decimal("0.85"),
        usage=USAGE,
        call=replace(CALL, reported_usage={"prompt_tokens": -1}, client_ip="10.0.0.1"),
        cost=123,
    )

    number, read = journal.read_line(journal.settlement_line(41, original))

    assert number == 41
    assert read == replace(original, replayed=True)


def test_a_settlement_that_fails_is_tried_again_until_it_lands(
    alice, alice_key, monkeypatch, books_balance
):
    hold = placed_hold(alice)
    failures = []
    apply_batch = writer.apply_batch

    def unreachable_twice(operations, **options):
        if any(isinstance(op, Settle) for op in operations) and len(failures) < 2:
            failures.append(1)
            raise OperationalError("the database went away")
        return apply_batch(operations, **options)

    monkeypatch.setattr(writer, "apply_batch", unreachable_twice)

    outcome = settle_through_the_writer(settlement(hold))

    assert isinstance(outcome, OperationalError)  # the caller heard at once
    assert eventually(lambda: UsageLog.objects.filter(hold_id=hold.id).exists(), timeout=15)
    assert len(failures) == 2
    assert journal_emptied()
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - cost()
    assert Hold.objects.get(id=hold.id).status == Hold.Status.SETTLED
    books_balance()


def test_after_a_postgresql_restart_unflushed_settlements_are_made_again_once(
    alice, alice_key, monkeypatch, books_balance
):
    hold = placed_hold(alice)
    on_disk = journal.Journal.on_disk
    checks = []

    def restarted_since(book, inserted, flushed, server_start):
        checks.append(server_start)
        if len(checks) == 1:  # the first check sees another run of the server
            server_start = "restarted"
        return on_disk(book, inserted, flushed, server_start)

    monkeypatch.setattr(journal.Journal, "on_disk", restarted_since)
    made_again = []
    queue_again = writer._queue_again
    monkeypatch.setattr(
        writer, "_queue_again", lambda due: made_again.extend(due) or queue_again(due)
    )

    assert settle_through_the_writer(settlement(hold)) == cost()
    assert journal_emptied()

    assert len(checks) >= 2  # checked, made again, checked again
    assert [settle.hold.id for _, settle in made_again] == [hold.id]
    assert UsageLog.objects.filter(hold_id=hold.id).count() == 1
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - cost()  # charged once
    books_balance()


def test_a_disk_check_that_fails_unexpectedly_does_not_end_the_writer(
    alice, alice_key, monkeypatch, books_balance
):
    hold = placed_hold(alice)
    on_disk = journal.Journal.on_disk
    failures = []

    def broken_once(book, *args):
        if not failures:
            failures.append(1)
            raise RuntimeError("something unforeseen")
        return on_disk(book, *args)

    monkeypatch.setattr(journal.Journal, "on_disk", broken_once)

    assert settle_through_the_writer(settlement(hold)) == cost()
    assert journal_emptied()  # checked again after the failure, and let go

    assert failures == [1]
    assert writer._thread is not None and writer._thread.is_alive()
    books_balance()


def test_a_settlement_stays_journaled_until_the_disk_has_passed_its_commit():
    hold = HeldQuota(
        id=7, user_id=3, api_key_id=None, amount=900, key_amount=0, expires_at=timezone.now()
    )
    book = journal.Journal(journal.journal_folder() / "unit")
    try:
        number = book.record(settlement(hold))
        book.committed([number], "run 1")

        # The first check after the commit learns where the WAL was (past the commit)...
        assert book.on_disk(inserted=500, flushed=400, server_start="run 1") == []
        assert number in book.entries
        # ...and a later one, with the disk beyond that, lets it go.
        assert book.on_disk(inserted=900, flushed=499, server_start="run 1") == []
        assert number in book.entries
        assert book.on_disk(inserted=900, flushed=500, server_start="run 1") == []
        assert number not in book.entries

        again = book.record(settlement(hold))
        book.committed([again], "run 1")
        made_again = book.on_disk(inserted=1000, flushed=1000, server_start="run 2")
        assert [n for n, _ in made_again] == [again]  # committed on an earlier run: made again
        assert made_again[0][1].replayed
    finally:
        for descriptor in book.segments.values():
            os.close(descriptor)


def test_a_dead_processs_journal_is_made_again_by_the_next(alice, alice_key, books_balance):
    settled = placed_hold(alice)
    open_hold = placed_hold(alice, amount=20_000)
    services.settle_hold(
        hold=settled, price=price_for("gpt-4o"), group_ratio=Decimal("0.9"), usage=USAGE, call=CALL
    )
    folder = journal.journal_folder()
    folder.mkdir(parents=True, exist_ok=True)
    orphan = folder / "elsewhere-99999-1.journal"
    orphan.write_bytes(
        journal.settlement_line(1, settlement(settled))  # settled already: not charged again
        + journal.settlement_line(2, settlement(open_hold))
        + b'{"n": 3, "settle": {"hold": '  # cut short when its process died
    )

    writer._queue_again(journal.journal().adopt_orphans())

    assert eventually(lambda: UsageLog.objects.filter(hold_id=open_hold.id).exists(), timeout=15)
    assert not orphan.exists()
    assert journal_emptied()
    assert UsageLog.objects.count() == 2
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - 2 * cost()
    books_balance()


def test_a_journal_a_living_process_holds_is_left_alone(alice, alice_key):
    folder = journal.journal_folder()
    folder.mkdir(parents=True, exist_ok=True)
    living = folder / "elsewhere-1-1.journal"
    living.write_bytes(journal.settlement_line(1, settlement(placed_hold(alice))))
    descriptor = os.open(living, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert journal.journal().adopt_orphans() == []
        assert living.exists()
    finally:
        os.close(descriptor)
        living.unlink()


def test_a_replayed_settlement_whose_hold_was_lost_charges_the_call_without_it(
    alice, alice_key, books_balance
):
    """PostgreSQL lost the hold's placement with the settlement: nothing was taken for the call,
    and the hold's id may since name another call's hold, which must be left alone."""
    other = placed_hold(alice, amount=5_000)
    lost = replace(other, amount=7_000)  # same id, another hold: the journal's was lost
    missing = replace(other, id=other.id + 1000)

    for hold in (lost, missing):
        assert settle_through_the_writer(replace(settlement(hold), replayed=True)) == cost()

    rows = list(UsageLog.objects.all())
    assert len(rows) == 2 and all(row.hold_id is None for row in rows)
    assert Hold.objects.get(id=other.id).status == Hold.Status.OPEN
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - 5_000 - 2 * cost()
    books_balance()
