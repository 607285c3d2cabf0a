"""Request ids and the refusal log.

Every /v1 answer carries ``x-request-id`` (``req_`` and 24 hex digits); an Anthropic error's
``request_id`` is the same id, and so is the one the relay.requests logger names when it logs a
refused or failed call: one INFO line with the key's id (never the key), the model, the status
and the reason (the error's code). Served calls are not logged. The relay runs in a thread of
the test process, so its records reach caplog through the root logger.
"""

import logging
import re

import httpx
import pytest

from accounts.models import ApiKey
from accounts.services import create_api_key
from relay import errors, views
from relay.http import current_request_id, loggable, stream_error_reason
from relay.responses import Response
from tests.conftest import eventually

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")
HELLO = [{"role": "user", "content": "Say hello"}]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


@pytest.fixture
def refusals(caplog):
    """The relay.requests lines logged so far (the relay's thread logs just after it answers)."""
    caplog.set_level(logging.INFO, logger="relay.requests")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "relay.requests"]

    return lines


def logged_line(refusals, request_id: str) -> str:
    """The one line logged for ``request_id``, waiting for it to be written."""
    found = eventually(lambda: [line for line in refusals() if line.startswith(request_id)])
    assert len(found) == 1, refusals()
    return found[0]


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def anthropic_call(relay_url, key: str | None, **body) -> httpx.Response:
    headers = {**ANTHROPIC_HEADERS, **({"x-api-key": key} if key else {})}
    sent = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": HELLO, **body}
    return httpx.post(f"{relay_url}/v1/messages", json=sent, headers=headers, timeout=30)


def openai_call(relay_url, key: str, **body) -> httpx.Response:
    sent = {"model": "gpt-4o", "max_tokens": 50, "messages": HELLO, **body}
    return httpx.post(
        f"{relay_url}/v1/chat/completions",
        json=sent,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_every_v1_answer_carries_its_own_request_id(
    relay_url, alice_key, openai_channel, anthropic_channel
):
    answers = [
        openai_call(relay_url, alice_key),
        anthropic_call(relay_url, alice_key),
        httpx.get(f"{relay_url}/v1/models", headers={"Authorization": f"Bearer {alice_key}"}),
        httpx.get(f"{relay_url}/v1/no/such/thing"),
        httpx.get(f"{relay_url}/v1/chat/completions"),
    ]

    assert [a.status_code for a in answers] == [200, 200, 200, 404, 405]
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids), ids
    assert len(set(ids)) == len(ids)


def test_a_wrong_key_is_logged_with_the_id_its_answer_carries_and_without_the_key(
    relay_url, refusals
):
    wrong_key = "sk-" + "W" * 48

    response = anthropic_call(relay_url, wrong_key)

    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    assert response.json()["request_id"] == request_id
    line = logged_line(refusals, request_id)
    assert fields(line) == {
        "key": "-",
        "model": "-",
        "status": "401",
        "reason": "invalid_api_key",
    }
    assert "POST /v1/messages" in line
    assert wrong_key not in line and wrong_key[3:] not in line


def test_an_unknown_model_is_logged_with_the_keys_id(
    relay_url, alice, alice_key, anthropic_channel, refusals
):
    key_id = ApiKey.objects.get(user=alice).id

    response = anthropic_call(relay_url, alice_key, model="no-such-model")

    assert response.status_code == 404
    request_id = response.headers["x-request-id"]
    assert response.json()["request_id"] == request_id
    line = logged_line(refusals, request_id)
    assert (fields(line)["key"], fields(line)["status"]) == (str(key_id), "404")
    assert fields(line)["reason"] == "model_not_found"
    assert fields(line)["model"] == "no-such-model"  # set by admission once the body is read
    assert alice_key not in line and "Say hello" not in line


def test_a_key_out_of_allowance_is_logged_as_a_429_with_its_reason(
    relay_url, alice, openai_channel, refusals, books_balance
):
    row, key = create_api_key(user=alice, quota=10)

    response = openai_call(relay_url, key)

    assert response.status_code == 429
    request_id = response.headers["x-request-id"]
    assert REQUEST_ID.fullmatch(request_id)
    line = logged_line(refusals, request_id)
    logged = fields(line)
    assert (logged["key"], logged["status"], logged["reason"]) == (
        str(row.id),
        "429",
        "insufficient_quota",
    )
    assert key not in line
    books_balance()


