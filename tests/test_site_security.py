"""Who may see and change what on the user site: login, CSRF, and one person's ids in another's
session."""

import pytest
from django.test import Client

from accounts.models import AccessToken, ApiKey
from accounts.services import create_api_key
from accounts.tokens import create_access_token

pytestmark = pytest.mark.django_db

PRIVATE_PAGES = ["/dashboard", "/keys", "/topup", "/invite", "/settings"]
PUBLIC_PAGES = ["/", "/pricing", "/docs"]


@pytest.fixture
def alice_key_row(alice):
    key, clear = create_api_key(user=alice, name="alice's key")
    return key, clear


@pytest.mark.parametrize("path", PRIVATE_PAGES)
def test_private_pages_send_anonymous_visitors_to_the_login_page(client, path):
    answer = client.get(path)
    assert answer.status_code == 302
    assert answer["Location"].startswith("/accounts/login/?next=" + path)


@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_public_pages_answer_anyone(client, path):
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("action", ["reveal", "toggle", "delete"])
def test_bob_gets_404_for_alices_key_and_it_is_unchanged(client, alice_key_row, bob, action):
    key, clear = alice_key_row
    client.force_login(bob)
    answer = client.post(f"/keys/{key.id}/{action}")
    assert answer.status_code == 404
    assert clear not in answer.content.decode()
    fresh = ApiKey.objects.get(id=key.id)
    assert fresh.status == ApiKey.Status.ENABLED


def test_bob_cannot_edit_or_chat_with_alices_key(client, alice_key_row, bob):
    key, clear = alice_key_row
    client.force_login(bob)
    assert client.get(f"/keys/{key.id}/edit").status_code == 404
    answer = client.post(f"/keys/{key.id}/edit", {"name": "mine now", "unlimited": "on"})
    assert answer.status_code == 404
    assert ApiKey.objects.get(id=key.id).name == "alice's key"
    answer = client.get(f"/keys/{key.id}/chat")
    assert answer.status_code == 404
    assert clear not in answer.get("Location", "")


def test_bob_cannot_see_alices_new_key_through_the_created_link(client, alice_key_row, bob):
    key, clear = alice_key_row
    client.force_login(bob)
    page = client.get(f"/keys?new={key.id}").content.decode()
    assert clear not in page and key.hint not in page


def test_the_keys_page_lists_only_the_owners_keys_and_never_a_full_key(client, alice_key_row, bob):
    key, clear = alice_key_row
    create_api_key(user=bob, name="bob's key")
    client.force_login(bob)
    page = client.get("/keys").content.decode()
    assert "bob&#x27;s key" in page
    assert key.hint not in page and "alice" not in page
    client.force_login(key.user)
    page = client.get("/keys").content.decode()
    assert key.hint in page and clear not in page  # masked until asked for


def test_bob_cannot_revoke_alices_token(client, alice, bob):
    row, _token = create_access_token(user=alice, name="alice-ci-token")
    client.force_login(bob)
    assert client.post(f"/settings/tokens/{row.id}/revoke").status_code == 404
    assert AccessToken.objects.get(id=row.id).revoked_at is None
    page = client.get("/settings").content.decode()
    assert "alice-ci-token" not in page and row.hint not in page


def test_actions_need_post(client, alice_key_row):
    key, _ = alice_key_row
    client.force_login(key.user)
    for action in ("reveal", "toggle", "delete"):
        assert client.get(f"/keys/{key.id}/{action}").status_code == 405
    assert ApiKey.objects.filter(id=key.id).exists()


@pytest.mark.parametrize(
    "path, data",
    [
        ("/keys", {"name": "x", "unlimited": "on"}),
        ("/keys/{key}/reveal", {}),
        ("/keys/{key}/toggle", {}),
        ("/keys/{key}/edit", {"name": "x", "unlimited": "on"}),
        ("/keys/{key}/delete", {}),
        ("/settings/tokens", {"name": "x"}),
        ("/i18n/setlang/", {"language": "zh-hans"}),
    ],
)
def test_every_form_needs_its_csrf_token(alice_key_row, path, data):
    key, clear = alice_key_row
    client = Client(enforce_csrf_checks=True)
    client.force_login(key.user)
    answer = client.post(path.format(key=key.id), data)
    assert answer.status_code == 403
    assert clear not in answer.content.decode()
    assert ApiKey.objects.filter(user=key.user).count() == 1
    assert ApiKey.objects.get(id=key.id).status == ApiKey.Status.ENABLED


def test_forms_carry_a_csrf_token(client, alice_key_row):
    key, _ = alice_key_row
    client.force_login(key.user)
    for path in ("/keys", f"/keys/{key.id}/edit", "/settings", "/dashboard"):
        page = client.get(path).content.decode()
        assert page.count("<form") == page.count('name="csrfmiddlewaretoken"'), path


def test_the_full_key_goes_to_its_owner_only_when_asked(client, alice_key_row):
    key, clear = alice_key_row
    client.force_login(key.user)
    answer = client.post(f"/keys/{key.id}/reveal")
    assert answer.status_code == 200
    assert f'value="{clear}"' in answer.content.decode()
    assert answer["Cache-Control"] == "no-store"


def test_session_cookie_is_http_only(client, alice):
    from django.conf import settings

    assert settings.SESSION_COOKIE_HTTPONLY is True
    client.post("/accounts/login/", {"login": "alice", "password": "alice-password"})
    assert client.cookies[settings.SESSION_COOKIE_NAME]["httponly"]


def test_cookies_are_secure_in_production_mode(monkeypatch):
    """Settings read with DATABASE_URL set (production) make the cookies HTTPS-only."""
    import subprocess
    import sys

    script = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; "
        "from django.conf import settings; "
        "print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE)"
    )
    env = {
        **__import__("os").environ,
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "SLUICE_GENERATE_SECRETS": "1",
    }
    env.pop("SESSION_COOKIE_SECURE", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]
    env.pop("DATABASE_URL")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]
