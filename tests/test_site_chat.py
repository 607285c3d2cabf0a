"""The built-in chat page and the endpoint that gives a key's owner the key in clear.

The chat's streaming, Markdown and stop button run in the browser: tests/browser/ drives them.
"""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import create_api_key


@pytest.fixture
def alice_client(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def csrf_token(client: Client) -> str:
    client.get("/chat")
    return client.cookies["csrftoken"].value


def reveal(client: Client, key_id: int, **headers):
    return client.post(f"/chat/keys/{key_id}/reveal", headers=headers)


def test_the_page_offers_the_persons_usable_keys_only(alice, bob, alice_client):
    laptop, laptop_key = create_api_key(user=alice, name="laptop")
    create_api_key(user=alice, name="old", expires_at=timezone.now() - timedelta(days=1))
    off, _ = create_api_key(user=alice, name="switched off")
    ApiKey.objects.filter(id=off.id).update(status=ApiKey.Status.DISABLED)
    create_api_key(user=bob, name="bobs key")

    response = alice_client.get("/chat")
    assert response.status_code == 200
    names = [key["name"] for key in response.context["keys"]]
    assert names == ["laptop"]
    html = response.content.decode()
    assert laptop_key not in html  # the page never carries a key in clear
    assert "bobs key" not in html


def test_a_key_in_the_address_is_preselected_unless_it_is_someone_elses(alice, bob, alice_client):
    first, _ = create_api_key(user=alice, name="first")
    second, _ = create_api_key(user=alice, name="second")
    bobs, _ = create_api_key(user=bob, name="bobs")
    assert alice_client.get(f"/chat?key={first.id}").context["chat_config"]["selected"] == first.id
    newest = alice_client.get(f"/chat?key={bobs.id}").context["chat_config"]["selected"]
    assert newest == second.id


def test_a_person_without_a_key_is_sent_to_make_one(alice, alice_client):
    response = alice_client.get("/chat")
    assert b'id="chat-no-key"' in response.content
    assert b"chat.js" not in response.content


def test_the_owner_gets_the_key_in_clear_and_nobody_keeps_a_copy(alice, alice_client):
    row, key = create_api_key(user=alice, name="laptop")
    response = reveal(alice_client, row.id, x_csrftoken=csrf_token(alice_client))
    assert response.status_code == 200
    assert response.json() == {"id": row.id, "key": key}
    assert "no-store" in response["Cache-Control"]


def test_someone_elses_key_id_is_a_404(alice, bob, alice_client):
    bobs, bob_key = create_api_key(user=bob, name="bobs")
    response = reveal(alice_client, bobs.id, x_csrftoken=csrf_token(alice_client))
    assert response.status_code == 404
    assert bob_key not in response.content.decode()
    assert reveal(alice_client, 999_999, x_csrftoken=csrf_token(alice_client)).status_code == 404


def test_revealing_needs_a_login_a_post_and_the_csrf_token(alice, alice_client):
    row, key = create_api_key(user=alice, name="laptop")
    anonymous = Client()
    assert reveal(anonymous, row.id).status_code == 401
    assert alice_client.get(f"/chat/keys/{row.id}/reveal").status_code == 405
    forged = reveal(alice_client, row.id)  # another site's form cannot send the token
    assert forged.status_code == 403
    assert key not in forged.content.decode()


def test_the_page_speaks_chinese_to_a_chinese_browser(alice, alice_client):
    create_api_key(user=alice, name="laptop")
    response = alice_client.get("/chat", headers={"accept-language": "zh-CN,zh;q=0.9"})
    html = response.content.decode()
    assert "新对话" in html and "发送" in html
    assert response.context["chat_config"]["text"]["stopped"] == "已停止。"
