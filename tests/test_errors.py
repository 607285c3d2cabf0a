"""Every error the relay answers, in the format of the API that was called.

OpenAI-style paths answer ``{"error": {message, type, param, code}}``; /v1/messages answers
Anthropic's ``{"type": "error", "error": {type, message}, "request_id"}``. No error carries an
upstream key, an upstream address or a Python traceback, refused calls cost nothing, and no
client key reaches a log.
"""

import logging
from datetime import timedelta

import anthropic
import httpx
import openai
import pytest
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import create_api_key
from billing import services as billing
from billing.models import Hold, ModelPrice, UsageLog
from config.logging import redact
from tests.conftest import ALICE_CREDIT, UPSTREAM_KEY, add_channel, free_port

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]
# Per API: the path, a valid body, and how its clients send the key.
APIS = {
    "openai": (
        "/v1/chat/completions",
        # A named output limit: a call without one is held at what the balance covers.
        {"model": "gpt-4o", "max_tokens": 100, "messages": HELLO},
        lambda key: {"Authorization": f"Bearer {key}"},
    ),
    "anthropic": (
        "/v1/messages",
        {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": HELLO},
        lambda key: {"x-api-key": key, "anthropic-version": "2023-06-01"},
    ),
}
BOTH_APIS = pytest.mark.parametrize("api", ["openai", "anthropic"])


def call(relay_url, api, key=None, *, body=None, content=None, headers=None, params=None):
    """POST to the API's endpoint with raw httpx (``content`` wins over ``body``)."""
    path, default_body, key_headers = APIS[api]
    sent_headers = {**(key_headers(key) if key else {}), **(headers or {})}
    if content is None:
        return httpx.post(
            relay_url + path,
            json=default_body if body is None else body,
            headers=sent_headers,
            params=params,
            timeout=30,
        )
    if isinstance(content, bytes):
        sent_headers.setdefault("Content-Type", "application/json")
    return httpx.post(
        relay_url + path, content=content, headers=sent_headers, params=params, timeout=30
    )


def openai_error(response, status: int) -> dict:
    """The OpenAI error object of ``response``, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def anthropic_error(response, status: int) -> dict:
    """The Anthropic error object of ``response``, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}, body
    assert body["type"] == "error" and body["request_id"]
    error = body["error"]
    assert set(error) == {"type", "message"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def expect_error(response, api: str, *, status: int, openai: tuple, anthropic: tuple) -> dict:
    """Check an error in the API's format: ``openai`` is (type, code), ``anthropic`` is
    (status, type); returns the error object."""
    if api == "openai":
        error = openai_error(response, status)
        assert (error["type"], error["code"]) == openai, error
    else:
        anthropic_status, anthropic_type = anthropic
        error = anthropic_error(response, anthropic_status)
        assert error["type"] == anthropic_type, error
    assert_no_leak(response.text)
    return error


def assert_no_leak(text: str, *, upstream=None) -> None:
    """No upstream key, upstream address or Python trace in a response body."""
    assert UPSTREAM_KEY not in text
    assert "Traceback" not in text and 'File "' not in text
    if upstream is not None:
        port = upstream.url.rsplit(":", 1)[1]
        assert upstream.url not in text
        assert f"127.0.0.1:{port}" not in text and f":{port}" not in text


def assert_nothing_charged(user: User, quota: int = ALICE_CREDIT) -> None:
    user.refresh_from_db()
    assert user.quota == quota
    assert user.used_quota == 0
    # A call that failed after admission leaves a usage row saying so, and charging nothing.
    assert not UsageLog.objects.exclude(status=UsageLog.Status.FAILED).exists()
    assert not UsageLog.objects.filter(quota__gt=0).exists()
    assert not Hold.objects.filter(status=Hold.Status.OPEN).exists()
    assert not Hold.objects.filter(status=Hold.Status.SETTLED).exists()


def leave_alice_with(alice: User, quota: int) -> None:
    billing.grant(user=alice, amount=quota - alice.quota, note="spent elsewhere")


# --- 401: no key, wrong key ---------------------------------------------------------------


@BOTH_APIS
def test_a_call_without_a_key_is_refused_with_401(relay_url, api):
    response = call(relay_url, api)

    error = expect_error(
        response,
        api,
        status=401,
        openai=("invalid_request_error", "invalid_api_key"),
        anthropic=(401, "authentication_error"),
    )
    assert "key" in error["message"].lower()
    assert response.headers["x-should-retry"] == "false"


@BOTH_APIS
def test_a_wrong_key_is_refused_with_401(relay_url, alice_key, api):
    wrong = alice_key[:-1] + ("A" if alice_key[-1] != "A" else "B")
    response = call(relay_url, api, wrong)

    expect_error(
        response,
        api,
        status=401,
        openai=("invalid_request_error", "invalid_api_key"),
        anthropic=(401, "authentication_error"),
    )
    assert response.headers["x-should-retry"] == "false"
    assert wrong not in response.text


def test_the_sdks_see_a_wrong_key_as_an_authentication_error(make_openai, make_anthropic):
    with pytest.raises(openai.AuthenticationError) as refused:
        make_openai("sk-" + "0" * 48).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert refused.value.code == "invalid_api_key"

    with pytest.raises(anthropic.AuthenticationError) as refused:
        make_anthropic("sk-" + "0" * 48).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=HELLO
        )
    assert refused.value.body["error"]["type"] == "authentication_error"


