"""Key material: making API keys, their lookup HMAC, and encryption at rest.

The database never holds a usable key. An API key is found by the HMAC-SHA256 of the key
under ``KEY_LOOKUP_SECRET`` (a unique index, the only lookup path) and kept encrypted under
``KEY_ENCRYPTION_KEYS`` so its owner can copy it again. Channel (upstream) keys use the same
encryption. Both secrets are their own settings, not ``SECRET_KEY``.
"""

import hashlib
import hmac
import secrets
import string
from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings

KEY_PREFIX = "sk-"
KEY_BODY_LENGTH = 48
BASE62 = string.digits + string.ascii_letters


def generate_api_key() -> str:
    """A new key: ``sk-`` and 48 base62 characters (about 285 bits)."""
    return KEY_PREFIX + "".join(secrets.choice(BASE62) for _ in range(KEY_BODY_LENGTH))


def lookup_hash(key: str) -> str:
    """The HMAC that finds a key's row; equal keys give equal hashes, nothing else does."""
    return hmac.new(settings.KEY_LOOKUP_SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.strip().encode()) for k in keys])


def encrypt(plaintext: str) -> str:
    """Encrypt with the newest encryption key."""
    return _fernet(tuple(settings.KEY_ENCRYPTION_KEYS)).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt with whichever configured encryption key made the token."""
    return _fernet(tuple(settings.KEY_ENCRYPTION_KEYS)).decrypt(token.encode()).decode()


def mask(key: str) -> str:
    """What lists show of a key: enough to tell keys apart, too little to use."""
    return f"{key[:5]}…{key[-4:]}"
