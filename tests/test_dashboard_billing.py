"""OpenAI's old billing endpoints, /v1/dashboard/billing/subscription and /usage (and the
same without /v1), answered about the calling key in OpenAI's shapes."""

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.services import create_api_key
from billing import services as billing
from billing import subkeys
from tests.conftest import ALICE_CREDIT, settled_usage

DOLLAR = 500_000
SUBSCRIPTION_FIELDS = {
    "object",
    "has_payment_method",
    "soft_limit_usd",
    "hard_limit_usd",
    "system_hard_limit_usd",
    "access_until",
}


def get(url: str, key: str | None, path: str, **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{url}{path}", headers=headers, params=params, timeout=10)


def call(make_openai, key: str) -> None:
    make_openai(key).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_a_carved_key_sees_its_own_balance_and_expiry(relay_url, carol, prefix):
    expires = timezone.now() + timedelta(days=30)
    key, clear = create_api_key(user=carol, expires_at=expires)
    subkeys.carve_key(api_key=key, amount=3 * DOLLAR)

    response = get(relay_url, clear, f"{prefix}/dashboard/billing/subscription")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == SUBSCRIPTION_FIELDS
    assert body["object"] == "billing_subscription"
    assert body["hard_limit_usd"] == body["soft_limit_usd"] == 3.0
    assert body["access_until"] == int(expires.timestamp())


def test_an_unlimited_key_sees_its_owners_balance_and_a_limited_key_its_allowance(relay_url, alice):
    _, unlimited = create_api_key(user=alice)
    _, limited = create_api_key(user=alice, quota=DOLLAR // 2)

    path = "/v1/dashboard/billing/subscription"
    assert get(relay_url, unlimited, path).json()["hard_limit_usd"] == ALICE_CREDIT / DOLLAR
    assert get(relay_url, limited, path).json()["hard_limit_usd"] == 0.5
    assert get(relay_url, limited, path).json()["access_until"] == 0


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_usage_sums_the_keys_calls_in_cents_by_day(
    relay_url, carol, openai_channel, make_openai, prefix
):
    key, clear = create_api_key(user=carol)
    subkeys.carve_key(api_key=key, amount=DOLLAR)
    _, other = create_api_key(user=carol, name="not this one")
    call(make_openai, clear)
    call(make_openai, clear)
    call(make_openai, other)
    rows = settled_usage(3)
    mine = sum(row.quota for row in rows if row.api_key_id == key.id)
    today = timezone.localdate()

    response = get(
        relay_url,
        clear,
        f"{prefix}/dashboard/billing/usage",
        start_date=str(today - timedelta(days=3)),
        end_date=str(today + timedelta(days=1)),
    )

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["total_usage"] == pytest.approx(mine * 100 / DOLLAR)
    [day] = body["daily_costs"]
    assert day["line_items"] == [{"name": "gpt-4o", "cost": pytest.approx(mine * 100 / DOLLAR)}]


def test_usage_outside_the_range_is_not_counted(relay_url, alice, openai_channel, make_openai):
    _, clear = create_api_key(user=alice)
    call(make_openai, clear)
    settled_usage(1)
    yesterday = timezone.localdate() - timedelta(days=1)

    response = get(
        relay_url,
        clear,
        "/v1/dashboard/billing/usage",
        start_date=str(yesterday - timedelta(days=5)),
        end_date=str(yesterday),
    )
    assert response.json()["total_usage"] == 0
    assert response.json()["daily_costs"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"start_date": "yesterday"},
        {"start_date": "2024-02-10", "end_date": "2024-02-01"},
        {"start_date": "2024-01-01", "end_date": "2024-12-31"},
    ],
)
def test_bad_dates_are_a_400_in_openais_shape(relay_url, alice, params):
    _, clear = create_api_key(user=alice)
    response = get(relay_url, clear, "/v1/dashboard/billing/usage", **params)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_no_key_or_a_wrong_key_is_a_401(relay_url, db, prefix):
    for key in (None, "sk-not-a-real-key"):
        response = get(relay_url, key, f"{prefix}/dashboard/billing/subscription")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_is_refused(relay_url, carol):
    key, clear = create_api_key(user=carol)
    subkeys.carve_key(api_key=key, amount=DOLLAR)
    subkeys.revoke_key(api_key=key)
    response = get(relay_url, clear, "/v1/dashboard/billing/subscription")
    assert response.status_code == 403


def test_post_is_a_405(relay_url, alice):
    _, clear = create_api_key(user=alice)
    for prefix in ("/v1", ""):
        response = httpx.post(
            f"{relay_url}{prefix}/dashboard/billing/subscription",
            headers={"Authorization": f"Bearer {clear}"},
            timeout=10,
        )
        assert response.status_code == 405


def test_a_reseller_spending_elsewhere_does_not_change_what_the_sub_key_sees(relay_url, carol):
    key, clear = create_api_key(user=carol)
    subkeys.carve_key(api_key=key, amount=DOLLAR)
    carol.refresh_from_db()
    billing.grant(user=carol, amount=-carol.quota, note="spent elsewhere")
    path = "/v1/dashboard/billing/subscription"
    assert get(relay_url, clear, path).json()["hard_limit_usd"] == 1.0