# --- 403: the key's own limits ------------------------------------------------------------


@BOTH_APIS
def test_a_disabled_key_is_refused_with_403(relay_url, alice, api, mock_upstream):
    api_key, key = create_api_key(user=alice)
    ApiKey.objects.filter(id=api_key.id).update(status=ApiKey.Status.DISABLED)

    response = call(relay_url, api, key)

    error = expect_error(
        response,
        api,
        status=403,
        openai=("invalid_request_error", "key_disabled"),
        anthropic=(403, "permission_error"),
    )
    assert "disabled" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert mock_upstream.requests == []


def test_disabling_a_key_through_the_model_takes_effect_at_once(
    relay_url, alice, openai_channel, make_openai
):
    api_key, key = create_api_key(user=alice)
    client = make_openai(key)
    client.chat.completions.create(model="gpt-4o", messages=HELLO)  # now cached

    api_key.status = ApiKey.Status.DISABLED
    api_key.save()

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert refused.value.code == "key_disabled"
    assert UsageLog.objects.count() == 1


def test_deactivating_the_user_refuses_their_cached_key_at_once(
    relay_url, alice, alice_key, openai_channel, make_openai
):
    client = make_openai(alice_key)
    client.chat.completions.create(model="gpt-4o", messages=HELLO)

    alice.is_active = False
    alice.save()

    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)


def test_a_sign_in_does_not_make_every_process_reload_its_keys(
    relay_url, alice, alice_key, openai_channel, make_openai
):
    from config.cache import shared_cache
    from relay.auth import EPOCH_KEY

    make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)
    epoch = shared_cache().get(EPOCH_KEY, 0)
    alice.save(update_fields=["last_login"])  # what django.contrib.auth does at login
    assert shared_cache().get(EPOCH_KEY, 0) == epoch
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert shared_cache().get(EPOCH_KEY, 0) == epoch + 1
    with pytest.raises(openai.PermissionDeniedError):
        make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)


@BOTH_APIS
def test_an_expired_key_is_refused_with_403(relay_url, alice, api):
    _, key = create_api_key(user=alice, expires_at=timezone.now() - timedelta(minutes=1))

    response = call(relay_url, api, key)

    error = expect_error(
        response,
        api,
        status=403,
        openai=("invalid_request_error", "key_expired"),
        anthropic=(403, "permission_error"),
    )
    assert "expired" in error["message"]
    assert response.headers["x-should-retry"] == "false"


def test_a_key_that_has_not_expired_yet_works(alice, openai_channel, make_openai):
    _, key = create_api_key(user=alice, expires_at=timezone.now() + timedelta(days=1))
    answer = make_openai(key).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert answer.choices[0].message.content


