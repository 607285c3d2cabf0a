"""Every REST endpoint's refusals in one table: 401 without credentials, 403 for a session
write without CSRF, 404 for what is not yours or not there, 400 for a body that makes no
sense; and alice's key id in bob's token is a 404 whatever the method."""

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.services import create_api_key
from accounts.tokens import create_access_token
from billing import subkeys
from billing.models import VipTier

pytestmark = pytest.mark.django_db

# (method, path, body): every endpoint that needs a login, {key} and {tier} filled in below.
ENDPOINTS = [
    ("get", "/api/profile", None),
    ("patch", "/api/profile", {"low_balance_threshold": 1_000}),
    ("get", "/api/balance", None),
    ("post", "/api/redeem", {"code": "SLC-X"}),
    ("get", "/api/tiers", None),
    ("post", "/api/tiers/{tier}/buy", None),
    ("get", "/api/keys", None),
    ("post", "/api/keys", {"name": "x"}),
    ("get", "/api/keys/{key}", None),
    ("patch", "/api/keys/{key}", {"name": "y"}),
    ("delete", "/api/keys/{key}", None),
    ("post", "/api/keys/{key}/top-up", {"amount": 1_000}),
    ("post", "/api/keys/{key}/revoke", None),
    ("get", "/api/logs", None),
]
WRITES = [endpoint for endpoint in ENDPOINTS if endpoint[0] != "get"]


@pytest.fixture(autouse=True)
def no_guesses():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def tier(db):
    return VipTier.objects.create(name="VIP", group="vip", days=30, price=100_000)


@pytest.fixture
def carols_sub_key(carol):
    key, _ = create_api_key(user=carol, name="customer")
    subkeys.carve_key(api_key=key, amount=100_000)
    return key


def call(client, method, path, body, **headers):
    send = getattr(client, method)
    if body is None:
        return send(path, **headers)
    return send(path, body, content_type="application/json", **headers)


def token_of(user) -> dict:
    _, token = create_access_token(user=user, name="tests")
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_without_credentials_it_is_a_401_and_nothing_moves(
    client, carols_sub_key, tier, method, path, body, books_balance
):
    path = path.format(key=carols_sub_key.id, tier=tier.id)
    response = call(client, method, path, body)
    assert response.status_code == 401
    carols_sub_key.refresh_from_db()
    assert carols_sub_key.remaining_quota == 100_000 and carols_sub_key.revoked_at is None
    books_balance()


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_session_write_without_csrf_is_a_403(carol, carols_sub_key, tier, method, path, body):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(carol)
    path = path.format(key=carols_sub_key.id, tier=tier.id)
    response = call(browser, method, path, body)
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    carols_sub_key.refresh_from_db()
    assert carols_sub_key.remaining_quota == 100_000 and carols_sub_key.revoked_at is None


KEY_ENDPOINTS = [endpoint for endpoint in ENDPOINTS if "{key}" in endpoint[1]]


@pytest.mark.parametrize(("method", "path", "body"), KEY_ENDPOINTS)
def test_someone_elses_key_is_a_404_and_untouched(
    client, bob, carols_sub_key, method, path, body, books_balance
):
    response = call(client, method, path.format(key=carols_sub_key.id), body, **token_of(bob))
    assert response.status_code == 404
    assert "customer" not in response.content.decode()
    carols_sub_key.refresh_from_db()
    assert carols_sub_key.name == "customer" and carols_sub_key.remaining_quota == 100_000
    assert carols_sub_key.revoked_at is None
    books_balance()


@pytest.mark.parametrize(("method", "path", "body"), KEY_ENDPOINTS)
def test_a_key_that_does_not_exist_is_a_404(client, carol, method, path, body):
    response = call(client, method, path.format(key=999_999), body, **token_of(carol))
    assert response.status_code == 404


def test_a_tier_that_does_not_exist_or_is_not_for_sale_is_a_404(client, alice, tier):
    headers = token_of(alice)
    assert client.post("/api/tiers/999999/buy", **headers).status_code == 404
    VipTier.objects.filter(id=tier.id).update(is_active=False)
    assert client.post(f"/api/tiers/{tier.id}/buy", **headers).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("patch", "/api/profile", {"low_balance_threshold": -1}),
        ("patch", "/api/profile", {"low_balance_threshold": "a lot"}),
        ("post", "/api/redeem", {}),
        ("post", "/api/redeem", {"code": ""}),
        ("post", "/api/keys/{key}/top-up", {}),
        ("post", "/api/keys/{key}/top-up", {"amount": 0}),
        ("post", "/api/keys/{key}/top-up", {"amount": 10**15}),  # more than her balance
        ("post", "/api/keys", {"carve": -5}),
        ("post", "/api/keys", {"count": 0}),
        ("get", "/api/logs?start=yesterday", None),
    ],
)
def test_a_body_that_makes_no_sense_is_a_400_and_moves_nothing(
    client, carol, carols_sub_key, method, path, body, books_balance
):
    carol.refresh_from_db()
    before = carol.quota
    response = call(client, method, path.format(key=carols_sub_key.id), body, **token_of(carol))
    assert response.status_code == 400, response.content
    carol.refresh_from_db()
    carols_sub_key.refresh_from_db()
    assert (carol.quota, carols_sub_key.remaining_quota) == (before, 100_000)
    books_balance()


def test_a_tier_the_balance_cannot_pay_is_a_400(client, db, tier):
    from accounts.services import create_user

    poor = create_user(username="poor", password="x")
    response = client.post(f"/api/tiers/{tier.id}/buy", **token_of(poor))
    assert response.status_code == 400
    assert response.json()["reason"] == "insufficient_balance"
