"""REST API: balance, profile, redemption, VIP tiers and prices (what a call will cost)."""

import math
from decimal import Decimal

import pytest
from django.core.cache import cache

from accounts.models import User
from accounts.tokens import create_access_token
from billing.models import GroupRatio, LedgerEntry, VipTier
from billing.redemption import make_batch
from tests.conftest import settled_usage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_guesses():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(client, alice):
    _, token = create_access_token(user=alice, name="tests")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def redeem(api, body):
    return api.post("/api/redeem", body, content_type="application/json")


def test_balance_and_profile(api, alice):
    assert api.get("/api/balance").json() == {
        "quota": 10_000_000,
        "usd": "20",
        "used_quota": 0,
        "used_usd": "0",
        "request_count": 0,
    }
    profile = api.get("/api/profile").json()
    assert (profile["username"], profile["group"], profile["tier"]) == ("alice", "default", None)
    assert profile["balance"]["quota"] == 10_000_000


def test_redeeming_a_code(api, alice, books_balance):
    _, [code] = make_batch(name="api", quota=500_000, count=1)
    response = redeem(api, {"code": code.lower()})
    assert response.status_code == 200
    assert response.json()["credited"] == 500_000
    assert response.json()["balance"]["quota"] == 10_500_000
    assert LedgerEntry.objects.filter(user=alice, kind="redemption").count() == 1
    again = redeem(api, {"code": code})
    assert again.status_code == 400
    assert again.json()["reason"] == "used"
    books_balance()


def test_redeem_refusals(api, settings):
    assert redeem(api, {}).status_code == 400
    settings.REDEEM_FAILURES_PER_USER = 2
    for _ in range(2):
        assert redeem(api, {"code": "SLC-" + "Z" * 26}).json()["reason"] == "unknown"
    response = redeem(api, {"code": "SLC-" + "Z" * 26})
    assert response.status_code == 429
    assert response.json()["reason"] == "too_many_attempts"
    assert "too many" in response.json()["detail"].lower()


def test_tiers_are_listed_and_bought(api, alice, books_balance):
    tier = VipTier.objects.create(name="VIP", group="vip", days=30, price=1_000_000)
    VipTier.objects.create(name="old", group="old", days=1, price=1, is_active=False)
    assert [each["name"] for each in api.get("/api/tiers").json()] == ["VIP"]
    response = api.post(f"/api/tiers/{tier.id}/buy")
    assert response.status_code == 200
    assert response.json()["tier"]["tier"] == "VIP" and response.json()["group"] == "vip"
    assert api.post("/api/tiers/999999/buy").status_code == 404
    User.objects.filter(id=alice.id).update(quota=0)
    LedgerEntry.objects.create(user=alice, kind="adjustment", amount=-9_000_000)  # books
    refused = api.post(f"/api/tiers/{tier.id}/buy")
    assert (refused.status_code, refused.json()["reason"]) == (400, "insufficient_balance")
    books_balance()


def test_pricing_is_public_and_shows_the_viewers_group(client, api, alice):
    GroupRatio.objects.create(name="vip", ratio=Decimal("0.5"))
    public = client.get("/api/pricing", HTTP_AUTHORIZATION="").json()
    alice.group = "vip"
    alice.save()
    mine = api.get("/api/pricing").json()
    assert (public["group"], mine["group"]) == ("default", "vip")
    assert Decimal(mine["group_ratio"]) == Decimal("0.5")
    mine_line, public_line = line(mine, "gpt-4o-mini"), line(public, "gpt-4o-mini")
    assert Decimal(mine_line["input_per_million"]) * 2 == Decimal(public_line["input_per_million"])


def line(listing, model):
    return next(each for each in listing["models"] if each["model"] == model)


def test_the_pricing_api_equals_the_charge(
    api, alice, alice_key, openai_channel, make_openai, mock_upstream, relay_url
):
    GroupRatio.objects.create(name="vip", ratio=Decimal("0.9"))
    alice.group = "vip"
    alice.save()
    openai_channel.groups = [*openai_channel.groups, "vip"]
    openai_channel.save()
    listed = line(api.get("/api/pricing").json(), "gpt-4o")
    make_openai(alice_key).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    [usage] = settled_usage(1)
    exact = (
        usage.input_tokens * Decimal(listed["input_per_million"])
        + usage.output_tokens * Decimal(listed["output_per_million"])
    ) / 1_000_000
    assert usage.quota == math.ceil(exact)
    assert usage.group_ratio == Decimal("0.9")


def test_the_schema_and_its_docs_page_are_served_from_here(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert text.startswith("openapi: 3") and "/api/keys/{key_id}" in text
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn" not in page.lower() and "unpkg" not in page.lower()
