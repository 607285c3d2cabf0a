"""POST /v1/messages served natively by an Anthropic channel, through the official anthropic SDK."""

import asyncio
import contextlib
from types import SimpleNamespace

import anthropic
import httpx
import pytest

from billing.models import Hold, ModelPrice, UsageLog
from billing.pricing import TokenUsage
from relay import proxy, tokens
from relay.formats.anthropic_messages import AnthropicPassthrough
from relay.formats.anthropic_messages import sse as anthropic_sse
from relay.formats.common import EventParser
from tests.charges import expected_charge
from tests.conftest import (
    ALICE_CREDIT,
    UPSTREAM_KEY,
    settled_after_whole_answers,
    settled_usage,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

MODEL = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "Say hello"}]


def recording_client(sent: list) -> anthropic.DefaultHttpxClient:
    """An HTTP client for the SDK that keeps the headers of every request it sends."""
    return anthropic.DefaultHttpxClient(
        event_hooks={
            "request": [lambda request: sent.append(request.headers)],
            "response": [settled_after_whole_answers],
        }
    )


def test_a_message_is_answered_and_charged_from_anthropics_usage(
    alice, alice_key, anthropic_channel, make_anthropic, mock_upstream, books_balance
):
    message = make_anthropic(alice_key).messages.create(model=MODEL, max_tokens=256, messages=HELLO)

    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "hello hello hello "
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    log = UsageLog.objects.get()
    assert (log.endpoint, log.model, log.upstream_model, log.is_stream, log.status) == (
        "messages",
        MODEL,
        MODEL,
        False,
        "success",
    )
    assert (log.input_tokens, log.cached_input_tokens, log.cache_write_tokens) == (11, 0, 0)
    assert log.output_tokens == 3
    expected = expected_charge(MODEL, input=11, output=3)
    assert log.quota == expected and log.channel_id == anthropic_channel.id
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - expected and alice.request_count == 1
    assert Hold.objects.get().status == Hold.Status.SETTLED
    # The body went up as the client wrote it: Anthropic's own format, nothing converted.
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/messages"
    assert sent["json"] == {"model": MODEL, "max_tokens": 256, "messages": HELLO}
    books_balance()


def test_the_upstream_gets_the_channels_key_and_an_anthropic_version(
    alice, alice_key, anthropic_channel, make_anthropic, mock_upstream
):
    make_anthropic(alice_key).messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    headers = mock_upstream.requests[-1]["headers"]
    assert headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in headers
    assert all(alice_key not in value for value in headers.values())
    # The SDK's own version header is passed on.
    assert headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION


def test_a_client_without_an_anthropic_version_still_sends_one_upstream(
    alice, alice_key, anthropic_channel, relay_url, mock_upstream
):
    response = httpx.post(
        f"{relay_url}/v1/messages",
        headers={"x-api-key": alice_key},
        json={"model": MODEL, "max_tokens": 64, "messages": HELLO},
    )

    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "hello hello hello "
    assert mock_upstream.requests[-1]["headers"]["anthropic-version"] == "2023-06-01"


def test_the_key_is_accepted_as_x_api_key(
    alice, alice_key, anthropic_channel, make_anthropic, monkeypatch
):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    sent = []
    client = make_anthropic(
        None, default_headers={"x-api-key": alice_key}, http_client=recording_client(sent)
    )
    message = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert message.content[0].text == "hello hello hello "
    assert sent[0]["x-api-key"] == alice_key and "authorization" not in sent[0]
    assert UsageLog.objects.get().user_id == alice.id


def test_the_key_is_accepted_as_a_bearer_token(alice, alice_key, anthropic_channel, make_anthropic):
    sent = []
    client = make_anthropic(alice_key, http_client=recording_client(sent))
    message = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert message.content[0].text == "hello hello hello "
    assert sent[0]["authorization"] == f"Bearer {alice_key}" and "x-api-key" not in sent[0]
    assert UsageLog.objects.get().user_id == alice.id


