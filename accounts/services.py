"""Creating people and keys.

accounts calls billing for the money these carry (a key's allowance, with its ledger row);
billing never imports accounts, so the dependency runs one way (billing.balances says why).
"""

from datetime import datetime

from django.db import transaction

from accounts import secrets as key_secrets
from accounts.models import ApiKey, User
from billing import services as billing


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
