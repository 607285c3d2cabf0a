"""Malformed request bodies answer 400 naming the bad field, in the caller's format, through the
running relay; nothing is held and nothing reaches the upstream."""

import httpx
import pytest

from billing.models import Hold

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]


def post(relay_url, path, key, body=None, content=None):
    headers = {"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    if content is not None:
        headers["Content-Type"] = "application/json"
        return httpx.post(relay_url + path, content=content, headers=headers, timeout=30)
    return httpx.post(relay_url + path, json=body, headers=headers, timeout=30)


CHAT_CASES = {
    "messages[0]": {"messages": ["hi"]},
    "messages[0].content[0]": {"messages": [{"role": "user", "content": [1]}]},
    "tools[0].function": {"messages": HELLO, "tools": [{"type": "function"}]},
    "stop": {"messages": HELLO, "stop": 5},
    "temperature": {"messages": HELLO, "temperature": "hot"},
    "stream_options": {"messages": HELLO, "stream_options": "x"},
    "n": {"messages": HELLO, "n": "3"},
    "max_tokens": {"messages": HELLO, "max_tokens": -1},
}


@pytest.mark.parametrize("param, fields", CHAT_CASES.items(), ids=CHAT_CASES.keys())
def test_a_malformed_chat_body_is_a_400_naming_the_field(
    relay_url, alice, alice_key, openai_channel, mock_upstream, param, fields
):
    response = post(relay_url, "/v1/chat/completions", alice_key, {"model": "gpt-4o", **fields})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_request"
    assert response.headers["x-should-retry"] == "false"
    assert mock_upstream.requests == [] and not Hold.objects.exists()


ANTHROPIC_CASES = {
    "system": {"system": ["a"]},
    "tool_choice": {"tool_choice": "auto"},
    "max_tokens": {"max_tokens": "many"},
}


@pytest.mark.parametrize("param, fields", ANTHROPIC_CASES.items(), ids=ANTHROPIC_CASES.keys())
def test_a_malformed_messages_body_is_a_400_in_anthropics_format(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream, param, fields
):
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": HELLO, **fields}

    response = post(relay_url, "/v1/messages", alice_key, body)

    assert response.status_code == 400, response.text
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert data["error"]["message"].startswith(param)
    assert mock_upstream.requests == []


def test_json_nested_deeper_than_the_limit_is_a_400(relay_url, alice, alice_key, openai_channel):
    deep = b'{"model": "gpt-4o", "messages": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    response = post(relay_url, "/v1/chat/completions", alice_key, content=deep)

    assert response.status_code == 400
    assert "nest" in response.json()["error"]["message"].lower()
