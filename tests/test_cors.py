"""CORS on /v1, as a browser client (NextChat, LobeChat web) sends it.

A browser first sends a preflight: ``OPTIONS`` with ``Origin``, ``Access-Control-Request-Method``
and ``Access-Control-Request-Headers``, and no key. It is answered 204 before any key check.
Then every answer, errors and streams included, must say which origin may read it and expose
``x-request-id``. The allowed origins are RELAY_CORS_ORIGINS (default ``*``: the key is the
credential, sent as a header, never a cookie).
"""

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

APP = "https://chat.example.org"
HELLO = [{"role": "user", "content": "Say hello"}]


def preflight(url: str, *, origin: str = APP, headers: str | None = None) -> httpx.Response:
    sent = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return httpx.options(url, headers=sent, timeout=30)


def readable_by(response: httpx.Response, origin: str) -> bool:
    """Whether a browser at ``origin`` lets the page read ``response`` and its request id."""
    allowed = response.headers.get("access-control-allow-origin")
    exposed = response.headers.get("access-control-expose-headers", "")
    return allowed in ("*", origin) and "x-request-id" in exposed.replace(" ", "").split(",")


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/messages", "/v1/models", "/v1beta/models/x"]
)
def test_a_preflight_is_answered_before_any_key_check(relay_url, path):
    asked = "authorization,content-type,x-stainless-os,x-stainless-retry-count"

    response = preflight(relay_url + path, headers=asked)

    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert response.headers["access-control-allow-headers"] == asked
    assert int(response.headers["access-control-max-age"]) > 0
    assert "content-length" not in response.headers


def test_a_preflight_naming_no_headers_allows_the_ones_sdks_send(relay_url):
    response = preflight(relay_url + "/v1/messages")

    allowed = {name.strip() for name in response.headers["access-control-allow-headers"].split(",")}
    expected = {"authorization", "x-api-key", "content-type", "anthropic-version"}
    assert expected | {"anthropic-beta", "openai-beta", "x-stainless-os"} <= allowed


def test_a_browser_can_read_answers_errors_included(
    relay_url, alice_key, openai_channel, anthropic_channel
):
    origin = {"Origin": APP}
    served = httpx.post(
        relay_url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={**origin, "Authorization": f"Bearer {alice_key}"},
    )
    no_key = httpx.post(
        relay_url + "/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": HELLO},
        headers=origin,
    )
    unknown = httpx.get(relay_url + "/v1/nothing/here", headers=origin)
    models = httpx.get(
        relay_url + "/v1/models", headers={**origin, "Authorization": f"Bearer {alice_key}"}
    )

    assert [r.status_code for r in (served, no_key, unknown, models)] == [200, 401, 404, 200]
    for response in (served, no_key, unknown, models):
        assert readable_by(response, APP), response.headers


def test_a_browser_can_read_a_stream(relay_url, alice_key, anthropic_channel):
    with httpx.stream(
        "POST",
        relay_url + "/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 20, "messages": HELLO, "stream": True},
        headers={
            "Origin": APP,
            "x-api-key": alice_key,
            "anthropic-version": "2023-06-01",
            "anthropic-dangerous-direct-browser-access": "true",
        },
        timeout=30,
    ) as response:
        body = response.read()

    assert response.status_code == 200 and b"message_stop" in body
    assert readable_by(response, APP)


def test_configured_origins_are_the_only_ones_allowed(relay_url, alice_key, settings):
    settings.RELAY_CORS_ORIGINS = f"{APP}, https://other.example.org"
    url = relay_url + "/v1/models"
    key = {"Authorization": f"Bearer {alice_key}"}

    allowed_preflight = preflight(url, headers="authorization")
    stranger_preflight = preflight(url, origin="https://evil.example.net", headers="authorization")
    allowed = httpx.get(url, headers={**key, "Origin": APP})
    stranger = httpx.get(url, headers={**key, "Origin": "https://evil.example.net"})

    assert allowed_preflight.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-origin" not in stranger_preflight.headers
    assert readable_by(allowed, APP) and allowed.headers["access-control-allow-origin"] == APP
    assert not readable_by(stranger, "https://evil.example.net")
    for response in (allowed_preflight, stranger_preflight, allowed, stranger):
        assert "origin" in response.headers["vary"].lower()


def test_the_site_gets_no_cors_headers(relay_url):
    response = preflight(relay_url + "/admin/login/")

    assert response.status_code != 204
    assert "access-control-allow-origin" not in response.headers