def test_a_wrong_key_is_refused_in_anthropics_error_format(
    alice, anthropic_channel, make_anthropic, mock_upstream
):
    with pytest.raises(anthropic.AuthenticationError) as refused:
        make_anthropic("sk-not-a-real-key").messages.create(
            model=MODEL, max_tokens=64, messages=HELLO
        )

    assert refused.value.status_code == 401
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "authentication_error"
    assert mock_upstream.requests == [] and not UsageLog.objects.exists()


@pytest.mark.parametrize(
    "system",
    [
        "You are terse.",
        [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
        ],
    ],
    ids=["string", "blocks"],
)
def test_the_system_prompt_reaches_the_upstream_as_sent(
    system, alice, alice_key, anthropic_channel, make_anthropic, mock_upstream
):
    message = make_anthropic(alice_key).messages.create(
        model=MODEL, max_tokens=64, system=system, messages=HELLO
    )

    assert message.content[0].text == "hello hello hello "
    sent = mock_upstream.requests[-1]["json"]
    assert sent["system"] == system and sent["messages"] == HELLO
    assert UsageLog.objects.get().input_tokens == 11


def test_cache_reads_and_writes_are_billed_at_their_ratios(
    alice, alice_key, anthropic_channel, make_anthropic, mock_upstream, books_balance
):
    mock_upstream.script(
        {
            "usage": {
                "input_tokens": 25,
                "cache_read_input_tokens": 1200,
                "cache_creation_input_tokens": 400,
                "output_tokens": 7,
            }
        }
    )
    message = make_anthropic(alice_key).messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert message.usage.cache_read_input_tokens == 1200
    log = UsageLog.objects.get()
    # Anthropic's input_tokens excludes the cache: each count is billed once, at its own ratio.
    assert (log.input_tokens, log.cached_input_tokens, log.cache_write_tokens) == (25, 1200, 400)
    assert log.output_tokens == 7
    price = ModelPrice.objects.get(model=MODEL)
    assert (log.cache_read_ratio, log.cache_write_ratio) == (
        price.cache_read_ratio,
        price.cache_write_ratio,
    )
    assert price.cache_read_ratio < 1 < price.cache_write_ratio
    expected = expected_charge(MODEL, input=25, output=7, cached=1200, cache_write=400)
    assert log.quota == expected
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - expected
    books_balance()


def test_a_stream_arrives_in_pieces_and_is_billed_from_start_and_delta_usage(
    alice, alice_key, anthropic_channel, make_anthropic, mock_upstream, books_balance
):
    # message_start carries the input and cache counts (and output 1); message_delta the
    # final output count, which differs from the number of deltas on purpose.
    mock_upstream.script(
        {
            "chunks": 4,
            "usage": {
                "input_tokens": 30,
                "cache_read_input_tokens": 500,
                "cache_creation_input_tokens": 60,
                "output_tokens": 9,
            },
        }
    )
    with make_anthropic(alice_key).messages.stream(
        model=MODEL, max_tokens=256, messages=HELLO
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert pieces == ["hello "] * 4
    assert final.content[0].text == "hello " * 4 and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 9)
    assert final.usage.cache_read_input_tokens == 500
    assert mock_upstream.requests[-1]["json"]["stream"] is True
    [log] = settled_usage()
    assert log.is_stream and log.status == "success" and log.endpoint == "messages"
    assert (log.input_tokens, log.cached_input_tokens, log.cache_write_tokens) == (30, 500, 60)
    assert log.output_tokens == 9
    assert log.quota == expected_charge(MODEL, input=30, output=9, cached=500, cache_write=60)
    assert Hold.objects.get().status == Hold.Status.SETTLED
    books_balance()


