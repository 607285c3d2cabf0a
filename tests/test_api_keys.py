"""REST API: a person's own keys (list, create one or many, read, change, delete)."""

import pytest

from accounts.models import ApiKey
from accounts.services import create_api_key
from accounts.tokens import create_access_token
from billing.models import LedgerEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client, alice):
    _, token = create_access_token(user=alice, name="tests")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def bobs_key(bob):
    key, _ = create_api_key(user=bob, name="bob's")
    return key


def post(api, path, body):
    return api.post(path, body, content_type="application/json")


def patch(api, path, body):
    return api.patch(path, body, content_type="application/json")


def test_listing_shows_only_my_keys_and_never_the_key(api, alice, bobs_key):
    mine, clear = create_api_key(user=alice, name="laptop")
    response = api.get("/api/keys")
    assert response.status_code == 200
    assert [key["id"] for key in response.json()] == [mine.id]
    assert clear not in response.content.decode()
    assert response.json()[0]["hint"] == mine.hint


def test_creating_a_key_shows_it_once(api, alice, books_balance):
    response = post(
        api,
        "/api/keys",
        {
            "name": "ci",
            "quota": 500_000,
            "allowed_models": ["gpt-4o"],
            "allowed_ips": ["10.0.0.0/8"],
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["key"].startswith("sk-") and body["remaining_quota"] == 500_000
    key = ApiKey.objects.get(id=body["id"])
    assert (key.user, key.allowed_models, key.allowed_ips) == (alice, ["gpt-4o"], ["10.0.0.0/8"])
    assert ApiKey.objects.find(body["key"]).get() == key
    assert body["key"] not in api.get(f"/api/keys/{key.id}").content.decode()
    assert LedgerEntry.objects.get(api_key=key).key_amount == 500_000
    books_balance()


def test_bulk_creation_makes_that_many(api, alice):
    response = post(api, "/api/keys", {"name": "customer", "count": 3, "quota": 1000})
    assert response.status_code == 201
    keys = response.json()["keys"]
    assert len({key["key"] for key in keys}) == 3
    assert ApiKey.objects.filter(user=alice, name="customer").count() == 3


@pytest.mark.parametrize(
    "body",
    [
        {"count": 0},
        {"count": 101},
        {"quota": -1},
        {"allowed_ips": ["not-an-ip"]},
        {"allowed_models": "gpt-4o"},
        {"expires_at": "tomorrow"},
    ],
)
def test_bad_settings_are_a_400_naming_the_field(api, alice, body):
    response = post(api, "/api/keys", body)
    assert response.status_code == 400
    assert set(response.json()) == set(body)
    assert not ApiKey.objects.filter(user=alice).exists()


def test_changing_a_key(api, alice, books_balance):
    key, _ = create_api_key(user=alice, name="old")
    response = patch(api, f"/api/keys/{key.id}", {"name": "new", "status": "disabled", "quota": 42})
    assert response.status_code == 200, response.content
    key.refresh_from_db()
    assert (key.name, key.status, key.unlimited_quota, key.remaining_quota) == (
        "new",
        "disabled",
        False,
        42,
    )
    assert patch(api, f"/api/keys/{key.id}", {"quota": None}).json()["unlimited_quota"] is True
    assert patch(api, f"/api/keys/{key.id}", {"status": "lost"}).status_code == 400
    books_balance()


def test_deleting_a_key(api, alice):
    key, _ = create_api_key(user=alice)
    assert api.delete(f"/api/keys/{key.id}").status_code == 204
    assert not ApiKey.objects.filter(id=key.id).exists()
    assert api.delete(f"/api/keys/{key.id}").status_code == 404


def test_someone_elses_key_is_a_404_whatever_the_method(api, bobs_key):
    path = f"/api/keys/{bobs_key.id}"
    assert api.get(path).status_code == 404
    assert patch(api, path, {"name": "mine now"}).status_code == 404
    assert api.delete(path).status_code == 404
    bobs_key.refresh_from_db()
    assert bobs_key.name == "bob's"


def test_a_missing_key_is_a_404(api):
    assert api.get("/api/keys/999999").status_code == 404
