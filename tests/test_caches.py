"""What each process caches reaches every process in time (config.cache).

A change saved in another process (a management command, a script, an admin page served by
another worker) must reach the running server within RELAY_LOCAL_CACHE_SECONDS (1 s), in
embedded mode too: the tests below make the change in a real second process, on the test
database and data folder, while the relay serves in this one.
"""

import os
import subprocess
import sys
from urllib.parse import quote

import httpx
import pytest
from django.conf import settings
from django.db import connection

from accounts.models import ApiKey
from accounts.services import create_api_key
from billing.models import UsageLog
from config import cache
from config.cache import LocalMemo, forget_all, shared_cache
from tests.conftest import eventually

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]


def database_url() -> str:
    """The test database, as a DATABASE_URL for another process."""
    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    credentials = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"], safe="")
    host = database["HOST"] or "127.0.0.1"
    return f"postgresql://{credentials}@{host}:{database['PORT'] or 5432}/{database['NAME']}"


def manage(*args: str) -> str:
    """Run ``manage.py`` in a process of its own, on this test's database and data folder and
    with its secrets, as an operator would on the same machine."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(),
        "SLUICE_DATA_DIR": str(settings.DATA_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
        "KEY_LOOKUP_SECRET": settings.KEY_LOOKUP_SECRET,
        "KEY_ENCRYPTION_KEYS": ",".join(settings.KEY_ENCRYPTION_KEYS),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def chat(relay_url: str, key: str, model: str = "gpt-4o") -> httpx.Response:
    return httpx.post(
        f"{relay_url}/v1/chat/completions",
        json={"model": model, "max_tokens": 50, "messages": HELLO},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


# --- Changes made in another process ------------------------------------------------------


def test_a_channel_added_by_a_command_is_used_by_the_running_server_within_seconds(
    relay_url, alice, alice_key, mock_upstream, books_balance
):
    refused = chat(relay_url, alice_key)
    assert refused.status_code == 404  # no channel yet; the server has looked, and remembers

    manage(
        "add_channel",
        "--name",
        "added-later",
        "--base-url",
        mock_upstream.url,
        "--key",
        "upstream-test-key",
        "--models",
        "gpt-4o",
    )

    answered = eventually(lambda: chat(relay_url, alice_key).status_code == 200, timeout=5)
    assert answered, "the server did not see the new channel within 5 s"
    books_balance()


def test_a_price_set_by_a_command_is_charged_by_the_running_server_within_seconds(
    relay_url, alice, alice_key, openai_channel, books_balance
):
    calls = []

    def last_charge() -> int:
        assert chat(relay_url, alice_key).status_code == 200
        calls.append(1)
        assert eventually(lambda: UsageLog.objects.count() == len(calls))
        return UsageLog.objects.order_by("-id").first().quota

    assert last_charge() != 777  # the price is now cached

    manage("set_price", "gpt-4o", "--ratio", "1", "--per-call", "777")

    assert eventually(lambda: last_charge() == 777, timeout=5), "still the old price after 5 s"
    books_balance()


def test_a_key_disabled_by_a_script_is_refused_by_the_running_server_within_seconds(
    relay_url, alice, openai_channel
):
    api_key, key = create_api_key(user=alice)
    assert chat(relay_url, key).status_code == 200  # the key's settings are now cached

    manage(
        "shell",
        "-c",
        "from accounts.models import ApiKey\n"
        f"key = ApiKey.objects.get(id={api_key.id})\n"
        "key.status = ApiKey.Status.DISABLED\n"
        "key.save()",
    )

    refused = eventually(lambda: chat(relay_url, key).status_code == 403, timeout=5)
    assert refused, "the disabled key was still served after 5 s"
    assert chat(relay_url, key).json()["error"]["code"] == "key_disabled"
    assert ApiKey.objects.get(id=api_key.id).status == ApiKey.Status.DISABLED


# --- The shared versions ------------------------------------------------------------------


def test_a_copy_made_before_the_shared_cache_was_emptied_is_never_believed_again():
    copies = LocalMemo(seconds=60, max_entries=10)
    shared_cache().clear()
    cache.KEYS.move()  # the first key saved
    before = cache.KEYS.read()
    copies.put_at("alice's key", before, "settings as they were")

    shared_cache().clear()  # a restarted Redis, an eviction, a deleted cache folder
    cache.KEYS.move()  # then a key is saved

    assert cache.KEYS.read() != before
    assert copies.lookup_at("alice's key", cache.KEYS.read()) == (False, None)


def test_a_version_moves_by_one_while_it_is_there():
    cache.KEYS.move()
    before = cache.KEYS.read()
    cache.KEYS.move()
    assert cache.KEYS.read() == before + 1


# --- Forgetting ---------------------------------------------------------------------------


def test_forgetting_everything_reaches_every_memo_and_the_shared_cache():
    made_elsewhere = LocalMemo(seconds=60, max_entries=10)  # as relay.admission makes its own
    made_elsewhere.put(("user", 1), "refused for a spent balance")
    cache.memo.put(("price", "gpt-4o"), "a price")
    cache.known_keys.put_at("hash", 1, "settings")
    cache.channel_table.put_at("enabled", 1, ["a channel"])
    shared_cache().set("price:v2:gpt-4o", "a shared price")

    forget_all()

    assert made_elsewhere.lookup(("user", 1)) == (False, None)
    assert cache.memo.lookup(("price", "gpt-4o")) == (False, None)
    assert cache.known_keys.lookup_at("hash", 1) == (False, None)
    assert cache.channel_table.lookup_at("enabled", 1) == (False, None)
    assert shared_cache().get("price:v2:gpt-4o") is None


def test_a_warm_call_reads_nothing_from_the_shared_cache(
    relay_url, alice, alice_key, openai_channel, monkeypatch
):
    """The process memo stays in front of the shared cache: once a key, its price and the
    channels are known, a call does not wait on a round trip."""
    monkeypatch.setattr(cache.memo, "seconds", 600)  # nothing expires during the test
    assert chat(relay_url, alice_key).status_code == 200
    reads = []
    shared = shared_cache()
    for name in ("get", "get_many", "has_key"):
        monkeypatch.setattr(shared, name, counted(getattr(shared, name), reads))

    for _ in range(3):
        assert chat(relay_url, alice_key).status_code == 200

    assert reads == []


def counted(method, calls: list):
    def wrapper(*args, **kwargs):
        calls.append((method.__name__, args))
        return method(*args, **kwargs)

    return wrapper
