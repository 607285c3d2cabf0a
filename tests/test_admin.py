"""Django admin: every model is there, money moves through billing, secrets stay secret."""

import pytest
from django.contrib import admin

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


def test_a_key_made_in_admin_is_shown_once_and_stored_hashed(ops_client, alice):
    response = ops_client.post(
        "/admin/accounts/apikey/add/",
        {
            "user": alice.id,
            "name": "from admin",
            "status": "enabled",
            "unlimited_quota": "",
            "allowed_models": "[]",
            "allowed_ips": "[]",
            "limit": "2000",
        },
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    key = shown[0].rsplit(" ", 1)[-1]
    api_key = ApiKey.objects.find(key).get()
    assert (api_key.unlimited_quota, api_key.remaining_quota) == (False, 2000)
    assert LedgerEntry.objects.get(api_key=api_key).key_amount == 2000
    page = ops_client.get(f"/admin/accounts/apikey/{api_key.id}/change/").content.decode()
    assert key not in page
