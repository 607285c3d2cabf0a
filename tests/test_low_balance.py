"""The low-balance notice: one email when the balance falls to the user's threshold, none
again until it has risen above it (billing.notices, swept by a beat task)."""

import pytest
from django.core import mail

from accounts.tokens import create_access_token
from billing import notices
from billing import services as billing
from billing.tasks import notify_low_balances
from tests.conftest import ALICE_CREDIT

pytestmark = pytest.mark.django_db

DOLLAR = 500_000


def set_threshold(user, dollars):
    notices.set_low_balance_threshold(user=user, threshold=dollars * DOLLAR)


def test_crossing_the_threshold_sends_one_email_until_the_balance_rises_again(alice):
    set_threshold(alice, 5)
    assert notify_low_balances() == 0  # $20 is above $5
    billing.grant(user=alice, amount=-(ALICE_CREDIT - 4 * DOLLAR), note="spent")

    assert notify_low_balances() == 1
    assert notify_low_balances() == 0  # still low: no second email
    [email] = mail.outbox
    assert email.to == ["alice@example.com"] and "$4.00" in email.subject
    assert "$5.00" in email.body
    assert "余额不足" in email.subject and "提醒额度 $5.00" in email.body  # and in Chinese

    billing.grant(user=alice, amount=10 * DOLLAR, note="topped up")
    assert notify_low_balances() == 0  # above again: re-armed, nothing to say
    billing.grant(user=alice, amount=-12 * DOLLAR, note="spent again")
    assert notify_low_balances() == 1
    assert len(mail.outbox) == 2


def test_no_threshold_no_email_and_no_address_no_email(alice, bob):
    billing.grant(user=alice, amount=-ALICE_CREDIT, note="spent")
    set_threshold(bob, 100)  # bob has no email address
    assert notify_low_balances() == 0
    assert mail.outbox == []


def test_a_new_threshold_is_owed_its_own_notice(alice):
    set_threshold(alice, 25)
    assert notify_low_balances() == 1
    set_threshold(alice, 30)
    assert notify_low_balances() == 1
    notices.set_low_balance_threshold(user=alice, threshold=None)
    assert notify_low_balances() == 0


def test_a_mail_server_that_fails_is_tried_again_next_sweep(alice, settings, monkeypatch):
    set_threshold(alice, 25)
    monkeypatch.setattr(notices, "send_mail", lambda **kw: (_ for _ in ()).throw(OSError("down")))
    assert notify_low_balances() == 0
    monkeypatch.undo()
    assert notify_low_balances() == 1


def test_the_settings_page_sets_the_threshold_in_dollars(client, alice):
    client.force_login(alice)
    assert client.get("/settings").status_code == 200
    response = client.post("/settings/low-balance", {"threshold_usd": "2.50"})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.low_balance_threshold == 1_250_000
    assert 'value="2.5' in client.get("/settings").content.decode()

    assert client.post("/settings/low-balance", {"threshold_usd": "-1"}).status_code == 400
    client.post("/settings/low-balance", {"threshold_usd": ""})
    alice.refresh_from_db()
    assert alice.low_balance_threshold is None


def test_the_settings_form_needs_a_login(client, db):
    response = client.post("/settings/low-balance", {"threshold_usd": "1"})
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_api_sets_and_shows_the_threshold(client, alice):
    _, token = create_access_token(user=alice, name="tests")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    response = client.patch(
        "/api/profile", {"low_balance_threshold": DOLLAR}, content_type="application/json", **auth
    )
    assert response.status_code == 200
    assert response.json()["low_balance_threshold"] == DOLLAR
    bad = client.patch(
        "/api/profile", {"low_balance_threshold": -1}, content_type="application/json", **auth
    )
    assert bad.status_code == 400
    anonymous = client.patch(
        "/api/profile", {"low_balance_threshold": 1}, content_type="application/json"
    )
    assert anonymous.status_code == 401
