"""Who is calling: the API key from the request, found by its HMAC, checked, and the client IP.

A key's settings are cached by its lookup HMAC (never by the key itself) in the shared cache,
and in each process for as long as the shared ``KEYS`` version stays where it was when they
were read: config.cache says what drops them and how soon other processes notice. Balances
are not cached: placing a hold checks them in the database every call.
"""

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import cast
from urllib.parse import parse_qs

from django.conf import settings
from django.utils import timezone

from accounts import secrets as key_secrets
from accounts.models import ApiKey, ip_in
from config import cache
from config.cache import key_cache_key, shared_cache
from relay import database
from relay.errors import RelayError


@dataclass(frozen=True)
class KeyInfo:
    """What a call needs to know about its key, cheap to cache."""

    id: int
    user_id: int
    group: str
    enabled: bool
    user_active: bool
    expires_at: datetime | None
    unlimited_quota: bool
    allowed_models: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    carved: bool = False  # a sub-key spending its own balance, never its owner's

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models

    def allows_ip(self, ip: str | None) -> bool:
        return not self.allowed_ips or ip_in(ip, self.allowed_ips)


def _load(lookup_hash: str) -> KeyInfo | None:
    row = ApiKey.objects.select_related("user").filter(lookup_hash=lookup_hash).first()
    if row is None:
        return None
    return KeyInfo(
        id=row.id,
        user_id=row.user_id,
        group=row.user.group,
        enabled=row.status == ApiKey.Status.ENABLED,
        user_active=row.user.is_active,
        expires_at=row.expires_at,
        unlimited_quota=row.unlimited_quota,
        allowed_models=tuple(row.allowed_models or ()),
        allowed_ips=tuple(row.allowed_ips or ()),
        carved=row.carved,
    )


EPOCH_KEY = cache.KEYS.name


def keys_epoch() -> int:
    """The shared version of key settings (sync)."""
    return cache.KEYS.read()


async def key_info(lookup_hash: str) -> KeyInfo | None:
    """The key's settings, from this process while the keys' version has not moved."""
    epoch = await database.remembered(EPOCH_KEY, keys_epoch)
    for memo in (cache.known_keys, cache.unknown_keys):
        found, remembered = memo.lookup_at(lookup_hash, epoch)
        if found:
            return cast("KeyInfo | None", remembered)  # what find_key returned, below
    info = await database.run(find_key, lookup_hash)
    (cache.unknown_keys if info is None else cache.known_keys).put_at(lookup_hash, epoch, info)
    return info


def find_key(lookup_hash: str) -> KeyInfo | None:
    """The key's settings by its lookup HMAC, from the cache or the database (sync)."""
    cache_key = key_cache_key(lookup_hash)
    info = shared_cache().get(cache_key)
    if info is None:
        info = _load(lookup_hash)
        if info is not None:
            shared_cache().set(cache_key, info, settings.RELAY_CACHE_SECONDS)
    return info


def presented_key(headers, query: str = "") -> str:
    """The key from ``Authorization: Bearer``, ``x-api-key`` (Anthropic clients),
    ``x-goog-api-key`` or ``?key=`` (Gemini clients; access logs cut the latter, see
    config.logging, and the refusal log writes no query)."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    key = headers.get("x-api-key", "").strip() or headers.get("x-goog-api-key", "").strip()
    if not key and "key=" in query:
        key = (parse_qs(query).get("key") or [""])[0].strip()
    return key


# Browsers cannot set headers on a WebSocket: OpenAI's realtime API takes the key as one of
# the offered subprotocols instead (``openai-insecure-api-key.<key>``).
SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."


def subprotocol_key(subprotocols) -> str:
    """The key a WebSocket client offered as a subprotocol, or "" (relay.realtime); the
    server must never choose that subprotocol, which would echo the key back."""
    for offered in subprotocols or ():
        if offered.startswith(SUBPROTOCOL_KEY_PREFIX):
            return offered[len(SUBPROTOCOL_KEY_PREFIX) :].strip()
    return ""


def client_ip(request) -> str | None:
    """The caller's IP; X-Forwarded-For counts only when the peer is a trusted proxy.

    Every hop is checked to be an IP address (a port after it is dropped); a hop that is not
    one is skipped, so junk in the header can neither be taken for the client nor stop the
    call's usage row from being written (its column holds addresses only).
    """
    peer = request.peer
    if not settings.TRUSTED_PROXIES or not _is_trusted(peer):
        return peer
    farthest = None
    # Walk from the nearest hop back: the first address not ours is the client.
    for hop in reversed(request.headers.get("x-forwarded-for", "").split(",")):
        address = _address(hop)
        if address is None:
            continue
        if not _is_trusted(address):
            return address
        farthest = address
    return farthest or peer


def _address(hop: str) -> str | None:
    """The IP address in one X-Forwarded-For hop (``1.2.3.4``, ``1.2.3.4:80``, ``::1``,
    ``[::1]:80``), written the standard way; None when it holds none."""
    hop = hop.strip()
    if hop.startswith("["):  # [IPv6] or [IPv6]:port
        hop = hop[1 : hop.find("]")] if "]" in hop else ""
    elif hop.count(":") == 1:  # IPv4:port (a bare IPv6 address has two colons or more)
        hop = hop.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(hop)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):  # fe80::1%eth0: the zone means nothing here
        address = ipaddress.ip_address(hop.split("%", 1)[0])
    return str(address)


def _is_trusted(ip: str | None) -> bool:
    return ip_in(ip, settings.TRUSTED_PROXIES)


def no_key() -> RelayError:
    return RelayError(
        401,
        "No API key provided. Send it as 'Authorization: Bearer sk-...'.",
        code="invalid_api_key",
        retry=False,
    )


def unknown_key() -> RelayError:
    return RelayError(401, "Incorrect API key provided.", code="invalid_api_key", retry=False)


def check_key(info: KeyInfo, request) -> str | None:
    """Refuse a disabled or expired key, a deactivated account's key, or a caller outside its
    IP allow-list; returns the caller's IP."""
    if not info.user_active:
        # Said first: enabling the key again would not help.
        raise RelayError(
            403,
            "This API key's account is disabled; contact the site's operator.",
            code="account_disabled",
            retry=False,
        )
    if not info.enabled:
        raise RelayError(403, "This API key is disabled.", code="key_disabled", retry=False)
    if info.expires_at is not None and info.expires_at <= timezone.now():
        raise RelayError(403, "This API key has expired.", code="key_expired", retry=False)
    ip = client_ip(request)
    if not info.allows_ip(ip):
        raise RelayError(
            403,
            f"This API key may not be used from your IP address ({ip}).",
            code="ip_not_allowed",
            retry=False,
        )
    return ip


async def authenticate(request) -> tuple[KeyInfo, str | None]:
    """The caller's key, checked, and the caller's IP; or refuse."""
    key = presented_key(request.headers, getattr(request, "query", ""))
    if not key:
        raise no_key()
    info = await key_info(key_secrets.lookup_hash(key))
    if info is None:
        raise unknown_key()
    return info, check_key(info, request)
