"""Django admin: every model is there, money moves through billing, secrets stay secret."""

import pytest
from django.contrib import admin
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpRequest

from accounts.models import ApiKey, User
from billing.models import LedgerEntry
from relay.models import Channel

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops_client(client, ops):
    client.force_login(ops)
    return client


def test_every_model_is_registered():
    from django.apps import apps

    for app in ("accounts", "billing", "relay"):
        for model in apps.get_app_config(app).get_models():
            assert admin.site.is_registered(model), model


def test_a_balance_change_in_admin_is_a_ledger_row(ops_client, ops, alice):
    page = ops_client.get(f"/admin/accounts/user/{alice.id}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(
        {
            "adjust_quota": "-500",
            "adjust_note": "refund reversal",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        }
    )
    data.pop("password", None)
    data.pop("last_login", None)
    response = ops_client.post(f"/admin/accounts/user/{alice.id}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    assert User.objects.get(id=alice.id).quota == 10_000_000 - 500
    entry = LedgerEntry.objects.filter(user=alice).first()
    assert (entry.amount, entry.note, entry.created_by) == (-500, "refund reversal", ops)


def test_the_ledger_cannot_be_edited_or_deleted_in_admin(ops_client, alice):
    entry = LedgerEntry.objects.filter(user=alice).first()
    assert (
        ops_client.post(
            f"/admin/billing/ledgerentry/{entry.id}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert LedgerEntry.objects.filter(id=entry.id).exists()
    assert ops_client.get("/admin/billing/ledgerentry/add/").status_code == 403


def test_a_channel_key_is_write_only(ops_client):
    response = ops_client.post(
        "/admin/relay/channel/add/",
        {
            "type": "openai",
            "name": "main",
            "base_url": "http://127.0.0.1:9",
            "served_models": '["gpt-4o"]',
            "model_mapping": "{}",
            "groups": '["default"]',
            "priority": "0",
            "weight": "1",
            "status": "enabled",
            "key": "upstream-very-secret",
        },
    )
    assert response.status_code == 302
    channel = Channel.objects.get()
    assert channel.api_key() == "upstream-very-secret"
    page = ops_client.get(f"/admin/relay/channel/{channel.id}/change/").content.decode()
    assert "upstream-very-secret" not in page and channel.encrypted_key not in page
    # Saving without a key keeps the old one.
    ops_client.post(
        f"/admin/relay/channel/{channel.id}/change/",
        {
            "type": "openai",
            "name": "renamed",
            "base_url": "http://127.0.0.1:9",
            "served_models": '["gpt-4o"]',
            "model_mapping": "{}",
            "groups": '["default"]',
            "priority": "0",
            "weight": "1",
            "status": "enabled",
            "key": "",
        },
    )
    channel.refresh_from_db()
    assert (channel.name, channel.api_key()) == ("renamed", "upstream-very-secret")


KEY_FORM = {
    "name": "from admin",
    "status": "enabled",
    "unlimited_quota": "",
    "allowed_models": "[]",
    "allowed_ips": "[]",
    "limit": "2000",
}


def add_key_in_admin(ops_client, user):
    response = ops_client.post("/admin/accounts/apikey/add/", {"user": user.id, **KEY_FORM})
    assert response.status_code == 200, response.content[:2000]
    return response, response.context["key"]


def test_a_key_made_in_admin_is_shown_once_and_stored_hashed(ops_client, alice):
    response, key = add_key_in_admin(ops_client, alice)
    page = response.content.decode()
    assert page.count(key) == 1
    assert "will not be shown here again" in page
    assert "no-store" in response["Cache-Control"]
    api_key = ApiKey.objects.find(key).get()
    assert (api_key.user, api_key.unlimited_quota, api_key.remaining_quota) == (alice, False, 2000)
    assert LedgerEntry.objects.get(api_key=api_key).key_amount == 2000
    assert key not in str(ApiKey.objects.filter(id=api_key.id).values().get())
    page = ops_client.get(f"/admin/accounts/apikey/{api_key.id}/change/").content.decode()
    assert key not in page


def test_a_key_made_in_admin_travels_in_no_cookie_session_or_message(ops_client, alice):
    response, key = add_key_in_admin(ops_client, alice)
    assert key not in str(response.cookies)
    assert key not in str(ops_client.cookies)
    # The messages cookie is signed and may be compressed: read it as Django would.
    request = HttpRequest()
    request.COOKIES = {name: morsel.value for name, morsel in ops_client.cookies.items()}
    assert not [m for m in CookieStorage(request) if key in str(m)]
    assert key not in str(dict(ops_client.session.items()))
    # Nothing is left for the next page to show either.
    following = ops_client.get("/admin/accounts/apikey/")
    assert key not in following.content.decode()
    assert not [m for m in following.context["messages"] if key in str(m)]


def test_the_key_page_links_back_to_the_new_key(ops_client, alice):
    response, key = add_key_in_admin(ops_client, alice)
    api_key = ApiKey.objects.find(key).get()
    assert f'href="/admin/accounts/apikey/{api_key.id}/change/"' in response.content.decode()