@BOTH_APIS
def test_a_model_off_the_keys_allow_list_is_refused_with_403(relay_url, alice, api, mock_upstream):
    _, key = create_api_key(user=alice, allowed_models=["gpt-4o-mini"])

    response = call(relay_url, api, key)

    error = expect_error(
        response,
        api,
        status=403,
        openai=("invalid_request_error", "model_not_allowed"),
        anthropic=(403, "permission_error"),
    )
    assert APIS[api][1]["model"] in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert mock_upstream.requests == []
    assert_nothing_charged(alice)


def test_a_model_on_the_keys_allow_list_is_served(alice, openai_channel, make_openai):
    _, key = create_api_key(user=alice, allowed_models=["gpt-4o"])
    answer = make_openai(key).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert answer.choices[0].message.content


def test_changing_a_keys_allow_list_through_the_model_takes_effect_at_once(
    alice, openai_channel, make_openai
):
    api_key, key = create_api_key(user=alice)
    client = make_openai(key)
    client.chat.completions.create(model="gpt-4o", messages=HELLO)

    api_key.allowed_models = ["gpt-4o-mini"]
    api_key.save()

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert refused.value.code == "model_not_allowed"


@BOTH_APIS
def test_a_call_from_an_ip_off_the_keys_allow_list_is_refused_with_403(relay_url, alice, api):
    _, key = create_api_key(user=alice, allowed_ips=["10.0.0.0/8", "192.0.2.7"])

    response = call(relay_url, api, key)

    error = expect_error(
        response,
        api,
        status=403,
        openai=("invalid_request_error", "ip_not_allowed"),
        anthropic=(403, "permission_error"),
    )
    assert "IP" in error["message"]
    assert response.headers["x-should-retry"] == "false"


def test_a_call_from_an_allowed_ip_is_served(alice, openai_channel, make_openai):
    _, key = create_api_key(user=alice, allowed_ips=["127.0.0.0/8"])
    answer = make_openai(key).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert answer.choices[0].message.content


# --- 429 / 402: out of credit --------------------------------------------------------------


@BOTH_APIS
def test_a_balance_too_low_for_the_hold_is_refused_as_insufficient_quota(
    relay_url,
    alice,
    alice_key,
    openai_channel,
    anthropic_channel,
    mock_upstream,
    api,
    books_balance,
):
    leave_alice_with(alice, 100)

    response = call(relay_url, api, alice_key)

    error = expect_error(
        response,
        api,
        status=429,
        openai=("insufficient_quota", "insufficient_quota"),
        anthropic=(402, "billing_error"),
    )
    assert "balance" in error["message"] and "key" not in error["message"].lower()
    assert response.headers["x-should-retry"] == "false"
    assert mock_upstream.requests == []
    assert_nothing_charged(alice, quota=100)
    books_balance()


@BOTH_APIS
def test_a_keys_own_quota_running_out_is_refused_with_its_own_message(
    relay_url, alice, openai_channel, anthropic_channel, mock_upstream, api, books_balance
):
    _, key = create_api_key(user=alice, quota=100)

    response = call(relay_url, api, key)

    error = expect_error(
        response,
        api,
        status=429,
        openai=("insufficient_quota", "insufficient_quota"),
        anthropic=(402, "billing_error"),
    )
    assert "key" in error["message"].lower() and "balance" not in error["message"]
    # Topping up the account would not help: the message says who can raise the key's limit.
    assert "top up" not in error["message"].lower() and "raise" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert mock_upstream.requests == []
    assert_nothing_charged(alice)
    assert ApiKey.objects.get().remaining_quota == 100
    books_balance()


def test_the_openai_sdk_sees_insufficient_quota_and_does_not_retry(
    alice, alice_key, openai_channel, make_openai
):
    leave_alice_with(alice, 100)
    sent = []
    client = make_openai(
        alice_key, max_retries=2, http_client=httpx.Client(event_hooks={"request": [sent.append]})
    )

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=100)

    assert (refused.value.type, refused.value.code) == ("insufficient_quota", "insufficient_quota")
    assert len(sent) == 1  # the SDK retries a 429 unless told x-should-retry: false


