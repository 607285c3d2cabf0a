"""Signing up never answers 500, whatever the mail settings: every verification setting against
every way an SMTP server can fail, each a real server (or its absence) on loopback.

The failures: nothing listening (refused), a server that never says hello (timeout), a server
that refuses the message (554 on DATA), a server without AUTH when a login is configured,
TLS spoken to a plain server, and EMAIL_USE_TLS with EMAIL_USE_SSL (which Django refuses as a
configuration error when it opens the connection).
"""

import socket

import pytest
from aiosmtpd.controller import Controller
from django.contrib.messages import get_messages

from accounts.models import User
from tests.conftest import free_port

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Pass-phrase-7"
SIGNUP = {
    "username": "erin",
    "email": "erin@example.com",
    "password1": PASSWORD,
    "password2": PASSWORD,
}


class Refusing:
    """An aiosmtpd handler that turns every message away."""

    async def handle_DATA(self, server, session, envelope):
        return "554 5.7.1 Message rejected"


@pytest.fixture
def smtp(settings):
    """``smtp(failure)``: point Django's SMTP backend at a server failing that way."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_TIMEOUT = 1
    cleanup = []

    def failing(failure: str) -> None:
        if failure == "refused":
            settings.EMAIL_PORT = free_port()
            return
        if failure == "silent":  # accepts the connection (the kernel does), never greets
            listener = socket.create_server(("127.0.0.1", 0))
            cleanup.append(listener.close)
            settings.EMAIL_PORT = listener.getsockname()[1]
            return
        controller = Controller(Refusing(), hostname="127.0.0.1", port=free_port())
        controller.start()
        cleanup.append(controller.stop)
        settings.EMAIL_PORT = controller.port
        if failure == "no_auth":
            settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "relay", "secret"
        elif failure == "tls_to_plain":
            settings.EMAIL_USE_SSL = True
        elif failure == "tls_and_ssl":
            settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = True

    yield failing
    for close in cleanup:
        close()


FAILURES = ["refused", "silent", "rejected", "no_auth", "tls_to_plain", "tls_and_ssl"]


@pytest.mark.parametrize("verification", ["none", "optional", "mandatory"])
@pytest.mark.parametrize("failure", FAILURES)
def test_signing_up_never_answers_500_whatever_the_mail_does(
    client, settings, smtp, failure, verification
):
    settings.ACCOUNT_EMAIL_VERIFICATION = verification
    smtp(failure)
    response = client.post("/accounts/signup/", SIGNUP, follow=True)

    assert response.status_code == 200
    user = User.objects.get(username="erin")  # whole: made once, with its email address
    assert user.email == "erin@example.com" and user.check_password(PASSWORD)
    said = " ".join(str(message) for message in get_messages(response.wsgi_request))
    said += response.content.decode()
    if verification == "none":  # no mail is sent, so nothing failed
        assert response.redirect_chain[-1][0] == "/dashboard"
        assert "could not be sent" not in said
        return
    assert "could not be sent just now" in said and "erin@example.com" in said
    assert "We have sent an email" not in said
    if verification == "mandatory":
        assert response.redirect_chain[-1][0] == "/accounts/confirm-email/"
        assert "_auth_user_id" not in client.session
    else:
        assert response.redirect_chain[-1][0] == "/dashboard"
        assert client.session["_auth_user_id"] == str(user.id)


@pytest.mark.parametrize("failure", ["refused", "tls_and_ssl"])
def test_a_password_reset_whatever_the_mail_does_says_what_to_do(client, alice, smtp, failure):
    smtp(failure)
    response = client.post("/accounts/password/reset/", {"email": alice.email}, follow=True)
    assert response.status_code == 200
    said = " ".join(str(message) for message in get_messages(response.wsgi_request))
    said += response.content.decode()
    assert "could not be sent just now" in said


def test_the_mails_of_a_person_browsing_in_chinese_are_in_chinese(client, alice, mailoutbox):
    chinese = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9"}
    client.post("/accounts/signup/", SIGNUP, **chinese)
    client.post("/accounts/logout/")
    client.post("/accounts/password/reset/", {"email": alice.email}, **chinese)
    confirm, reset = mailoutbox
    assert confirm.subject == "[Sluice] 请确认你的邮箱地址"
    assert reset.subject == "[Sluice] 密码重置邮件"
    for mail in (confirm, reset):
        assert "Sluice 向你问好！" in mail.body and "Hello" not in mail.body
