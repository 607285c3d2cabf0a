"""The three secrets every node of a site must share, and how fresh values are made.

Read by config.settings (no Django here: settings import it) and printed by
``manage.py generate_secrets``.
"""

import secrets

from cryptography.fernet import Fernet

# SECRET_KEY: Django's sessions and signing. KEY_LOOKUP_SECRET: the HMAC key behind every
# API-key lookup (its own setting, so rotating SECRET_KEY never invalidates users' keys).
# KEY_ENCRYPTION_KEYS: Fernet keys, newest first, comma-separated, that encrypt API keys and
# channel keys at rest.
MAKERS = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "KEY_LOOKUP_SECRET": lambda: secrets.token_urlsafe(48),
    "KEY_ENCRYPTION_KEYS": lambda: Fernet.generate_key().decode(),
}
NAMES = tuple(MAKERS)


def fresh(name: str) -> str:
    """A new value for one of the shared secrets (URL-safe characters only: it can be pasted
    into an environment file or a shell without quoting)."""
    return MAKERS[name]()


def missing(environ) -> list[str]:
    """The shared secrets ``environ`` does not set."""
    return [name for name in NAMES if not environ.get(name)]
