"""REST API authentication: personal access tokens and the site's session (with CSRF)."""

from datetime import timedelta

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AccessToken
from accounts.services import create_api_key
from accounts.tokens import create_access_token, revoke_access_token

pytestmark = pytest.mark.django_db

ENDPOINTS = ["/api/profile", "/api/balance", "/api/keys", "/api/keys/1", "/api/logs", "/api/tiers"]


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_without_credentials_every_endpoint_answers_401(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert (
        client.post("/api/redeem", {"code": "x"}, content_type="application/json").status_code
        == 401
    )


def test_a_token_lets_its_owner_in(client, alice):
    _, token = create_access_token(user=alice, name="script")
    response = client.get("/api/profile", **bearer(token))
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize(
    "header",
    ["Bearer slt-" + "x" * 40, "Bearer", "Bearer a b", "Bearer slt-\u00e9"],
)
def test_a_wrong_token_is_refused(client, alice, header):
    response = client.get("/api/profile", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert "alice" not in response.content.decode()


def test_an_api_key_is_not_an_access_token(client, alice):
    _, key = create_api_key(user=alice)
    response = client.get("/api/profile", **bearer(key))
    assert response.status_code == 401
    assert "personal access token" in response.json()["detail"]
    assert key not in response.content.decode()


def test_a_revoked_token_and_an_inactive_user_are_refused(client, alice):
    row, token = create_access_token(user=alice, name="old")
    assert client.get("/api/balance", **bearer(token)).status_code == 200
    revoke_access_token(user=alice, token_id=row.id)
    assert client.get("/api/balance", **bearer(token)).status_code == 401
    _, other = create_access_token(user=alice, name="new")
    alice.is_active = False
    alice.save()
    assert client.get("/api/balance", **bearer(other)).status_code == 401


def test_last_use_is_written_at_most_once_a_minute(client, alice):
    row, token = create_access_token(user=alice, name="poller")
    client.get("/api/balance", **bearer(token))
    first = AccessToken.objects.get(id=row.id).last_used_at
    assert first is not None
    client.get("/api/balance", **bearer(token))
    assert AccessToken.objects.get(id=row.id).last_used_at == first
    AccessToken.objects.filter(id=row.id).update(last_used_at=first - timedelta(minutes=2))
    client.get("/api/balance", **bearer(token))
    assert AccessToken.objects.get(id=row.id).last_used_at > first - timedelta(seconds=1)


def test_the_session_works_for_reads_and_needs_csrf_for_writes(alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.get("/api/balance").status_code == 200
    response = browser.post("/api/keys", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    browser.get("/api/balance")  # any page: the CSRF cookie
    page = browser.get("/admin/login/")
    token = page.cookies.get("csrftoken") or browser.cookies.get("csrftoken")
    response = browser.post(
        "/api/keys",
        {"name": "x"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token.value,
    )
    assert response.status_code == 201


def test_a_token_needs_no_csrf(alice):
    _, token = create_access_token(user=alice, name="ci")
    script = Client(enforce_csrf_checks=True)
    response = script.post(
        "/api/keys", {"name": "from ci"}, content_type="application/json", **bearer(token)
    )
    assert response.status_code == 201


def test_over_real_http(relay_url, alice, bob):
    _, token = create_access_token(user=alice, name="http")
    bobs_key, _ = create_api_key(user=bob)
    with httpx.Client(base_url=relay_url, headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.get("/api/profile").json()["username"] == "alice"
        assert api.get(f"/api/keys/{bobs_key.id}").status_code == 404
        assert httpx.get(f"{relay_url}/api/profile").status_code == 401
    assert AccessToken.objects.get().last_used_at <= timezone.now()