@pytest.mark.parametrize("balance", [0, -500])
def test_a_balance_at_or_below_zero_gets_no_hold_even_for_a_free_model(
    relay_url, alice, alice_key, openai_channel, mock_upstream, balance, books_balance
):
    leave_alice_with(alice, balance)
    ModelPrice.objects.filter(model="gpt-4o").update(is_free=True)

    response = call(relay_url, "openai", alice_key)

    error = openai_error(response, 429)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "balance" in error["message"]
    assert not Hold.objects.exists()
    assert mock_upstream.requests == []
    alice.refresh_from_db()
    assert alice.quota == balance
    books_balance()


def test_a_keys_spent_allowance_gets_no_hold_even_for_a_free_model(
    relay_url, alice, openai_channel, mock_upstream, books_balance
):
    _, key = create_api_key(user=alice, quota=0)
    ModelPrice.objects.filter(model="gpt-4o").update(is_free=True)

    response = call(relay_url, "openai", key)

    error = openai_error(response, 429)
    assert error["code"] == "insufficient_quota" and "key" in error["message"].lower()
    assert not Hold.objects.exists()
    assert mock_upstream.requests == []
    books_balance()


# --- 404: models ----------------------------------------------------------------------------


@BOTH_APIS
def test_an_unpriced_model_is_not_found(relay_url, alice, alice_key, mock_upstream, api):
    # A channel offers it, but nobody priced it: it is refused, never free.
    add_channel(mock_upstream.url, models=["mystery-model"])
    add_channel(mock_upstream.url, type="anthropic", models=["mystery-model"])
    body = {**APIS[api][1], "model": "mystery-model"}

    response = call(relay_url, api, alice_key, body=body)

    error = expect_error(
        response,
        api,
        status=404,
        openai=("invalid_request_error", "model_not_found"),
        anthropic=(404, "not_found_error"),
    )
    assert "mystery-model" in error["message"]
    assert mock_upstream.requests == []
    assert_nothing_charged(alice)


@BOTH_APIS
def test_a_priced_model_no_channel_offers_the_users_group_is_not_found(
    relay_url, alice, alice_key, mock_upstream, api
):
    add_channel(mock_upstream.url, models=["gpt-4o"], groups=["vip"])
    add_channel(mock_upstream.url, type="anthropic", models=["claude-haiku-4-5"], groups=["vip"])
    add_channel(mock_upstream.url, models=["mystery-model"])

    response = call(relay_url, api, alice_key)
    unpriced = call(relay_url, api, alice_key, body={**APIS[api][1], "model": "mystery-model"})

    error = expect_error(
        response,
        api,
        status=404,
        openai=("invalid_request_error", "model_not_found"),
        anthropic=(404, "not_found_error"),
    )
    assert APIS[api][1]["model"] in error["message"] and "default" in error["message"]
    # Not the message of an unpriced model: the user learns the model exists but is not theirs.
    other = unpriced.json()["error"]["message"]
    assert error["message"] != other.replace("mystery-model", APIS[api][1]["model"])
    assert mock_upstream.requests == []
    assert_nothing_charged(alice)


# --- 400: the request itself ----------------------------------------------------------------

BAD_BODIES = {
    "malformed JSON": b'{"model": "gpt-4o", "messages": [',
    "an empty body": b"",
    "a JSON array": b'[{"model": "gpt-4o"}]',
    "a JSON string": b'"gpt-4o"',
    "no model": b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}',
    "a model that is not a string": b'{"model": 42, "messages": [], "max_tokens": 5}',
    "an empty model": b'{"model": "", "messages": [], "max_tokens": 5}',
    # PostgreSQL refuses a NUL in any text: the price lookup failed with a 500.
    "a model with a NUL": b'{"model": "gpt-4o\\u0000", "messages": [{"role": "user", "content":'
    b' "hi"}], "max_tokens": 5}',
}


