"""The site's rate limits stay out of the way while Redis is away (config.rate_limit_cache):
signing in works, and guesses at codes still fail closed."""

import time

import pytest
from django.core.cache import caches

from accounts.services import create_user

pytestmark = pytest.mark.django_db

DEAD_REDIS = {
    "LOCATION": "redis://127.0.0.1:1/0",
    "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
}


@pytest.fixture
def redis_away(settings):
    settings.CACHES = {
        **settings.CACHES,
        "default": {"BACKEND": "config.rate_limit_cache.FailOpenRedisCache", **DEAD_REDIS},
        "guards": {"BACKEND": "django.core.cache.backends.redis.RedisCache", **DEAD_REDIS},
    }
    type(caches["default"])._down_until = 0.0
    yield
    type(caches["default"])._down_until = 0.0


def test_the_rate_limit_cache_answers_not_there_and_drops_writes_when_redis_is_away(redis_away):
    limits = caches["default"]
    began = time.monotonic()
    assert limits.get("count", 0) == 0
    limits.set("count", 3)
    assert limits.add("lock", 1) is True  # a lock is "taken", so nobody is held up
    assert limits.get_many(["a", "b"]) == {}
    assert time.monotonic() - began < 1.0  # one socket timeout, then left alone


def test_signing_in_works_while_redis_is_away(redis_away, client):
    create_user(username="dora", password="a-long-password-7", email="dora@example.com")

    response = client.post(
        "/accounts/login/", {"login": "dora", "password": "a-long-password-7"}, follow=True
    )

    assert response.status_code == 200
    assert response.wsgi_request.user.username == "dora"


def test_guesses_at_codes_still_fail_closed_while_redis_is_away(redis_away, alice):
    from billing.redemption import RedemptionRefused, redeem_code

    with pytest.raises(RedemptionRefused) as refused:
        redeem_code(user=alice, code="SLC-" + "A" * 26, ip="10.0.0.1")
    assert refused.value.reason == "too_many_attempts"
