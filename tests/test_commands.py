"""The operator commands, as scripts and later tooling call them."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import ApiKey, User
from billing.models import LedgerEntry, ModelPrice
from relay.models import Channel

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_a_site_is_bootstrapped_from_the_command_line():
    run(
        "create_user",
        "dave",
        "--password",
        "dave-password-1",
        "--email",
        "d@example.com",
        "--group",
        "vip",
    )
    run("grant", "dave", "2500000", "--note", "welcome")
    run(
        "add_channel",
        "--type",
        "anthropic",
        "--name",
        "claude",
        "--base-url",
        "http://127.0.0.1:9",
        "--key",
        "upstream-secret",
        "--models",
        "claude-haiku-4-5,x",
        "--priority",
        "5",
        "--weight",
        "3",
        "--groups",
        "vip,default",
        "--mapping",
        '{"x": "y"}',
    )
    run("set_price", "x", "--ratio", "0.5", "--completion-ratio", "3", "--per-call", "100")
    key = run(
        "create_key",
        "dave",
        "--name",
        "ci",
        "--quota",
        "1000",
        "--expires",
        "2030-01-01T00:00:00Z",
        "--models",
        "x",
        "--ips",
        "10.0.0.0/8",
    ).strip()

    dave = User.objects.get(username="dave")
    assert (dave.group, dave.quota, dave.check_password("dave-password-1")) == (
        "vip",
        2_500_000,
        True,
    )
    assert LedgerEntry.objects.get(user=dave, amount=2_500_000).note == "welcome"
    channel = Channel.objects.get(name="claude")
    assert (
        channel.type,
        channel.served_models,
        channel.groups,
        channel.priority,
        channel.weight,
        channel.model_mapping,
    ) == ("anthropic", ["claude-haiku-4-5", "x"], ["vip", "default"], 5, 3, {"x": "y"})
    assert channel.api_key() == "upstream-secret"
    price = ModelPrice.objects.get(model="x")
    assert (str(price.model_ratio), str(price.completion_ratio), price.per_call_quota) == (
        "0.500000",
        "3.000000",
        100,
    )
    api_key = ApiKey.objects.find(key).get()
    assert (api_key.name, api_key.unlimited_quota, api_key.remaining_quota) == ("ci", False, 1000)
    assert api_key.allowed_models == ["x"] and api_key.allowed_ips == ["10.0.0.0/8"]
    assert api_key.expires_at.year == 2030
    assert "all accounts reconcile" in run("reconcile")


def test_reconcile_exits_1_and_lists_what_does_not_balance(alice):
    User.objects.filter(id=alice.id).update(quota=5)
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile", stdout=out, stderr=io.StringIO())
    assert exit_.value.code == 1
    assert f"user {alice.id}" in out.getvalue()


def test_bad_input_is_refused_clearly(alice):
    with pytest.raises(CommandError, match="no user"):
        run("grant", "nobody", "5")
    with pytest.raises(CommandError, match="already exists"):
        run("create_user", "alice")
    with pytest.raises(CommandError, match="JSON"):
        run(
            "add_channel",
            "--name",
            "n",
            "--base-url",
            "http://127.0.0.1:9",
            "--key",
            "k",
            "--models",
            "m",
            "--mapping",
            "[1]",
        )
    with pytest.raises(CommandError, match="ISO 8601"):
        run("create_key", "alice", "--expires", "tomorrow")


def test_an_unlimited_key_is_the_default(alice):
    key = run("create_key", "alice").strip()
    assert ApiKey.objects.find(key).get().unlimited_quota


def test_ensure_admin_does_not_echo_a_password_it_was_given(monkeypatch):
    monkeypatch.setenv("SLUICE_ADMIN_USER", "operator")
    monkeypatch.setenv("SLUICE_ADMIN_PASSWORD", "chosen-by-the-operator-1")

    out = run("ensure_admin")

    assert "chosen-by-the-operator-1" not in out
    assert "operator" in out
    assert User.objects.get(username="operator").check_password("chosen-by-the-operator-1")


def test_ensure_admin_shows_a_password_it_generated_once(monkeypatch):
    monkeypatch.setenv("SLUICE_ADMIN_USER", "operator")
    monkeypatch.delenv("SLUICE_ADMIN_PASSWORD", raising=False)

    first = run("ensure_admin")
    password = first.split(" / ")[1].split()[0]

    assert User.objects.get(username="operator").check_password(password)
    assert password not in run("ensure_admin")
