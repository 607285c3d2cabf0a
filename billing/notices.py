"""The low-balance notice: one email when a user's balance falls to the threshold they set, then
none until the balance has risen above it again.

Checked by a beat task (``billing.tasks.notify_low_balances``, every
``LOW_BALANCE_SWEEP_SECONDS``), not by the calls: settling a call costs nothing more, and a
notice arrives within one sweep of the balance crossing. ``User.low_balance_notified_at`` is the
"notified" flag: set by a conditional UPDATE (so two sweeps never send twice), cleared by the
sweep once the balance is above the threshold again, or when the user sets a new threshold.
Only the user's own balance counts; a carved sub-key's balance is its holder's business.
"""

import logging
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from billing.balances import User
from billing.pricing import QUOTA_PER_USD

logger = logging.getLogger(__name__)


def set_low_balance_threshold(*, user: User, threshold: int | None) -> None:
    """Set (or with None, turn off) the user's threshold, in quota units; a notice is owed
    afresh for the new threshold."""
    if threshold is not None and threshold < 0:
        raise ValueError("A threshold cannot be negative.")
    User.objects.filter(id=user.id).update(
        low_balance_threshold=threshold, low_balance_notified_at=None
    )
    user.low_balance_threshold, user.low_balance_notified_at = threshold, None


def notify_low_balances() -> int:
    """Email every user whose balance is at or below their threshold and who was not told
    yet, each once; re-arm those whose balance rose above it. Returns how many were emailed."""
    User.objects.filter(low_balance_notified_at__isnull=False).exclude(
        low_balance_threshold__isnull=False, quota__lte=F("low_balance_threshold")
    ).update(low_balance_notified_at=None)
    low = User.objects.filter(
        low_balance_threshold__isnull=False,
        quota__lte=F("low_balance_threshold"),
        low_balance_notified_at=None,
        is_active=True,
    ).exclude(email="")
    sent = 0
    for user in low.only("id", "email", "username", "quota", "low_balance_threshold"):
        # The transition is the claim: only the sweep that makes it sends the email.
        claimed = User.objects.filter(id=user.id, low_balance_notified_at=None).update(
            low_balance_notified_at=timezone.now()
        )
        if not claimed:
            continue
        try:
            _send(user)
        except Exception:  # a mail server that fails: try again at the next sweep
            logger.exception("low-balance notice to user %s failed", user.id)
            User.objects.filter(id=user.id).update(low_balance_notified_at=None)
            continue
        sent += 1
    return sent


def _dollars(quota: int) -> str:
    """Quota as dollars to the cent, for the email (Decimal: display, not arithmetic)."""
    cents = (Decimal(quota) / QUOTA_PER_USD).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    return f"${cents:,}"


def _send(user: User) -> None:
    """One email in English and Simplified Chinese: billing does not know which language a
    person reads (the site remembers it in their browser, not on their account)."""
    # The site's address, not its name: billing reads nothing of accounts' but the balances.
    site = getattr(settings, "SITE_URL", "") or "the API site"
    site_zh = getattr(settings, "SITE_URL", "") or "API 站点"
    balance, threshold = _dollars(user.quota), _dollars(user.low_balance_threshold or 0)
    send_mail(
        subject=f"Your balance is low: {balance} / 余额不足：{balance}",
        message=(
            f"Hello {user.username},\n\n"
            f"Your balance at {site} is {balance}, at or below the {threshold} you asked to be "
            "told about. Calls stop when it runs out; top up to keep them going.\n\n"
            "You will not be emailed about this again until your balance is above the "
            "threshold once more. You can change the threshold in your settings.\n\n"
            "----\n\n"
            f"{user.username}，您好：\n\n"
            f"您在 {site_zh} 的余额为 {balance}，已不高于您设置的提醒额度 {threshold}。"
            "余额用完后调用将停止，请及时充值。\n\n"
            "在余额回到提醒额度以上之前，我们不会再就此发送邮件。您可以在设置页修改提醒额度。\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[user.email],
    )
