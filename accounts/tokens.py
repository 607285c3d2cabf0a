"""Personal access tokens for the REST API (``/api/``): made, found and revoked here.

A token is ``slt-`` and 40 base62 characters, shown to its owner once. Like API keys, the
database keeps only its HMAC (``accounts.secrets.lookup_hash``, the one lookup path) and a
masked hint; unlike keys there is no encrypted copy, so a lost token is revoked and replaced.
"""

import secrets

from django.utils import timezone

from accounts.models import AccessToken, User
from accounts.secrets import BASE62, lookup_hash, mask

TOKEN_PREFIX = "slt-"  # noqa: S105 (a prefix, not a secret)
TOKEN_BODY_LENGTH = 40


def create_access_token(*, user: User, name: str) -> tuple[AccessToken, str]:
    """A new token for ``user``; returns the row and the token in clear, shown this once."""
    token = TOKEN_PREFIX + "".join(secrets.choice(BASE62) for _ in range(TOKEN_BODY_LENGTH))
    row = AccessToken.objects.create(
        user=user, name=name, lookup_hash=lookup_hash(token), hint=mask(token)
    )
    return row, token


def find_access_token(token: str) -> AccessToken | None:
    """The live (not revoked) token row for ``token``, with its user, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return (
        AccessToken.objects.select_related("user")
        .filter(lookup_hash=lookup_hash(token), revoked_at=None, user__is_active=True)
        .first()
    )


def revoke_access_token(*, user: User, token_id: int) -> bool:
    """Revoke one of ``user``'s tokens; False when it is not theirs or already revoked."""
    return bool(
        AccessToken.objects.filter(id=token_id, user=user, revoked_at=None).update(
            revoked_at=timezone.now()
        )
    )
