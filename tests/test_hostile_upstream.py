"""An upstream's numbers and bytes are never trusted: end to end through the running relay.

Bad usage never credits anyone (local counts are billed and the usage row keeps the raw
figures with a flag); a malformed stream ends with an error event in the client's format; an
upstream error never shows the channel's key or address; a settlement that fails leaves the
hold marked delivered, and the sweep charges it.
"""

import json

import httpx
import pytest

from billing import batch
from billing import services as billing
from billing.models import Hold, UsageLog
from relay.tokens import count_text
from tests.conftest import ALICE_CREDIT, UPSTREAM_KEY, add_channel, eventually, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = [
    {"role": "user", "content": "Say hello to everyone in the room, please, and politely too"}
]


def chat(relay_url, key, **fields):
    body = {"model": "gpt-4o", "messages": PROMPT, "max_tokens": 50, **fields}
    return httpx.post(
        relay_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def spent(user) -> int:
    user.refresh_from_db()
    return ALICE_CREDIT - user.quota


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 11, "completion_tokens": -100000},
        {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 10**6},
        },
        {"prompt_tokens": 11, "completion_tokens": "many"},
        {"prompt_tokens": 11, "completion_tokens": 3e9},
        {"prompt_tokens": 10**9, "completion_tokens": 3},
        "many",
        # Text PostgreSQL's JSON refuses (a NUL, half of a surrogate pair), in a value and a key
        {"prompt_tokens": 11, "completion_tokens": "\u0000many\ud800", "\u0000\udfff": 1},
    ],
    ids=[
        "negative",
        "cached-above-input",
        "string",
        "huge-output",
        "huge-input",
        "not-an-object",
        "unstorable-text",
    ],
)
def test_usage_that_cannot_be_believed_is_billed_on_local_counts_and_flagged(
    relay_url, alice, alice_key, openai_channel, mock_upstream, usage, books_balance
):
    mock_upstream.script({"usage": usage})

    response = chat(relay_url, alice_key)

    assert response.status_code == 200, response.text
    [log] = settled_usage(1)
    assert log.usage_flag == UsageLog.UsageFlag.REJECTED
    assert log.reported_usage  # the raw figures, for the operator
    # Local counts: 19 input tokens, and the tokens of the answer's text.
    assert (log.input_tokens, log.output_tokens) == (19, count_text("hello hello hello ", "gpt-4o"))
    assert log.quota > 0 and spent(alice) == log.quota
    books_balance()


