"""REST API for resellers' sub-keys: POST /api/keys with ``carve`` (and ``count``), top-up and
revoke, with their 401/403/404/400 and ownership cases."""

import pytest

from accounts.models import ApiKey
from accounts.services import create_api_key
from accounts.tokens import create_access_token
from billing import subkeys
from billing.models import LedgerEntry
from tests.conftest import ALICE_CREDIT

pytestmark = pytest.mark.django_db

DOLLAR = 500_000


def client_for(client, user):
    _, token = create_access_token(user=user, name="tests")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def api(client, carol):
    return client_for(client, carol)


def post(api, path, body=None):
    return api.post(path, body or {}, content_type="application/json")


def carved_key(user, amount=DOLLAR):
    key, _ = create_api_key(user=user, name="customer")
    return subkeys.carve_key(api_key=key, amount=amount)


def test_a_reseller_carves_ten_sub_keys_in_one_request(api, carol, books_balance):
    response = post(api, "/api/keys", {"count": 10, "carve": DOLLAR, "name": "shop"})

    assert response.status_code == 201
    keys = response.json()["keys"]
    assert len(keys) == 10 and len({k["key"] for k in keys}) == 10
    assert all(k["carved"] and k["remaining_quota"] == DOLLAR for k in keys)
    assert all(k["remaining_usd"] == "1" for k in keys)
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT - 10 * DOLLAR
    books_balance()


def test_carving_more_than_the_balance_makes_no_key_at_all(api, carol, books_balance):
    response = post(api, "/api/keys", {"count": 3, "carve": ALICE_CREDIT // 2})

    assert response.status_code == 400
    assert response.json()["reason"] == "insufficient_balance"
    assert not ApiKey.objects.filter(user=carol).exists()
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT
    books_balance()


def test_a_user_who_is_not_a_reseller_cannot_carve(client, alice, books_balance):
    api = client_for(client, alice)
    response = post(api, "/api/keys", {"carve": DOLLAR})

    assert response.status_code == 403
    assert response.json()["reason"] == "not_reseller"
    assert not ApiKey.objects.filter(user=alice).exists()
    books_balance()


@pytest.mark.parametrize(
    "body", [{"carve": 0}, {"carve": -1}, {"carve": "lots"}, {"carve": DOLLAR, "quota": DOLLAR}]
)
def test_a_bad_carve_is_a_400(api, body):
    assert post(api, "/api/keys", body).status_code == 400


def test_top_up_moves_more_into_the_sub_key(api, carol, books_balance):
    key = carved_key(carol)
    response = post(api, f"/api/keys/{key.id}/top-up", {"amount": 2 * DOLLAR})

    assert response.status_code == 200
    assert response.json()["remaining_quota"] == 3 * DOLLAR
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT - 3 * DOLLAR
    books_balance()


@pytest.mark.parametrize("body", [{}, {"amount": 0}, {"amount": "x"}])
def test_a_bad_top_up_is_a_400(api, carol, body):
    key = carved_key(carol)
    assert post(api, f"/api/keys/{key.id}/top-up", body).status_code == 400


def test_a_plain_key_is_not_topped_up_nor_revoked(api, carol):
    key, _ = create_api_key(user=carol)
    for action, body in (("top-up", {"amount": 1}), ("revoke", {})):
        response = post(api, f"/api/keys/{key.id}/{action}", body)
        assert response.status_code == 400
        assert response.json()["reason"] == "not_carved"


def test_revoking_returns_the_rest_and_the_key_stays_disabled(api, carol, books_balance):
    key = carved_key(carol, 2 * DOLLAR)

    response = post(api, f"/api/keys/{key.id}/revoke")
    assert response.status_code == 200
    assert response.json()["returned"] == 2 * DOLLAR
    assert response.json()["key"]["status"] == "disabled"
    assert post(api, f"/api/keys/{key.id}/revoke").json()["returned"] == 0

    enabling = api.patch(
        f"/api/keys/{key.id}", {"status": "enabled"}, content_type="application/json"
    )
    assert enabling.status_code == 400
    assert post(api, f"/api/keys/{key.id}/top-up", {"amount": 1}).json()["reason"] == "revoked"
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT
    books_balance()


def test_a_sub_key_is_never_deleted_nor_given_a_limit(api, carol, books_balance):
    key = carved_key(carol)

    assert api.delete(f"/api/keys/{key.id}").status_code == 400
    setting = api.patch(f"/api/keys/{key.id}", {"quota": 10**9}, content_type="application/json")
    assert setting.status_code == 400
    key.refresh_from_db()
    assert key.remaining_quota == DOLLAR
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_LIMIT).exists()
    books_balance()


def test_another_persons_sub_key_is_a_404(client, carol, bob, books_balance):
    key = carved_key(carol)
    api = client_for(client, bob)
    assert post(api, f"/api/keys/{key.id}/top-up", {"amount": 1}).status_code == 404
    assert post(api, f"/api/keys/{key.id}/revoke").status_code == 404
    key.refresh_from_db()
    assert key.remaining_quota == DOLLAR and key.revoked_at is None
    books_balance()


def test_without_a_token_it_is_a_401(client, carol):
    key = carved_key(carol)
    assert post(client, "/api/keys", {"carve": DOLLAR}).status_code == 401
    assert post(client, f"/api/keys/{key.id}/top-up", {"amount": 1}).status_code == 401
    assert post(client, f"/api/keys/{key.id}/revoke").status_code == 401
