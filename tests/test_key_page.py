"""The key-holder's page, /key: a key's balance, expiry, models, usage and recent calls with the
key alone, nothing of the account behind it, and no key guessing."""

import re

import pytest
from django.test import Client

from accounts.models import SiteSettings
from accounts.services import create_api_key
from billing import services as billing
from billing import subkeys
from billing.models import UsageLog

pytestmark = pytest.mark.django_db

DOLLAR = 500_000


@pytest.fixture
def sub_key(carol):
    key, clear = create_api_key(user=carol, name="for a customer", allowed_models=["gpt-4o"])
    subkeys.carve_key(api_key=key, amount=5 * DOLLAR)
    return key, clear


def check(client, key: str):
    return client.post("/key", {"key": key})


def test_the_page_shows_the_keys_balance_models_usage_and_calls(client, carol, sub_key):
    key, clear = sub_key
    UsageLog.objects.create(
        user=carol,
        api_key=key,
        endpoint="chat",
        model="gpt-4o",
        quota=DOLLAR // 4,
        carved=True,
        input_tokens=12,
        output_tokens=34,
    )
    ApiKeyRow = type(key)
    ApiKeyRow.objects.filter(id=key.id).update(remaining_quota=5 * DOLLAR - DOLLAR // 4)

    response = check(client, clear)

    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(r'id="key-balance">\$4\.75<', page)
    assert "gpt-4o" in page and "$0.25" in page and ">12<" in page and ">34<" in page
    assert (
        response["Cache-Control"].startswith("max-age=0") or "no-store" in response["Cache-Control"]
    )


def test_the_page_names_nothing_of_the_reseller_nor_the_site(client, carol, sub_key):
    _, clear = sub_key
    site = SiteSettings.current()
    site.site_name = "Carol's Relay Wholesale"
    site.key_page_title = "Balance check"
    site.save()

    page = check(client, clear).content.decode()

    assert "<title>Balance check</title>" in page
    for secret in ("carol", "Carol's Relay Wholesale", "for a customer", clear):
        assert secret not in page
    assert 'href="/' not in page.replace('href="/static/', "")  # no link into the site


def test_a_reseller_spending_their_own_balance_does_not_move_the_keys(client, carol, sub_key):
    _, clear = sub_key
    carol.refresh_from_db()
    billing.grant(user=carol, amount=-carol.quota, note="spent elsewhere")
    assert re.search(r'id="key-balance">\$5\.00<', check(client, clear).content.decode())


def test_a_revoked_key_shows_as_revoked_with_nothing_left(client, sub_key):
    key, clear = sub_key
    subkeys.revoke_key(api_key=key)
    page = check(client, clear).content.decode()
    assert 'id="key-state">revoked<' in page and 'id="key-balance">$0.00<' in page


def test_an_unknown_key_is_a_404_and_an_empty_one_a_400(client, db):
    assert check(client, "sk-nope").status_code == 404
    assert check(client, "").status_code == 400
    assert client.get("/key").status_code == 200


def test_guessing_keys_is_refused_after_the_limit_even_with_a_right_key(client, sub_key, settings):
    settings.KEY_PAGE_FAILURES_PER_IP = 3
    _, clear = sub_key
    for attempt in range(3):
        assert check(client, f"sk-guess-{attempt}").status_code == 404
    refused = check(client, clear)
    assert refused.status_code == 429
    assert "Too many wrong keys" in refused.content.decode()
    assert "key-balance" not in refused.content.decode()


def test_the_form_needs_its_csrf_token(db, sub_key):
    _, clear = sub_key
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/key", {"key": clear}).status_code == 403
    page = strict.get("/key")
    token = page.cookies["csrftoken"].value
    answer = strict.post("/key", {"key": clear, "csrfmiddlewaretoken": token})
    assert answer.status_code == 200
