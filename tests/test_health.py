"""/healthz and /readyz, as a load balancer calls them: no key, any Host, GET.

/healthz says the process answers and depends on nothing; /readyz says the database and every
configured cache answer, naming any that did not (in the log too, once, at WARNING): 503 when
the database fails, 200 "degraded" when only a cache does.
"""

import logging
import threading

import httpx
import pytest

from config import health

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # port 1: nothing listens, the connection is refused


@pytest.fixture(autouse=True)
def nothing_failing_before():
    """Which checks were failing is process state (logged on change): each test starts clean."""
    health._failing.clear()
    yield
    health._failing.clear()


@pytest.fixture
def health_log(caplog):
    caplog.set_level(logging.DEBUG, logger="config.health")
    return lambda: [r for r in caplog.records if r.name == "config.health"]


def test_healthz_answers_without_a_key_or_any_dependency(relay_url, monkeypatch):
    def broken():
        raise AssertionError("/healthz must not run the readiness checks")

    monkeypatch.setattr(health, "checks", broken)

    response = httpx.get(f"{relay_url}/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_is_ok_when_the_database_and_cache_answer_and_logs_nothing(relay_url, health_log):
    response = httpx.get(f"{relay_url}/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "cache.guards": "ok", "cache.shared": "ok"},
    }
    assert health_log() == []


def test_readyz_stays_200_but_degraded_naming_the_cache_when_redis_cannot_be_reached(
    relay_url, settings, health_log
):
    """Calls go on without Redis (config.cache): the node stays in the balancer."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": UNREACHABLE_REDIS,
        }
    }

    first = httpx.get(f"{relay_url}/readyz")
    second = httpx.get(f"{relay_url}/readyz")

    assert first.status_code == second.status_code == 200
    assert first.json() == {
        "status": "degraded",
        "checks": {"database": "ok", "cache": "failed"},
    }
    [warning] = health_log()  # once when it starts failing, not at every probe
    assert warning.levelno == logging.WARNING and "cache failed" in warning.getMessage()
    assert "127.0.0.1:1" not in first.text  # the reason is for the operator's log only


def test_readyz_is_503_naming_the_database_when_it_fails_and_logs_its_recovery(
    relay_url, monkeypatch, health_log
):
    database = health._database

    def unreachable():
        raise ConnectionError("database server not reachable")

    monkeypatch.setattr(health, "_database", unreachable)
    refused = httpx.get(f"{relay_url}/readyz")
    monkeypatch.setattr(health, "_database", database)
    recovered = httpx.get(f"{relay_url}/readyz")

    assert refused.status_code == 503
    assert refused.json()["checks"] == {
        "database": "failed",
        "cache": "ok",
        "cache.guards": "ok",
        "cache.shared": "ok",
    }
    assert "not reachable" not in refused.text
    assert recovered.status_code == 200
    messages = [record.getMessage() for record in health_log()]
    assert messages == [
        "readyz: database failed (ConnectionError: database server not reachable)",
        "readyz: database answers again",
    ]


def test_a_hanging_check_fails_readyz_without_piling_up_threads(relay_url, monkeypatch):
    release = threading.Event()
    started = []

    def hangs():
        started.append(True)
        release.wait(30)

    monkeypatch.setattr(health, "_database", hangs)
    monkeypatch.setattr(health, "CHECK_SECONDS", 0.2)
    try:
        answers = [httpx.get(f"{relay_url}/readyz", timeout=30) for _ in range(3)]
    finally:
        release.set()

    assert [answer.status_code for answer in answers] == [503, 503, 503]
    assert answers[-1].json()["checks"]["database"] == "failed"
    assert len(started) == 1  # later probes waited on the one already stuck


def test_health_answers_any_host_but_only_get_and_head(relay_url):
    # Not Django: ALLOWED_HOSTS does not apply, so a balancer may probe a node by its address.
    by_address = httpx.get(f"{relay_url}/readyz", headers={"Host": "10.1.2.3:8000"})
    head = httpx.head(f"{relay_url}/healthz")
    post = httpx.post(f"{relay_url}/healthz")

    assert by_address.status_code == 200
    assert head.status_code == 200 and head.content == b""
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
