"""How allauth signs people up, logs them in and mails them, for this site.

- Sign-up can be closed by the operator (``SiteSettings.registration_open``).
- A new account, from the form or from GitHub, is saved with its trial credit and invite
  rewards in one transaction (``accounts.services.register_user``).
- The invite code of ``/register?aff=CODE`` (or ``/accounts/signup/?aff=CODE``) is kept in the
  session, so it survives the round trip through GitHub.
- A mail that cannot be sent (no mail server, a refusing one, a timeout) never turns into an
  error page: it is logged, and the person is told what happened and what to do.
"""

import logging
import smtplib
from types import SimpleNamespace

from allauth.account import app_settings as account_settings
from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context as allauth_context
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter, get_account_adapter
from django.contrib import messages
from django.shortcuts import render
from django.utils.translation import gettext

from accounts import services
from accounts.models import SiteSettings

logger = logging.getLogger(__name__)

INVITE_SESSION_KEY = "invite_code"
INVITE_PARAMETER = "aff"  # the name one-api's users already share links with
MAIL_FAILED_TAG = "mail-failed"


def remember_invite(request) -> None:
    """Keep the invite code of this request's ``?aff=`` in the session, for the sign-up."""
    code = request.GET.get(INVITE_PARAMETER, "").strip()
    if code and hasattr(request, "session"):
        request.session[INVITE_SESSION_KEY] = code[:32]


def take_invite(request) -> str | None:
    """The invite code this visitor arrived with, forgotten once used."""
    if request is None or not hasattr(request, "session"):
        return None
    return request.session.pop(INVITE_SESSION_KEY, None)


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # allauth asks this on every sign-up page (the form, and GitHub's), before anything
        # else: the one place that sees the visitor arrive, so the invite is noted here too.
        remember_invite(request)
        return SiteSettings.current().registration_open

    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=False)
        if commit:
            services.register_user(user=user, invite_code=take_invite(request))
        return user

    def format_email_subject(self, subject: str) -> str:
        return f"[{SiteSettings.current().site_name}] {subject}"

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        # allauth's mails greet from the sites framework's row ("example.com" unless someone
        # edits it); they should name the site the operator named, at the address it was
        # reached on.
        request = allauth_context.request
        site = SimpleNamespace(
            name=SiteSettings.current().site_name,
            domain=request.get_host() if request is not None else "",
        )
        try:
            super().send_mail(template_prefix, email, {"current_site": site, **context})
        except (smtplib.SMTPException, OSError, ValueError) as problem:
            # OSError: refused, unreachable, timed out, TLS failures; ValueError: Django's
            # refusal of a mail setting (EMAIL_USE_TLS with EMAIL_USE_SSL). The page must
            # still work.
            logger.warning(
                "mail %s could not be sent (%s: %s)",
                template_prefix,
                type(problem).__name__,
                problem,
            )
            self.tell_mail_failed(template_prefix, email)

    def tell_mail_failed(self, template_prefix: str, email: str) -> None:
        """Say on the next page that a mail did not go, and what to do about it."""
        request = allauth_context.request
        if request is None:
            return
        request.sluice_mail_failed = True
        if "email_confirmation" in template_prefix:
            if account_settings.EMAIL_VERIFICATION == "mandatory":
                text = gettext(
                    "Your account was created, but the email to confirm %(email)s could not "
                    "be sent just now. Sign in again in a few minutes to have a new one sent; "
                    "if it keeps failing, please tell the site's operator."
                )
            else:
                text = gettext(
                    "Your account is ready, but the email to confirm %(email)s could not be "
                    "sent just now. You can send it again later from Settings → Email; if it "
                    "keeps failing, please tell the site's operator."
                )
        elif "password_reset" in template_prefix:
            text = gettext(
                "The password reset email to %(email)s could not be sent just now. Please "
                "try again in a few minutes; if it keeps failing, please tell the site's "
                "operator."
            )
        else:
            text = gettext(
                "An email to %(email)s could not be sent just now. Please try again later; "
                "if it keeps failing, please tell the site's operator."
            )
        messages.error(request, text % {"email": email}, extra_tags=MAIL_FAILED_TAG)

    def add_message(self, request, level, message_template=None, *args, **kwargs):
        # allauth announces "confirmation email sent" after trying, whether or not it went.
        sent_notice = message_template == "account/messages/email_confirmation_sent.txt"
        if sent_notice and getattr(request, "sluice_mail_failed", False):
            return
        super().add_message(request, level, message_template, *args, **kwargs)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def save_user(self, request, sociallogin, form=None):
        """A new account made through GitHub: welcomed like one made with the form."""
        user = sociallogin.user
        user.set_unusable_password()
        account_adapter = get_account_adapter(request)
        if form:
            account_adapter.save_user(request, user, form, commit=False)
        else:
            account_adapter.populate_username(request, user)
        services.register_user(
            user=user,
            invite_code=take_invite(request),
            save=lambda: sociallogin.save(request),
        )
        return user


def too_many_attempts(request, exception=None):
    """allauth's answer when a rate limit is hit (``handler429``): a page that says so, with
    the way back to the form."""
    return render(request, "account/too_many_attempts.html", status=429)