def test_the_stream_passes_anthropics_events_through_unchanged(
    alice, alice_key, anthropic_channel, relay_url
):
    with httpx.stream(
        "POST",
        f"{relay_url}/v1/messages",
        headers={"x-api-key": alice_key},
        json={"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True},
    ) as response:
        body = response.read().decode()

    assert response.headers["content-type"].startswith("text/event-stream")
    names = [
        line.removeprefix("event: ") for line in body.splitlines() if line.startswith("event:")
    ]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    settled_usage()


# --- Settlement when the client leaves at the very end ------------------------------------
# The SDKs close the connection as soon as they read message_stop (or [DONE]), without reading
# the end of the body, so the relay's task is often cancelled just after the last event. These
# drive relay.proxy.stream_answer directly, to place that cancellation exactly.

STREAM_USAGE = TokenUsage(input_tokens=30, cached_input_tokens=500, output_tokens=9)


def anthropic_stream_bytes() -> list[bytes]:
    start_usage = {"input_tokens": 30, "cache_read_input_tokens": 500, "output_tokens": 1}
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": start_usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    return [anthropic_sse(event["type"], event) for event in events]


class RecordingCall:
    """The part of relay.calls.Call a stream uses, keeping what it was settled with."""

    model = MODEL
    channel = SimpleNamespace(id=1)

    def __init__(self):
        self.settled = []

    async def settle(self, usage, status, *, local_output=0, problem=None):
        self.settled.append((usage, status))


class Upstream:
    """An upstream response: its events, then either its end or a wait that never ends."""

    def __init__(self, *, ends: bool, closes: bool):
        self.ends, self.closes = ends, closes
        self.closing = asyncio.Event()

    async def aiter_raw(self):
        for piece in anthropic_stream_bytes():
            yield piece
        if not self.ends:
            await asyncio.Event().wait()

    async def aclose(self):
        self.closing.set()
        if not self.closes:
            await asyncio.Event().wait()


def leave_at_the_end(upstream: Upstream, *, during_close: bool = False) -> list:
    """Read the relay's stream to message_stop, then leave (its task is cancelled) while the
    stream waits on its upstream: for the end of the body, or ``during_close``, for the close.
    Returns what the call was settled with."""
    call = RecordingCall()

    async def scenario():
        got_everything = asyncio.Event()

        async def client():
            stream = proxy.stream_answer(
                call, upstream, upstream.aiter_raw(), EventParser(), [], AnthropicPassthrough()
            )
            async for data in stream:
                if b"message_stop" in data:
                    got_everything.set()

        task = asyncio.create_task(client())
        await (upstream.closing if during_close else got_everything).wait()
        await asyncio.sleep(0.01)  # the stream is now waiting on its upstream
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))
    return call.settled


def test_a_client_that_leaves_right_after_message_stop_is_billed_the_upstreams_usage():
    settled = leave_at_the_end(Upstream(ends=False, closes=True))

    assert settled == [(STREAM_USAGE, UsageLog.Status.SUCCESS)]


def test_a_stream_is_settled_even_if_the_client_leaves_while_the_upstream_closes():
    settled = leave_at_the_end(Upstream(ends=True, closes=False), during_close=True)

    assert settled == [(STREAM_USAGE, UsageLog.Status.SUCCESS)]


def test_a_client_that_leaves_before_message_stop_is_billed_for_what_it_was_sent():
    call = RecordingCall()
    upstream = Upstream(ends=False, closes=True)

    async def client():
        stream = proxy.stream_answer(
            call, upstream, upstream.aiter_raw(), EventParser(), [], AnthropicPassthrough()
        )
        async for data in stream:
            if b"content_block_stop" in data:
                break
        await stream.aclose()

    asyncio.run(asyncio.wait_for(client(), timeout=5))

    # Until message_stop the answer may go on: the output is counted from what was sent.
    [(usage, status)] = call.settled
    assert status == UsageLog.Status.CLIENT_GONE
    assert (usage.input_tokens, usage.cached_input_tokens) == (30, 500)
    assert usage.output_tokens == tokens.count_text("hi", MODEL)