@BOTH_APIS
def test_a_bad_request_body_is_refused_with_400(
    relay_url, alice, alice_key, openai_channel, anthropic_channel, mock_upstream, api
):
    for problem, content in BAD_BODIES.items():
        response = call(relay_url, api, alice_key, content=content)

        assert response.status_code == 400, (problem, response.text)
        error = expect_error(
            response,
            api,
            status=400,
            openai=("invalid_request_error", "invalid_request"),
            anthropic=(400, "invalid_request_error"),
        )
        if api == "openai" and "model" in problem:
            assert error["param"] == "model", problem
        assert response.headers["x-should-retry"] == "false", problem
    assert mock_upstream.requests == []
    assert_nothing_charged(alice)


# --- 413: bodies over the limit -------------------------------------------------------------


def oversized_body(api: str) -> bytes:
    content = "x" * 5_000
    body = {**APIS[api][1], "messages": [{"role": "user", "content": content}]}
    return httpx.Request("POST", "http://x", json=body).read()


def in_pieces(data: bytes, size: int = 700):
    for start in range(0, len(data), size):
        yield data[start : start + size]


@BOTH_APIS
def test_a_body_over_the_limit_is_refused_with_413_and_costs_nothing(
    relay_url,
    alice,
    alice_key,
    openai_channel,
    anthropic_channel,
    mock_upstream,
    settings,
    api,
    books_balance,
):
    settings.RELAY_MAX_BODY_BYTES = 2_000
    data = oversized_body(api)
    # With a Content-Length it is refused unread; a chunked body is counted as it arrives.
    for framing, content in (("content-length", data), ("chunked", in_pieces(data))):
        response = call(
            relay_url, api, alice_key, content=content, headers={"Content-Type": "application/json"}
        )
        assert ("chunked" in response.request.headers.get("transfer-encoding", "")) == (
            framing == "chunked"
        )

        assert response.status_code == 413, (framing, response.text)
        error = expect_error(
            response,
            api,
            status=413,
            openai=("invalid_request_error", "request_too_large"),
            anthropic=(413, "request_too_large"),
        )
        assert "2000" in error["message"], framing
        assert response.headers["x-should-retry"] == "false", framing
    assert mock_upstream.requests == []
    assert_nothing_charged(alice)
    books_balance()


