"""Creating people and keys, and welcoming people who sign up on the site.

accounts calls billing for the money these carry (a key's allowance, with its ledger row);
billing never imports accounts, so the dependency runs one way (billing.balances says why).
"""

from collections.abc import Callable
from datetime import datetime

from django.db import transaction

from accounts import secrets as key_secrets
from accounts.models import ApiKey, SiteSettings, User
from billing import services as billing
from billing import trials


def create_user(
    *,
    username: str,
    password: str | None = None,
    email: str = "",
    group: str = "default",
    is_staff: bool = False,
) -> User:
    """A new user with no credit (grants go through billing, with their ledger rows)."""
    user = User(
        username=username, email=email, group=group, is_staff=is_staff, is_superuser=is_staff
    )
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    return user


def create_api_key(
    *,
    user: User,
    name: str = "",
    quota: int | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    allowed_ips: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """A new key for ``user``; returns the row and the key in clear, shown this once.

    ``quota`` None means unlimited (bounded by the balance only); a number gives the key its
    own allowance, recorded in the ledger.
    """
    key = key_secrets.generate_api_key()
    with transaction.atomic():
        api_key = ApiKey(
            user=user,
            name=name,
            expires_at=expires_at,
            allowed_models=list(allowed_models or []),
            allowed_ips=list(allowed_ips or []),
        )
        api_key.set_key(key)
        api_key.save()
        if quota is not None:
            billing.set_key_limit(api_key=api_key, remaining=quota, note="key created")
    return api_key, key


def find_inviter(invite_code: str | None) -> User | None:
    """The active user whose invite code this is, if any."""
    if not invite_code:
        return None
    return User.objects.filter(invite_code=invite_code.strip(), is_active=True).first()


def register_user(
    *, user: User, invite_code: str | None = None, save: Callable[[], None] | None = None
) -> User:
    """Save a person who signed up on the site (``save``: how, by default ``user.save()``) with
    their trial credit and, when they came through an invite, both invite rewards, all in one
    transaction: an account never exists without what the site promised it."""
    site = SiteSettings.current()
    with transaction.atomic():
        inviter = find_inviter(invite_code)
        user.inviter = inviter
        (save or user.save)()
        trials.grant_trial(user=user, amount=site.trial_quota, days=site.trial_days)
        if inviter is not None:
            trials.reward_invite(
                inviter=inviter,
                invitee=user,
                inviter_amount=site.inviter_reward,
                invitee_amount=site.invitee_reward,
            )
    return user