def test_served_calls_are_not_logged(relay_url, alice_key, openai_channel, refusals):
    served = openai_call(relay_url, alice_key)
    refused = httpx.get(f"{relay_url}/v1/no/such/thing")  # logged after the served one

    assert served.status_code == 200
    logged_line(refusals, refused.headers["x-request-id"])
    assert not any(served.headers["x-request-id"] in line for line in refusals())


def test_a_stream_that_ends_with_an_error_event_is_logged_with_the_events_code(
    relay_url, alice_key, openai_channel, mock_upstream, refusals
):
    mock_upstream.script({"chunks": 3, "cut_after": 1})

    with httpx.stream(
        "POST",
        f"{relay_url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=30,
    ) as response:
        body = response.read()

    assert response.status_code == 200 and b'"upstream_error"' in body
    line = logged_line(refusals, response.headers["x-request-id"])
    assert (fields(line)["status"], fields(line)["reason"]) == ("200", "upstream_error")


def test_code_serving_a_call_knows_its_request_id_and_model_it_names_is_logged(
    relay_url, monkeypatch, refusals
):
    async def endpoint(request):
        request.model = "gpt-4o"
        error = errors.RelayError(400, "Refused.", code="refused_for_the_test")
        response = errors.render(error, api=errors.OPENAI)
        response.headers["x-seen-request-id"] = current_request_id()
        return response

    monkeypatch.setitem(views.ROUTES, "/v1/embeddings", endpoint)

    response = httpx.post(f"{relay_url}/v1/embeddings", json={})

    request_id = response.headers["x-request-id"]
    assert response.headers["x-seen-request-id"] == request_id
    line = logged_line(refusals, request_id)
    assert fields(line) == {
        "key": "-",
        "model": "gpt-4o",
        "status": "400",
        "reason": "refused_for_the_test",
    }


def test_a_model_name_cannot_forge_a_log_line(relay_url, monkeypatch, refusals):
    async def endpoint(request):
        request.model = "gpt-4o\nreq_000000000000000000000000 key=1 status=200 " + "x" * 500
        return Response.json({"error": {"code": "x"}}, status=400)

    monkeypatch.setitem(views.ROUTES, "/v1/embeddings", endpoint)

    response = httpx.post(f"{relay_url}/v1/embeddings", json={})

    line = logged_line(refusals, response.headers["x-request-id"])
    logged = fields(line)
    assert "\n" not in line and (logged["key"], logged["status"]) == ("-", "400")
    assert len(logged["model"]) == 100


def test_outside_a_request_there_is_no_request_id_and_errors_mint_their_own():
    assert current_request_id() is None
    body = errors.body(errors.RelayError(401, "No."), api=errors.ANTHROPIC)
    assert REQUEST_ID.fullmatch(body["request_id"])


@pytest.mark.parametrize(
    ("last_chunk", "reason"),
    [
        (
            b'data: {"error":{"message":"m","type":"server_error","code":"upstream_error"}}\n\n',
            "upstream_error",
        ),
        (
            b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n',
            "overloaded_error",
        ),
        (b'data: {"choices":[]}\n\nevent: error\ndata: {not json\n\n', "stream_error"),
        (b"data: [DONE]\n\n", None),
        (b'data: {"choices":[{"delta":{"content":"data: {\\"error\\""}}]}\n\n', None),
        (None, None),
    ],
)
def test_only_a_stream_ending_with_an_error_event_has_a_reason(last_chunk, reason):
    assert stream_error_reason(last_chunk) == reason


def test_loggable_keeps_one_printable_word():
    assert loggable("claude-sonnet-4-5", 100) == "claude-sonnet-4-5"
    assert loggable("a b\r\nc\x00é", 100) == "a_b__c__"
    assert loggable(None, 100) == loggable("", 100) == "-"
