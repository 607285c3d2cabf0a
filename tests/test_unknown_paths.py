"""A near miss on a /v1 path gets the relay's JSON error, never the site's HTML page.

Clients build URLs from a base URL and a path, so a wrong case, a missing letter or a missing
slash is a common mistake: each must answer 404 in OpenAI's error shape (405 with ``Allow`` for
a known path called with the wrong method), and paths under /v1/messages in Anthropic's. These
answers need no key and no body: they are given before a byte of the body is read.
"""

import socket
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

NEAR_MISSES = [
    "/v1",
    "/v1/",
    "/V1/chat/completions",
    "/v1/chat/completion",
    "/v1/Chat/Completions",
    "/V1/Messages",
    "/v1/chat//completions",
]
# Near misses under /v1beta are answered in Google's shape: tests/test_gemini.py.


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("path", NEAR_MISSES)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_near_miss_path_gets_a_json_404_in_openais_shape(relay_url, alice_key, path, method):
    response = httpx.request(
        method,
        relay_url + path,
        json={"model": "gpt-4o"} if method == "POST" else None,
        headers={"Authorization": f"Bearer {alice_key}"},
    )

    error = assert_openai_error(response, 404)
    assert error["code"] == "unknown_url"
    assert path in error["message"]


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/completions/", "POST"),
        ("DELETE", "/v1/embeddings", "POST"),
        ("POST", "/v1/models", "GET"),
    ],
)
def test_a_known_path_with_the_wrong_method_gets_a_json_405_with_allow(
    relay_url, method, path, allowed
):
    response = httpx.request(method, relay_url + path)

    error = assert_openai_error(response, 405)
    assert error["code"] == "method_not_allowed"
    assert response.headers["allow"] == allowed


def test_paths_under_messages_keep_anthropics_shape(relay_url):
    unknown = httpx.post(f"{relay_url}/v1/messages/nonexistent", json={})
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "error"
    assert unknown.json()["error"]["type"] == "not_found_error"

    wrong_method = httpx.get(f"{relay_url}/v1/messages")
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_the_site_keeps_the_paths_that_are_not_the_relays(relay_url):
    # /v1x is not /v1: it belongs to the site, whose 404 is its own page.
    response = httpx.get(f"{relay_url}/v1x/chat/completions")
    assert response.status_code == 404
    assert not response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "request_line",
    ["POST /v1/chat/completion HTTP/1.1", "GET /v1/chat/completions HTTP/1.1"],
)
def test_a_near_miss_is_answered_without_waiting_for_its_body(relay_url, request_line):
    address = urlsplit(relay_url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(
            f"{request_line}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)  # times out (the test fails) if the body is awaited
            assert chunk, "closed without an answer"
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (404, 405)
    assert b"connection: close" in answer.lower()
