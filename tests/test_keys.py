"""API keys: their shape, that no usable key is ever stored or logged, and why one is refused."""

import logging
import re

import httpx
import pytest
from cryptography.fernet import Fernet
from django.db import connection

from accounts import secrets as key_secrets
from accounts.models import ApiKey
from accounts.services import create_api_key
from config.logging import RedactSecrets, redact
from relay.models import Channel
from tests.conftest import UPSTREAM_KEY

KEY_SHAPE = re.compile(r"^sk-[0-9A-Za-z]{48}$")
FAKE_KEY = "sk-" + "test" * 9  # built at run time: the source holds nothing key-shaped


def dump_database() -> str:
    """Every row of every table, as text."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)


def test_a_key_is_sk_and_48_base62_characters_and_unique():
    keys = {key_secrets.generate_api_key() for _ in range(200)}
    assert len(keys) == 200 and all(KEY_SHAPE.match(k) for k in keys)


@pytest.mark.django_db
def test_the_database_holds_no_usable_key(alice, openai_channel):
    api_key, key = create_api_key(user=alice)
    dump = dump_database()
    assert key not in dump and key[3:] not in dump
    assert UPSTREAM_KEY not in dump
    # The row is found by the HMAC of the key, and only by it...
    assert ApiKey.objects.find(key).get() == api_key
    assert not ApiKey.objects.find(key[:-1] + ("A" if key[-1] != "A" else "B")).exists()
    # ...and its owner can still copy it again.
    assert api_key.reveal() == key
    assert Channel.objects.get().api_key() == UPSTREAM_KEY


@pytest.mark.django_db
def test_the_lookup_hash_depends_on_its_own_secret_not_secret_key(settings, alice):
    _, key = create_api_key(user=alice)
    settings.SECRET_KEY = "something else entirely"
    assert ApiKey.objects.find(key).exists()
    settings.KEY_LOOKUP_SECRET = "another lookup secret"
    assert not ApiKey.objects.find(key).exists()


@pytest.mark.django_db
def test_encryption_keys_rotate_by_prepending_a_new_one(settings, alice):
    api_key, key = create_api_key(user=alice)
    settings.KEY_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.KEY_ENCRYPTION_KEYS]
    assert ApiKey.objects.get(id=api_key.id).reveal() == key  # old tokens still open
    fresh = key_secrets.encrypt("new secret")
    settings.KEY_ENCRYPTION_KEYS = settings.KEY_ENCRYPTION_KEYS[:1]
    assert key_secrets.decrypt(fresh) == "new secret"  # new tokens use the newest key


def test_access_log_lines_lose_their_keys():
    line = (
        '127.0.0.1:5000 - "GET /v1beta/models?alt=sse&key=AIzaSyFAKEFAKE123 HTTP/1.1" 200 '
        "authorization: Bearer " + FAKE_KEY + " x-api-key=secret123"
    )
    cleaned = redact(line)
    for secret in ("AIzaSyFAKEFAKE123", FAKE_KEY[3:], "secret123"):
        assert secret not in cleaned
    assert "alt=sse" in cleaned


def test_the_log_filter_rewrites_records_with_arguments():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/v1/models?key=sk-" + "x" * 48, "1.1", 200),
        None,
    )
    RedactSecrets().filter(record)
    assert "x" * 48 not in record.getMessage()


# --- Why a key is refused: what would help ------------------------------------------------

HELLO = [{"role": "user", "content": "Say hello"}]


def refusal(relay_url: str, key: str, api: str) -> tuple[int, dict]:
    """(status, error object) of a call with ``key`` in the API's own format."""
    if api == "openai":
        response = httpx.post(
            f"{relay_url}/v1/chat/completions",
            json={"model": "gpt-4o", "max_tokens": 10, "messages": HELLO},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    else:
        response = httpx.post(
            f"{relay_url}/v1/messages",
            json={"model": "claude-haiku-4-5", "max_tokens": 10, "messages": HELLO},
            headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
            timeout=30,
        )
    return response.status_code, response.json()["error"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_deactivated_accounts_key_says_the_account_is_disabled(
    relay_url, alice, alice_key, api, mock_upstream
):
    alice.is_active = False
    alice.save()

    status, error = refusal(relay_url, alice_key, api)

    assert status == 403
    assert "account is disabled" in error["message"]
    if api == "openai":
        assert error["code"] == "account_disabled"
    else:
        assert error["type"] == "permission_error"
    assert mock_upstream.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_disabled_key_of_an_active_account_says_the_key_is_disabled(relay_url, alice):
    api_key, key = create_api_key(user=alice)
    api_key.status = ApiKey.Status.DISABLED
    api_key.save()

    status, error = refusal(relay_url, key, "openai")

    assert (status, error["code"]) == (403, "key_disabled")
    assert "account" not in error["message"]


@pytest.mark.django_db(transaction=True)
def test_the_account_is_named_when_both_it_and_its_key_are_disabled(relay_url, alice):
    api_key, key = create_api_key(user=alice)
    api_key.status = ApiKey.Status.DISABLED
    api_key.save()
    alice.is_active = False
    alice.save()

    status, error = refusal(relay_url, key, "openai")

    assert (status, error["code"]) == (403, "account_disabled")
