"""A hold whose release could not be written because the database was away is released once it
is back, by the ledger writer, not left holding the user's money until the hold expires."""

import asyncio
import threading

import httpx
import pytest
from django.db import OperationalError

from billing import services, writer
from billing.models import Hold
from billing.operations import Release
from tests.conftest import ALICE_CREDIT, eventually

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def releases_fail_twice(monkeypatch):
    """The first two ledger batches holding a release fail as if the database had gone away;
    the failures seen, as a list."""
    failures = []
    lock = threading.Lock()
    apply_batch = writer.apply_batch

    def away_twice(operations, **options):
        with lock:
            if any(isinstance(op, Release) for op in operations) and len(failures) < 2:
                failures.append(1)
                raise OperationalError("the database went away")
        return apply_batch(operations, **options)

    monkeypatch.setattr(writer, "apply_batch", away_twice)
    return failures


def open_holds() -> int:
    return Hold.objects.filter(status=Hold.Status.OPEN).count()


def test_a_release_the_database_was_away_for_is_made_once_it_is_back(
    alice, alice_key, releases_fail_twice, books_balance
):
    hold = services.reserve_quota(
        user_id=alice.id, api_key_id=alice.api_keys.get().id, unlimited_key=True, amount=5_000
    )

    async def release():
        try:
            return await writer.run(Release(hold))
        except OperationalError as problem:
            return problem

    assert isinstance(asyncio.run(release()), OperationalError)  # its caller heard at once

    assert eventually(lambda: open_holds() == 0, timeout=15)
    assert len(releases_fail_twice) == 2  # tried again after each failure, then made
    assert Hold.objects.get(id=hold.id).status == Hold.Status.RELEASED
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT
    books_balance()


def test_a_failed_call_during_an_outage_gives_its_hold_back_afterwards(
    alice, alice_key, openai_channel, mock_upstream, relay_url, releases_fail_twice, books_balance
):
    mock_upstream.script({"status": 400, "error_message": "bad request upstream"})

    response = httpx.post(
        f"{relay_url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )

    assert response.status_code == 400
    assert eventually(lambda: Hold.objects.exists() and open_holds() == 0, timeout=15)
    assert releases_fail_twice == [1, 1]
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT  # nothing charged, nothing left held
    books_balance()
