"""The operator's ledger tools in admin: a user's statement that ties to the ledger, the daily
summary with CSV and top spenders, the usage log (key and channel names, $ beside quota, date
range, search, totals, CSV), and adjustments that need a reason and record the operator."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from accounts.services import create_api_key
from billing import services as billing
from billing import subkeys
from billing.models import LedgerEntry, UsageLog
from relay.models import Channel
from tests.conftest import ALICE_CREDIT

pytestmark = pytest.mark.django_db

DOLLAR = 500_000


@pytest.fixture
def ops_client(client, ops):
    client.force_login(ops)
    return client


@pytest.fixture
def channel(db):
    return Channel.objects.create(type="openai", name="east-pool", base_url="http://x.invalid")


def a_call(user, key, channel, quota, **fields):
    """A settled call as the batch journals it, with its balance change (the books stay
    balanced: the user pays ``quota``)."""
    row = UsageLog.objects.create(
        user=user,
        api_key=key,
        channel_id=channel.id,
        endpoint="chat",
        model=fields.pop("model", "gpt-4o"),
        quota=quota,
        input_tokens=100,
        output_tokens=50,
        **fields,
    )
    User.objects.filter(id=user.id).update(quota=user.quota - quota)
    user.refresh_from_db()
    return row


def rows_of(response):
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_a_statement_opens_moves_by_kind_and_closes_on_the_balance(
    ops_client, alice, channel, books_balance
):
    key, _ = create_api_key(user=alice, name="laptop")
    a_call(alice, key, channel, 12_345)
    billing.grant(user=alice, amount=DOLLAR, kind=LedgerEntry.Kind.REDEMPTION, note="code")
    today = timezone.localdate()

    response = ops_client.get(
        "/admin/billing/ledgerentry/statement/",
        {"user": "alice", "start": str(today), "end": str(today)},
    )

    assert response.status_code == 200
    statement = response.context["statement"]
    alice.refresh_from_db()
    assert statement.opening == 0  # the test credit came today too
    assert statement.movements == {
        "adjustment": ALICE_CREDIT,
        "redemption": DOLLAR,
        "consume (calls)": -12_345,
    }
    assert statement.closing == alice.quota == statement.balance_now
    books_balance()

    exported = rows_of(
        ops_client.get(
            "/admin/billing/ledgerentry/statement/",
            {"user": "alice", "start": str(today), "end": str(today), "format": "csv"},
        )
    )
    assert exported[0] == ["line", "quota", "usd"]
    assert exported[-1][:2] == ["closing", str(alice.quota)]


def test_a_later_statement_opens_where_the_earlier_one_closed(ops_client, alice):
    tomorrow = timezone.localdate() + timedelta(days=1)
    response = ops_client.get(
        "/admin/billing/ledgerentry/statement/",
        {"user": "alice", "start": str(tomorrow), "end": str(tomorrow)},
    )
    statement = response.context["statement"]
    assert statement.opening == statement.closing == ALICE_CREDIT
    assert statement.movements == {}


def test_a_resellers_statement_shows_transfers_and_not_the_sub_keys_calls(
    ops_client, carol, channel
):
    key, _ = create_api_key(user=carol)
    subkeys.carve_key(api_key=key, amount=2 * DOLLAR)
    UsageLog.objects.create(
        user=carol, api_key=key, endpoint="chat", model="gpt-4o", quota=777, carved=True
    )
    today = timezone.localdate()
    statement = ops_client.get(
        "/admin/billing/ledgerentry/statement/",
        {"user": "carol", "start": str(today), "end": str(today)},
    ).context["statement"]
    assert statement.movements["to_subkey"] == -2 * DOLLAR
    assert "consume (calls)" not in statement.movements
    assert statement.closing == ALICE_CREDIT - 2 * DOLLAR


def test_the_daily_summary_splits_revenue_and_consumption(ops_client, alice, bob, channel):
    key, _ = create_api_key(user=alice)
    a_call(alice, key, channel, 3_000, model="gpt-4o")
    a_call(alice, key, channel, 2_000, model="gpt-4o-mini")
    billing.grant(user=bob, amount=DOLLAR, kind=LedgerEntry.Kind.REDEMPTION, note="code")
    today = str(timezone.localdate())

    page = ops_client.get("/admin/billing/ledgerentry/summary/", {"start": today, "end": today})
    assert page.status_code == 200
    assert [row["user__username"] for row in page.context["spenders"]] == ["alice"]
    exported = rows_of(
        ops_client.get(
            "/admin/billing/ledgerentry/summary/", {"start": today, "end": today, "format": "csv"}
        )
    )
    lines = {tuple(row[1:4]) for row in exported[1:]}
    assert ("revenue", "redemption", str(DOLLAR)) in lines
    assert ("model", "gpt-4o", "3000") in lines and ("model", "gpt-4o-mini", "2000") in lines
    assert ("channel", "east-pool", "5000") in lines
    assert ("group", "default", "5000") in lines


def test_the_usage_log_names_keys_and_channels_with_dollars_and_totals(ops_client, alice, channel):
    key, _ = create_api_key(user=alice, name="laptop")
    a_call(alice, key, channel, 250_000)
    a_call(alice, key, channel, 250_000)

    page = ops_client.get("/admin/billing/usagelog/")
    body = page.content.decode()
    assert page.status_code == 200
    assert "laptop" in body and "east-pool" in body
    assert "$0.5<br><small>250,000 quota</small>" in body  # dollars beside quota
    assert page.context["totals"]["quota"] == 500_000 and page.context["totals"]["usd"] == "$1"


def test_the_usage_log_searches_by_channel_and_filters_by_dates(ops_client, alice, bob, channel):
    other = Channel.objects.create(type="openai", name="west-pool", base_url="http://y.invalid")
    key, _ = create_api_key(user=alice, name="laptop")
    mine = a_call(alice, key, channel, 100)
    a_call(bob, None, other, 200)
    UsageLog.objects.filter(id=mine.id).update(created_at=timezone.now() - timedelta(days=10))

    found = ops_client.get("/admin/billing/usagelog/", {"q": "east-pool"})
    assert [row.id for row in found.context["cl"].result_list] == [mine.id]
    today = str(timezone.localdate())
    recent = ops_client.get("/admin/billing/usagelog/", {"created_from": today})
    assert [row.user.username for row in recent.context["cl"].result_list] == ["bob"]
    assert recent.context["totals"]["quota"] == 200

    exported = rows_of(ops_client.get("/admin/billing/usagelog/export.csv", {"q": "laptop"}))
    assert exported[0][:5] == ["created_at", "user", "key", "model", "channel"]
    assert [row[1:5] for row in exported[1:]] == [["alice", "laptop", "gpt-4o", "east-pool"]]


def test_the_tools_are_for_staff_only(client, alice):
    client.force_login(alice)
    for path in (
        "/admin/billing/ledgerentry/statement/",
        "/admin/billing/ledgerentry/summary/",
        "/admin/billing/usagelog/export.csv",
    ):
        response = client.get(path)
        assert response.status_code == 302 and "login" in response["Location"]


def test_an_adjustment_without_a_reason_is_refused(ops_client, alice):
    page = ops_client.get(f"/admin/accounts/user/{alice.id}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update({"adjust_quota": "500", "date_joined_0": "2026-01-01", "date_joined_1": "00:00"})
    data.pop("password", None)
    data.pop("last_login", None)
    data["adjust_note"] = ""

    response = ops_client.post(f"/admin/accounts/user/{alice.id}/change/", data)

    assert response.status_code == 200
    assert "Say why" in response.content.decode()
    assert User.objects.get(id=alice.id).quota == ALICE_CREDIT


def test_admin_revokes_sub_keys_and_never_deletes_them(ops_client, carol, books_balance):
    key, _ = create_api_key(user=carol)
    subkeys.carve_key(api_key=key, amount=DOLLAR)

    assert ops_client.get(f"/admin/accounts/apikey/{key.id}/delete/").status_code == 403
    response = ops_client.post(
        "/admin/accounts/apikey/", {"action": "revoke_sub_keys", "_selected_action": [key.id]}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    carol.refresh_from_db()
    assert key.revoked_at and carol.quota == ALICE_CREDIT
    books_balance()


def test_admin_never_moves_a_key_to_another_owner_nor_re_enables_a_revoked_sub_key(
    ops_client, carol, bob, books_balance
):
    key, _ = create_api_key(user=carol, name="customer")
    subkeys.carve_key(api_key=key, amount=DOLLAR)
    subkeys.revoke_key(api_key=key)
    form = {
        "user": bob.id,
        "name": "renamed",
        "status": "enabled",
        "allowed_models": "[]",
        "allowed_ips": "[]",
    }
    response = ops_client.post(f"/admin/accounts/apikey/{key.id}/change/", form)
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.user, key.name, key.status) == (carol, "renamed", "disabled")
    books_balance()