def test_output_somewhat_above_the_limit_is_clamped_to_it(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    mock_upstream.script({"usage": {"prompt_tokens": 11, "completion_tokens": 120}})

    response = chat(relay_url, alice_key, max_tokens=50)

    assert response.status_code == 200
    [log] = settled_usage(1)
    assert log.usage_flag == UsageLog.UsageFlag.CLAMPED
    assert log.output_tokens == 50
    assert log.reported_usage["output_tokens"] == 120
    assert log.quota <= Hold.objects.get().amount
    books_balance()


def test_believable_usage_is_billed_as_reported_and_not_flagged(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    response = chat(relay_url, alice_key)

    assert response.status_code == 200
    [log] = settled_usage(1)
    assert (log.usage_flag, log.reported_usage) == ("", None)
    assert (log.input_tokens, log.output_tokens) == (11, 3)
    books_balance()


MALFORMED_OPENAI = {
    "bad-json": b'data: {"choices": [{"delta": {"content": "hel\n\n',
    "delta-string": b'data: {"choices": [{"index": 0, "delta": "oops"}]}\n\n',
    "error-string": b'data: {"error": "boom"}\n\n',
    "usage-string": b'data: {"choices": [], "usage": "many"}\n\n',
}
GOOD_OPENAI = b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi there"}}]}\n\n'  # noqa: E501


@pytest.mark.parametrize("bad", MALFORMED_OPENAI.values(), ids=MALFORMED_OPENAI.keys())
def test_a_malformed_openai_stream_ends_with_an_error_event_and_is_billed_for_what_was_sent(
    relay_url, alice, alice_key, openai_channel, mock_upstream, bad, books_balance
):
    mock_upstream.script({"raw_stream": [GOOD_OPENAI, bad, b"data: [DONE]\n\n"]})

    with httpx.stream(
        "POST",
        relay_url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": PROMPT, "stream": True},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=30,
    ) as response:
        body = response.read()

    events = [block for block in body.split(b"\n\n") if block]
    assert events[0] == GOOD_OPENAI.strip()
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_error" and "boom" not in error["message"]
    [log] = settled_usage(1)
    assert log.status == UsageLog.Status.UPSTREAM_ERROR
    assert log.output_tokens == 2  # "Hi there"
    books_balance()


def anthropic_stream_after(relay_url, key, mock_upstream, event: dict) -> bytes:
    """The body an Anthropic client reads when the upstream sends message_start, then
    ``event``, then ends."""
    start = {
        "type": "message_start",
        "message": {"id": "m", "role": "assistant", "content": [], "usage": {"input_tokens": 9}},
    }
    mock_upstream.script(
        {
            "raw_stream": [
                f"event: message_start\ndata: {json.dumps(start)}\n\n".encode(),
                f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode(),
            ]
        }
    )
    with httpx.stream(
        "POST",
        relay_url + "/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 50, "messages": PROMPT, "stream": True},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30,
    ) as response:
        return response.read()


def test_a_malformed_anthropic_stream_ends_with_an_anthropic_error_event(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream, books_balance
):
    no_index = {"type": "content_block_start", "content_block": {"type": "text", "text": ""}}

    body = anthropic_stream_after(relay_url, alice_key, mock_upstream, no_index)

    last = body.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\n")
    assert json.loads(last.split(b"data: ", 1)[1])["type"] == "error"
    [log] = settled_usage(1)
    assert log.status == UsageLog.Status.UPSTREAM_ERROR
    books_balance()


def test_an_upstream_error_never_shows_the_channels_key_or_address_in_any_case(
    relay_url, alice, alice_key, mock_upstream, books_balance
):
    channel = add_channel(mock_upstream.url, models=("gpt-4o",))
    host = mock_upstream.url.removeprefix("http://")
    message = f"Bad key {UPSTREAM_KEY.upper()} from {host} (masked sk-abcd****wxyz)"
    mock_upstream.script({"status": 400, "error_message": message})

    response = chat(relay_url, alice_key)

    assert response.status_code == 400
    text = response.text
    assert UPSTREAM_KEY.upper() not in text and UPSTREAM_KEY not in text
    assert host not in text and channel.base_url not in text and "sk-abcd" not in text
    books_balance()


@pytest.mark.parametrize(
    "error_body", [{"error": {"message": {"nested": 1}}}, {"error": "boom"}, None, [1, 2]]
)
def test_an_upstream_error_of_an_odd_shape_is_a_clean_error_not_a_500(
    relay_url, alice, alice_key, openai_channel, mock_upstream, error_body, books_balance
):
    mock_upstream.script({"status": 400, "error_body": error_body})

    response = chat(relay_url, alice_key)

    assert response.status_code in (400, 502)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert UsageLog.objects.get().status == UsageLog.Status.FAILED
    assert spent(alice) == 0
    books_balance()


def test_a_plain_answer_that_is_not_json_is_a_502_and_costs_nothing(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    mock_upstream.script({"raw_body": b"<html>oops</html>"})

    response = chat(relay_url, alice_key)

    assert response.status_code == 502
    assert spent(alice) == 0
    books_balance()


def test_a_settlement_that_fails_leaves_the_hold_delivered_and_the_sweep_charges_it(
    relay_url, alice, alice_key, openai_channel, mock_upstream, monkeypatch, books_balance
):
    def broken(self, op):
        raise RuntimeError("the journal row could not be written")

    monkeypatch.setattr(batch._Books, "settle", broken)

    response = chat(relay_url, alice_key)

    assert response.status_code == 200  # the answer reached the client
    hold = eventually(lambda: Hold.objects.filter(status=Hold.Status.DELIVERED).first())
    assert hold and hold.delivered_quota > 0
    books_balance()  # a delivered hold still holds its money
    monkeypatch.undo()

    billing.release_expired_holds()

    hold.refresh_from_db()
    assert hold.status == Hold.Status.SETTLED
    log = UsageLog.objects.get()
    assert log.quota == hold.delivered_quota and log.usage_flag == "settled_late"
    assert spent(alice) == hold.delivered_quota
    books_balance()


def test_an_anthropic_error_event_reaches_an_anthropic_client_with_its_kind(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream, books_balance
):
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}

    body = anthropic_stream_after(relay_url, alice_key, mock_upstream, overloaded)

    last = json.loads(body.strip().split(b"\n\n")[-1].split(b"data: ", 1)[1])
    assert last["error"]["type"] == "overloaded_error"
    [log] = settled_usage(1)
    assert log.status == UsageLog.Status.UPSTREAM_ERROR
    books_balance()


LONG_ANSWER = "word " * 400  # some 400 tokens, far past the limit the call was sent


def chunk(content: str) -> bytes:
    event = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": content}}],
    }
    return f"data: {json.dumps(event)}\n\n".encode()


def stream_five_tokens(relay_url, key) -> bytes:
    """A streamed chat call sent with max_tokens 5; the body the client read."""
    with httpx.stream(
        "POST",
        relay_url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": PROMPT, "max_tokens": 5, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        return response.read()


@pytest.mark.parametrize("usage", [None, {"prompt_tokens": 11, "completion_tokens": 10**7}])
def test_a_stream_past_its_limit_with_no_usage_to_believe_costs_no_more_than_its_hold(
    relay_url, alice, alice_key, openai_channel, mock_upstream, usage, books_balance
):
    # The upstream ignores max_tokens and sends no usage (or figures that cannot be believed):
    # the output counted from what was sent is clamped to the limit the hold covered.
    ending = (
        []
        if usage is None
        else [f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()]
    )
    mock_upstream.script(
        {"raw_stream": [chunk("word ") for _ in range(400)] + ending + [b"data: [DONE]\n\n"]}
    )
    stream_five_tokens(relay_url, alice_key)

    [log] = settled_usage(1)
    assert log.output_tokens == 5
    flag = UsageLog.UsageFlag
    assert log.usage_flag == (flag.CLAMPED if usage is None else flag.REJECTED)
    assert log.reported_usage["output_tokens"] == (401 if usage is None else 10**7)
    assert log.quota <= Hold.objects.get().amount
    assert spent(alice) == log.quota
    books_balance()


def test_a_plain_answer_past_its_limit_with_no_usage_costs_no_more_than_its_hold(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": LONG_ANSWER},
                "finish_reason": "stop",
            }
        ],
    }
    mock_upstream.script({"raw_body": json.dumps(answer).encode()})

    response = chat(relay_url, alice_key, max_tokens=5)

    assert response.status_code == 200, response.text
    [log] = settled_usage(1)
    assert log.output_tokens == 5
    assert log.usage_flag == UsageLog.UsageFlag.CLAMPED
    assert log.quota <= Hold.objects.get().amount
    books_balance()


def test_a_usage_check_that_fails_still_bills_no_more_than_the_hold(
    relay_url, alice, alice_key, openai_channel, mock_upstream, monkeypatch, books_balance
):
    # A bug in checking the upstream's usage bills the local counts rather than nothing; those
    # are held to the limit too, even from an upstream that ignored it.
    from relay import metering

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(metering, "billable_usage", broken)
    mock_upstream.script(
        {"raw_stream": [chunk("word ") for _ in range(400)] + [b"data: [DONE]\n\n"]}
    )
    stream_five_tokens(relay_url, alice_key)

    [log] = settled_usage(1)
    assert (log.output_tokens, log.usage_flag) == (5, UsageLog.UsageFlag.REJECTED)
    assert 0 < log.quota <= Hold.objects.get().amount
    books_balance()
