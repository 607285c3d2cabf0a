"""Sign-up, login, logout, password change and reset, mail that fails, closed sign-up and rate
limits: the account pages a person meets, through the Django test client.

Mail goes through real SMTP where it matters: a closed loopback port stands for a mail server
that is down, and aiosmtpd on loopback receives the password reset mail.
"""

import re
import socket
import time

import pytest
from aiosmtpd.controller import Controller
from allauth.account.models import EmailAddress
from django.core.cache import cache

from accounts.models import SiteSettings, User
from tests.conftest import free_port

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Pass-phrase-7"
SIGNUP = {
    "username": "dora",
    "email": "dora@example.com",
    "password1": PASSWORD,
    "password2": PASSWORD,
}


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """allauth counts attempts in the default cache: each test starts with none."""
    cache.clear()
    yield
    cache.clear()


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


@pytest.fixture
def mail_server_down(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = closed_port()
    settings.EMAIL_TIMEOUT = 5


class Inbox:
    """An aiosmtpd handler keeping every message it is handed."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode("utf8", "replace")))
        return "250 OK"


@pytest.fixture
def smtp_inbox(settings):
    """A real SMTP server on loopback, and the site's mail sent to it."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    yield inbox
    controller.stop()


def mail_failure_message(response) -> str:
    """The one message saying a mail did not go (tagged for the pages that would claim it did)."""
    [message] = [m for m in response.context["messages"] if "mail-failed" in m.tags]
    return str(message)


def test_signing_up_makes_the_account_signs_in_and_lands_on_the_dashboard(client, mailoutbox):
    response = client.post("/accounts/signup/", SIGNUP)
    assert response.status_code == 302
    assert response["Location"] == "/dashboard"
    user = User.objects.get(username="dora")
    assert user.email == "dora@example.com" and user.check_password(PASSWORD)
    assert EmailAddress.objects.filter(user=user, email="dora@example.com").exists()
    assert client.session["_auth_user_id"] == str(user.id)
    # Verification is "optional" by default: a confirmation mail goes, nobody waits for it.
    [mail] = mailoutbox
    assert mail.to == ["dora@example.com"] and "[Sluice]" in mail.subject
    assert "Hello from Sluice!" in mail.body and "example.com!" not in mail.body


def test_register_is_the_sign_up_page(client):
    response = client.get("/register")
    assert response.status_code == 200
    assert 'name="username"' in response.text and 'name="email"' in response.text
    assert '<link rel="stylesheet"' in response.text  # inside the site's frame


def test_an_email_is_required_and_usernames_and_emails_are_unique(client, alice):
    response = client.post("/accounts/signup/", {**SIGNUP, "email": ""})
    assert response.status_code == 200 and response.context["form"].errors["email"]
    response = client.post("/accounts/signup/", {**SIGNUP, "username": "alice"})
    assert response.context["form"].errors["username"]
    assert not User.objects.filter(username="dora").exists()


def test_signing_up_with_the_mail_server_down_never_answers_500(client, mail_server_down):
    response = client.post("/accounts/signup/", SIGNUP, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[0] == ("/dashboard", 302)
    user = User.objects.get(username="dora")  # the account is whole, and signed in
    assert client.session["_auth_user_id"] == str(user.id)
    message = mail_failure_message(response)
    assert "could not be sent just now" in message and "dora@example.com" in message


def test_with_mandatory_verification_a_failed_mail_is_explained_not_claimed(
    client, settings, mail_server_down
):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    response = client.post("/accounts/signup/", SIGNUP, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == "/accounts/confirm-email/"
    assert User.objects.filter(username="dora").exists()
    message = mail_failure_message(response)
    assert "Sign in again in a few minutes" in message
    assert "We have sent an email" not in response.text
    assert "_auth_user_id" not in client.session  # not in until the address is confirmed


def test_with_mandatory_verification_the_confirmation_link_lets_the_person_in(
    client, settings, mailoutbox
):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    response = client.post("/accounts/signup/", SIGNUP, follow=True)
    assert "We have sent an email" in response.text
    link = re.search(r"https?://testserver(/accounts/confirm-email/\S+/)", mailoutbox[0].body)
    response = client.post(link.group(1))
    assert response.status_code == 302
    assert EmailAddress.objects.get(email="dora@example.com").verified
    assert client.session["_auth_user_id"] == str(User.objects.get(username="dora").id)


def test_the_password_reset_mail_arrives_by_smtp_and_its_link_sets_a_new_password(
    client, alice, smtp_inbox
):
    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    deadline = time.monotonic() + 5
    while not smtp_inbox.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    [(recipients, message)] = smtp_inbox.messages
    assert recipients == ["alice@example.com"]
    link = re.search(r"https?://testserver(/accounts/password/reset/key/\S+/)", message)
    response = client.get(link.group(1))  # allauth moves the key into the session
    assert response.status_code == 302
    form_url = response["Location"]
    new_password = "another-Long-pass-9"
    response = client.post(form_url, {"password1": new_password, "password2": new_password})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new_password)


def test_a_password_reset_with_the_mail_server_down_says_what_to_do(
    client, alice, mail_server_down
):
    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"}, follow=True)
    assert response.status_code == 200
    message = mail_failure_message(response)
    assert "could not be sent just now" in message and "try again in a few minutes" in message
    assert "We have sent you an email" not in response.text


def test_people_log_in_with_username_or_email_and_log_out_with_a_post(client, alice):
    response = client.post("/accounts/login/", {"login": "alice", "password": "alice-password"})
    assert response.status_code == 302 and response["Location"] == "/dashboard"
    client.post("/accounts/logout/")
    assert "_auth_user_id" not in client.session
    response = client.post(
        "/accounts/login/", {"login": "alice@example.com", "password": "alice-password"}
    )
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.id)


def test_a_wrong_password_is_refused_on_the_form(client, alice):
    response = client.post("/accounts/login/", {"login": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "not correct" in response.text
    assert "_auth_user_id" not in client.session


def test_changing_the_password_needs_the_current_one(client, alice):
    client.force_login(alice)
    new = "brand-New-password-5"
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": "wrong", "password1": new, "password2": new},
    )
    assert response.status_code == 200 and response.context["form"].errors["oldpassword"]
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": "alice-password", "password1": new, "password2": new},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new)


def test_when_the_operator_closes_sign_up_nobody_can_sign_up(client):
    site = SiteSettings.current()
    site.registration_open = False
    site.save()
    response = client.get("/register")
    assert "Sign Up Closed" in response.text
    client.post("/accounts/signup/", SIGNUP)
    assert not User.objects.filter(username="dora").exists()


def test_too_many_sign_ups_from_one_address_get_a_page_that_says_so(client, settings):
    settings.ACCOUNT_RATE_LIMITS = {"signup": "2/m/ip"}
    for number in range(2):
        client.post("/accounts/signup/", {**SIGNUP, "username": f"dora{number}", "email": ""})
    response = client.post("/accounts/signup/", SIGNUP)
    assert response.status_code == 429
    assert "too many attempts" in response.text.lower() and "Wait a minute" in response.text
    assert not User.objects.filter(username="dora").exists()


def test_too_many_failed_logins_for_one_account_are_refused_on_the_form(client, alice):
    for _ in range(5):
        client.post("/accounts/login/", {"login": "alice", "password": "wrong"})
    response = client.post("/accounts/login/", {"login": "alice", "password": "alice-password"})
    assert response.status_code == 200
    assert "Too many failed login attempts" in response.text
    assert "_auth_user_id" not in client.session


def test_the_account_pages_speak_chinese(client):
    response = client.get("/accounts/login/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "登录" in response.text
    response = client.get("/register", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "注册" in response.text and "已经有账号了" in response.text


def test_the_account_management_pages_sit_in_the_site_frame(client, alice):
    client.force_login(alice)
    for path in ("/accounts/email/", "/accounts/password/change/", "/accounts/3rdparty/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert 'id="nav-balance"' in response.text, path  # the site's header, balance in view
