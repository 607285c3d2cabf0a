"""One code, fifty people at once, on PostgreSQL: exactly one is credited."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from accounts.models import User
from accounts.services import create_user
from billing.models import LedgerEntry, RedemptionCode
from billing.redemption import RedemptionRefused, make_batch, redeem_code

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ATTEMPTS = 50


def test_fifty_concurrent_redemptions_of_one_code_credit_exactly_once(books_balance):
    people = [create_user(username=f"buyer{n}") for n in range(ATTEMPTS)]
    _, [code] = make_batch(name="race", quota=1_000_000, count=1)
    start = threading.Barrier(ATTEMPTS)

    def attempt(user):
        try:
            start.wait()
            return redeem_code(user=user, code=code, ip=f"192.0.2.{user.id % 250}")
        except RedemptionRefused as refusal:
            return refusal.reason
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=ATTEMPTS) as pool:
        outcomes = list(pool.map(attempt, people))

    assert outcomes.count(1_000_000) == 1, outcomes
    assert outcomes.count("used") == ATTEMPTS - 1, outcomes
    [entry] = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REDEMPTION)
    winner = RedemptionCode.objects.get().used_by
    assert entry.user == winner and entry.amount == 1_000_000
    assert sorted(User.objects.values_list("quota", flat=True)) == [0] * 49 + [1_000_000]
    books_balance()
