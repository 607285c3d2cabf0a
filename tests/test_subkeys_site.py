"""The keys page for resellers: carve $X into one or many sub-keys, top them up, revoke them;
nobody else can carve, and nobody can touch another person's sub-key."""

import re

import pytest

from accounts.models import ApiKey
from accounts.services import create_api_key
from billing import subkeys
from tests.conftest import ALICE_CREDIT

pytestmark = pytest.mark.django_db

DOLLAR = 500_000


@pytest.fixture
def seller(client, carol):
    client.force_login(carol)
    return client


def test_a_reseller_carves_three_keys_and_sees_them_once(seller, carol, books_balance):
    page = seller.get("/keys").content.decode()
    assert 'id="carve-keys-form"' in page

    response = seller.post("/keys/carve", {"carve_usd": "1.50", "count": "3", "name": "shop"})

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    shown = re.findall(r"sk-[A-Za-z0-9]+", response.content.decode().split("carved-keys-value")[1])
    keys = ApiKey.objects.filter(user=carol, carved=True)
    assert len(keys) == 3 and all(k.remaining_quota == 750_000 for k in keys)
    assert {ApiKey.objects.find(k).get().id for k in shown[:3]} == {k.id for k in keys}
    carol.refresh_from_db()
    assert carol.quota == ALICE_CREDIT - 3 * 750_000
    books_balance()


def test_carving_beyond_the_balance_makes_nothing(seller, carol, books_balance):
    response = seller.post("/keys/carve", {"carve_usd": "15", "count": "2"})
    assert response.status_code == 400
    assert not ApiKey.objects.filter(user=carol).exists()
    books_balance()


@pytest.mark.parametrize(
    "body", [{"carve_usd": "0", "count": "1"}, {"carve_usd": "1", "count": "0"}, {}]
)
def test_a_bad_carve_form_is_a_400(seller, body):
    assert seller.post("/keys/carve", body).status_code == 400


def test_someone_not_a_reseller_has_no_form_and_cannot_carve(client, alice, books_balance):
    client.force_login(alice)
    assert 'id="carve-keys-form"' not in client.get("/keys").content.decode()
    assert client.post("/keys/carve", {"carve_usd": "1", "count": "1"}).status_code == 403
    assert not ApiKey.objects.filter(user=alice).exists()
    books_balance()


def test_top_up_and_revoke_from_the_page(seller, carol, books_balance):
    key, _ = create_api_key(user=carol)
    subkeys.carve_key(api_key=key, amount=DOLLAR)

    seller.post(f"/keys/{key.id}/top-up", {"amount_usd": "2"})
    key.refresh_from_db()
    assert key.remaining_quota == 3 * DOLLAR

    seller.post(f"/keys/{key.id}/delete")  # refused: a sub-key is revoked, not deleted
    assert ApiKey.objects.filter(id=key.id).exists()
    seller.post(f"/keys/{key.id}/revoke")
    key.refresh_from_db()
    carol.refresh_from_db()
    assert key.revoked_at and key.remaining_quota == 0 and carol.quota == ALICE_CREDIT
    seller.post(f"/keys/{key.id}/toggle")
    key.refresh_from_db()
    assert key.status == ApiKey.Status.DISABLED
    books_balance()


def test_another_persons_sub_key_is_a_404(client, carol, bob):
    key, _ = create_api_key(user=carol)
    subkeys.carve_key(api_key=key, amount=DOLLAR)
    client.force_login(bob)
    assert client.post(f"/keys/{key.id}/top-up", {"amount_usd": "1"}).status_code == 404
    assert client.post(f"/keys/{key.id}/revoke").status_code == 404


def test_the_forms_need_a_login(client, carol):
    for path in ("/keys/carve", "/keys/1/top-up", "/keys/1/revoke"):
        response = client.post(path)
        assert response.status_code == 302 and "login" in response["Location"]
