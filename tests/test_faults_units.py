"""The pieces that keep a failing PostgreSQL or Redis from failing calls, one at a time (the
same faults, injected into real services under real calls: test_faults_database.py and
test_faults_redis.py)."""

import asyncio
import json
import logging
import time

import psycopg
import pytest
from django.db import OperationalError

from config import cache
from relay import database, errors
from relay.errors import RelayError


@pytest.fixture(autouse=True)
def database_present():
    database._away_until = 0.0
    yield
    database._away_until = 0.0


def failing(problem):
    def load():
        raise problem

    return load


def test_a_database_error_becomes_a_retryable_503_and_later_calls_fail_fast(settings):
    settings.DATABASE_RETRY_SECONDS = 0.3
    with pytest.raises(RelayError) as refused:
        asyncio.run(database.run(failing(OperationalError("connection refused"))))
    assert refused.value.status == 503 and refused.value.retry is True
    assert refused.value.retry_after == 0.3

    ran = []
    began = time.monotonic()
    with pytest.raises(RelayError):  # answered at once: not even tried
        asyncio.run(database.run(lambda: ran.append(1)))
    assert ran == [] and time.monotonic() - began < 0.1

    time.sleep(0.35)
    assert asyncio.run(database.run(lambda: "back")) == "back"


def test_a_read_that_does_not_answer_in_time_is_a_503(settings):
    settings.RELAY_DATABASE_WAIT_SECONDS = 0.2

    async def call():
        began = time.monotonic()
        with pytest.raises(RelayError) as refused:
            await database.run(time.sleep, 1)  # a frozen server: the query never returns
        return refused.value, time.monotonic() - began, database.away()

    refused, waited, away = asyncio.run(call())
    assert refused.status == 503
    assert waited < 0.6
    assert away  # the next calls are answered at once


def test_a_lost_deadlock_is_a_503_but_not_an_outage():
    deadlock = OperationalError("deadlock detected")
    deadlock.__cause__ = psycopg.errors.DeadlockDetected("deadlock detected")
    with pytest.raises(RelayError) as refused:
        asyncio.run(database.run(failing(deadlock)))
    assert refused.value.status == 503
    assert not database.away()


def test_a_bug_is_not_taken_for_an_outage():
    with pytest.raises(ZeroDivisionError):
        asyncio.run(database.run(lambda: 1 / 0))
    assert not database.away()


@pytest.mark.parametrize(
    ("api", "status", "shape"),
    [
        ("openai", 503, lambda body: body["error"]["code"] == "service_unavailable"),
        ("anthropic", 503, lambda body: body["error"]["type"] == "overloaded_error"),
        ("gemini", 503, lambda body: body["error"]["status"] == "UNAVAILABLE"),
    ],
)
def test_the_503_is_in_the_callers_format_with_retry_headers(api, status, shape):
    response = errors.render(errors.database_unavailable(retry_after=0.5), api=api)
    assert response.status == status
    assert shape(json.loads(response.body))
    assert response.headers["x-should-retry"] == "true"
    assert response.headers["Retry-After"] == "1"  # whole seconds, at least one


def test_the_pools_reconnect_waits_are_capped(settings):
    settings.DATABASE_RECONNECT_MAX_SECONDS = 0.5
    attempt = database.CappedBackoff(timeout=300)
    waits = []
    for _ in range(8):
        attempt.update_delay(time.monotonic())
        waits.append(attempt.delay)
    assert max(waits) <= 0.5  # psycopg_pool's own would reach 1, 2, 4 ... 128 s
    import psycopg_pool.pool

    assert psycopg_pool.pool.AttemptWithBackoff is database.CappedBackoff


class Down:
    """A cache backend that fails every operation, until ``up`` is set."""

    def __init__(self):
        self.up = False
        self.values = {}
        self.tried = 0

    def _check(self):
        self.tried += 1
        if not self.up:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    def get(self, key, default=None):
        self._check()
        return self.values.get(key, default)

    def set(self, key, value, timeout=None):
        self._check()
        self.values[key] = value

    def delete_many(self, keys):
        self._check()
        for key in keys:
            self.values.pop(key, None)

    def incr(self, key, delta=1):
        self._check()
        if key not in self.values:
            raise ValueError(key)
        self.values[key] += delta
        return self.values[key]


def test_an_unreachable_shared_cache_is_a_miss_then_left_alone_then_back(settings, caplog):
    settings.CACHE_RETRY_SECONDS = 0.2
    backend = Down()
    shared = cache.TolerantCache(backend)
    with caplog.at_level(logging.WARNING, logger="config.cache"):
        assert shared.get("price:v2:gpt-4o") is None
        shared.set("price:v2:gpt-4o", "a price", 60)  # dropped, no error
        assert shared.get("x", "default") == "default"
        assert backend.tried == 1  # after the first failure, left alone for a moment
        assert not shared.reachable
        time.sleep(0.25)
        backend.up = True
        backend.values["apikey:abc"] = "stale settings"
        shared.remember_missed(["apikey:abc"], None)  # a key saved while it was down
        assert shared.get("x") is None
    assert shared.reachable
    assert "apikey:abc" not in backend.values  # the missed drop was made on recovery
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages  # one when it failed, one when it came back
    assert "unreachable" in messages[0] and "answers again" in messages[1]


def test_a_version_the_cache_cannot_give_is_unknown_and_never_matches_a_copy(monkeypatch):
    backend = Down()
    shared = cache.TolerantCache(backend)
    monkeypatch.setattr(cache, "shared_cache", lambda: shared)
    first, second = cache.KEYS.read(), cache.KEYS.read()
    assert first < 0 and second < 0 and first != second
    backend.up = True
    shared._retry_at = 0
    assert cache.KEYS.read() == 0  # missing, once it answers


def test_redemption_stays_closed_while_its_counters_cannot_be_read(settings, alice):
    from billing.redemption import RedemptionRefused, redeem_code

    settings.CACHES = {
        **settings.CACHES,
        "guards": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        },
    }
    with pytest.raises(RedemptionRefused) as refused:
        redeem_code(user=alice, code="SLC-" + "A" * 26, ip="10.0.0.1")
    assert refused.value.reason == "too_many_attempts"