def test_a_chunked_body_under_the_limit_is_served(
    relay_url, alice, alice_key, openai_channel, settings
):
    settings.RELAY_MAX_BODY_BYTES = 2_000
    data = httpx.Request("POST", "http://x", json=APIS["openai"][1]).read()

    response = call(
        relay_url,
        "openai",
        alice_key,
        content=in_pieces(data, 10),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_the_body_limit_applies_before_the_key_is_checked(relay_url, settings):
    settings.RELAY_MAX_BODY_BYTES = 2_000
    response = call(relay_url, "openai", content=oversized_body("openai"))
    assert openai_error(response, 413)["code"] == "request_too_large"


# --- 502 / 503: no upstream could answer ----------------------------------------------------


@BOTH_APIS
def test_when_every_channel_fails_the_call_fails_and_the_hold_is_released(
    relay_url, alice, alice_key, mock_upstream, api, books_balance
):
    kind = "openai" if api == "openai" else "anthropic"
    model = APIS[api][1]["model"]
    add_channel(mock_upstream.url, type=kind, models=[model], name="first")
    add_channel(mock_upstream.url, type=kind, models=[model], name="second")
    mock_upstream.script({"status": 500}, {"status": 500})

    response = call(relay_url, api, alice_key)

    expect_error(
        response,
        api,
        status=502,
        openai=("server_error", "upstream_error"),
        anthropic=(502, "api_error"),
    )
    assert_no_leak(response.text, upstream=mock_upstream)
    assert len(mock_upstream.requests) == 2  # both channels were tried
    assert_nothing_charged(alice)
    assert Hold.objects.get().status == Hold.Status.RELEASED
    # The operator sees the failure: one usage row, its status and error, no charge.
    failed = UsageLog.objects.get()
    assert (failed.status, failed.error, failed.quota) == ("failed", "upstream_error", 0)
    assert failed.model == model and failed.endpoint == ("chat" if api == "openai" else "messages")
    books_balance()


@BOTH_APIS
def test_an_unreachable_upstream_is_503_and_costs_nothing(
    relay_url, alice, alice_key, api, books_balance
):
    closed = f"http://127.0.0.1:{free_port()}"
    add_channel(closed, type=api, models=[APIS[api][1]["model"]])

    response = call(relay_url, api, alice_key)

    expect_error(
        response,
        api,
        status=503,
        openai=("server_error", "upstream_unavailable"),
        anthropic=(503, "overloaded_error"),
    )
    assert closed.rsplit(":", 1)[1] not in response.text
    assert_nothing_charged(alice)
    books_balance()


def test_a_stream_whose_every_channel_fails_gets_a_json_error_not_a_stream(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    mock_upstream.script({"drop": True})

    response = call(relay_url, "openai", alice_key, body={**APIS["openai"][1], "stream": True})

    error = openai_error(response, 503)
    assert error["type"] == "server_error"
    assert_nothing_charged(alice)
    books_balance()


# --- Upstream errors: relayed without secrets -----------------------------------------------


def leaky_message(upstream) -> str:
    host = upstream.url.removeprefix("http://")
    return (
        f"Request to {upstream.url}/v1/chat/completions with key {UPSTREAM_KEY} failed; "
        f"backend {host} said: 'messages' is too long"
    )


@BOTH_APIS
def test_an_upstream_400_is_relayed_without_retry_or_charge(
    relay_url, alice, alice_key, mock_upstream, api, books_balance
):
    kind = "openai" if api == "openai" else "anthropic"
    model = APIS[api][1]["model"]
    add_channel(mock_upstream.url, type=kind, models=[model], name="first")
    add_channel(mock_upstream.url, type=kind, models=[model], name="second")
    mock_upstream.script(
        {"status": 400, "error": {"message": "Invalid 'messages[0].content': string too long."}}
    )

    response = call(relay_url, api, alice_key)

    error = expect_error(
        response,
        api,
        status=400,
        openai=("invalid_request_error", "upstream_rejected"),
        anthropic=(400, "invalid_request_error"),
    )
    assert error["message"] == "Invalid 'messages[0].content': string too long."
    assert response.headers["x-should-retry"] == "false"
    assert len(mock_upstream.requests) == 1  # the client's fault: another channel cannot help
    assert_nothing_charged(alice)
    books_balance()


@BOTH_APIS
def test_an_upstream_error_never_shows_the_upstream_key_or_address(
    relay_url, alice, alice_key, mock_upstream, api
):
    add_channel(mock_upstream.url, type=api, models=[APIS[api][1]["model"]])
    # Client errors are relayed with the upstream's message; the others are told in Sluice's
    # own words (502, or 429 for the upstream's rate limit).
    expected = {400: 400, 404: 404, 422: 422, 401: 502, 403: 502, 429: 429, 500: 502, 503: 502}
    for upstream_status, status in expected.items():
        mock_upstream.script(
            {"status": upstream_status, "error": {"message": leaky_message(mock_upstream)}}
        )

        response = call(relay_url, api, alice_key)

        assert response.status_code == status, (upstream_status, response.text)
        assert_no_leak(response.text, upstream=mock_upstream)
        error = (openai_error if api == "openai" else anthropic_error)(response, status)
        if status < 429:
            assert "'messages' is too long" in error["message"], upstream_status
    assert not UsageLog.objects.filter(quota__gt=0).exists()


def test_an_upstream_error_through_a_converting_channel_shows_no_secret(
    relay_url, alice, alice_key, mock_upstream
):
    # An OpenAI-format call served by an Anthropic channel: the error is told in OpenAI's format.
    add_channel(mock_upstream.url, type="anthropic", models=["gpt-4o"])
    mock_upstream.script({"status": 400, "error": {"message": leaky_message(mock_upstream)}})

    response = call(relay_url, "openai", alice_key)

    error = openai_error(response, 400)
    assert "'messages' is too long" in error["message"]
    assert_no_leak(response.text, upstream=mock_upstream)


# --- Keys never reach a log -----------------------------------------------------------------


def test_no_key_reaches_a_log(
    relay_url, alice, alice_key, openai_channel, anthropic_channel, mock_upstream, caplog
):
    wrong_key = "sk-" + "W" * 48
    access = logging.getLogger("uvicorn.access")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    access.addHandler(caplog.handler)
    try:
        assert call(relay_url, "openai", alice_key, params={"key": alice_key}).status_code == 200
        assert call(relay_url, "anthropic", alice_key, params={"key": alice_key}).status_code == 200
        call(relay_url, "openai", wrong_key, params={"key": wrong_key, "api_key": wrong_key})
        mock_upstream.script({"status": 500}, {"status": 400})
        call(relay_url, "openai", alice_key, params={"key": alice_key})
        call(relay_url, "anthropic", alice_key, params={"key": alice_key})
        call(relay_url, "openai", alice_key, body={"model": "nope", "messages": []})
        httpx.get(f"{relay_url}/v1/models", params={"key": alice_key}, timeout=30)
    finally:
        access.removeHandler(caplog.handler)

    access_lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("?key=[redacted]" in line for line in access_lines), access_lines
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        extras = " ".join(str(v) for v in vars(record).values() if isinstance(v, str))
        for secret in (alice_key, wrong_key, alice_key[3:], UPSTREAM_KEY):
            assert secret not in text and secret not in extras, record
    for secret in (alice_key, wrong_key, UPSTREAM_KEY):
        assert secret not in caplog.text


def test_redact_cuts_keys_out_of_an_access_line():
    key = "sk-" + "a1B2c3D4" * 6
    line = (
        f'127.0.0.1:51234 - "POST /v1/chat/completions?key={key}&stream=1 HTTP/1.1" 200 '
        f'"GET /v1beta/models/gemini:generateContent?api_key=AIzaSyExample-123 HTTP/1.1" '
        f"Authorization: Bearer {key} x-api-key: {key} mj-api-secret: mj-secret-9"
    )

    cleaned = redact(line)

    for secret in (key, key[3:], "AIzaSyExample-123", "mj-secret-9"):
        assert secret not in cleaned
    assert "POST /v1/chat/completions?key=" in cleaned and "&stream=1" in cleaned
    assert cleaned.startswith('127.0.0.1:51234 - "POST')
    assert redact("a line with nothing secret") == "a line with nothing secret"


# --- Paths and methods the relay does not serve ---------------------------------------------


def test_an_unknown_v1_path_gets_a_json_404(relay_url, alice_key):
    response = httpx.post(
        f"{relay_url}/v1/no/such/thing", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_a_wrong_method_gets_a_json_405_in_the_apis_format(relay_url, alice_key):
    response = httpx.get(f"{relay_url}/v1/chat/completions")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = httpx.get(f"{relay_url}/v1/messages")
    assert response.status_code == 405 and response.json()["type"] == "error"
    assert httpx.post(f"{relay_url}/v1/models").status_code == 405


def test_an_unexpected_error_is_a_500_in_the_callers_format_without_a_trace(
    relay_url, alice_key, monkeypatch, caplog
):
    from relay import views

    async def broken(request):
        raise RuntimeError("secret internals at /srv/sluice/relay/proxy.py")

    monkeypatch.setitem(views.ROUTES, "/v1/embeddings", broken)
    monkeypatch.setitem(views.ROUTES, "/v1/messages", broken)
    headers = {"Authorization": f"Bearer {alice_key}"}

    with caplog.at_level(logging.ERROR, logger="relay.http"):
        openai_side = httpx.post(f"{relay_url}/v1/embeddings", json={}, headers=headers)
        anthropic_side = httpx.post(f"{relay_url}/v1/messages", json={}, headers=headers)

    assert openai_error(openai_side, 500)["code"] == "internal_error"
    assert anthropic_side.status_code == 500
    assert anthropic_side.json()["type"] == "error"
    for response in (openai_side, anthropic_side):
        assert "internals" not in response.text and "Traceback" not in response.text
    assert "secret internals" in caplog.text  # the operator sees what happened
