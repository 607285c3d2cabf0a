"""Streams and stored responses through the running relay: a chat stream carries ``usage``
only when the client asked for it; the relay's own error event ending a Responses stream is
numbered after the events sent; a Gemini stream without ``alt=sse`` is sent as JSON; a call
continuing a stored response (``previous_response_id``) holds and bills the earlier
conversation and goes to the channel that stored it; a stored response's query string
reaches the upstream.
"""

import json

import httpx
import pytest

from billing.models import Hold, UsageLog
from billing.operations import UsageFlag
from tests.charges import expected_charge
from tests.conftest import add_channel, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

CLAUDE = "claude-sonnet-4-5"
GEMINI = "gemini-2.5-flash"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def _chunks(answer: httpx.Response) -> list[dict]:
    datas = [
        line[len("data: ") :] for line in answer.text.splitlines() if line.startswith("data: ")
    ]
    assert datas[-1] == "[DONE]"
    return [json.loads(data) for data in datas[:-1]]


def _stream(relay_url, key, path, body, **params) -> httpx.Response:
    return httpx.post(
        f"{relay_url}{path}",
        json=body,
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


# --- usage only when asked --------------------------------------------------------------------


def test_a_stream_not_asking_for_usage_has_no_usage_field_in_any_chunk(
    alice, alice_key, openai_channel, relay_url, mock_upstream, books_balance
):
    answer = _stream(relay_url, alice_key, "/v1/chat/completions", CHAT)

    chunks = _chunks(answer)
    assert chunks and all("usage" not in chunk for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "hello " * 3
    # The relay asked the upstream for usage on the client's behalf, and billed from it.
    assert mock_upstream.requests[0]["json"]["stream_options"] == {"include_usage": True}
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens) == (11, 3)
    books_balance()


def test_a_stream_asking_for_usage_gets_null_usage_then_the_usage_chunk(
    alice, alice_key, openai_channel, relay_url, mock_upstream
):
    body = dict(CHAT, stream_options={"include_usage": True})
    chunks = _chunks(_stream(relay_url, alice_key, "/v1/chat/completions", body))

    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_the_openai_sdk_sees_usage_only_when_it_asked(
    alice, alice_key, openai_channel, make_openai, mock_upstream
):
    client = make_openai(alice_key)
    plain = list(client.chat.completions.create(**CHAT))
    asked = list(client.chat.completions.create(**CHAT, stream_options={"include_usage": True}))

    assert all(chunk.usage is None for chunk in plain)
    assert all("usage" not in (chunk.model_extra or {}) for chunk in plain)
    assert asked[-1].usage.completion_tokens == 3
    settled_usage(2)


def test_usage_is_stripped_however_the_upstream_spells_it(
    alice, alice_key, openai_channel, relay_url, mock_upstream
):
    frames = [
        b'data: {"usage":null,"id":"c1","object":"chat.completion.chunk","created":1,'
        b'"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},'
        b'"finish_reason":null}]}\n\n',
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":11,"completion_tokens":1,"total_tokens":12}}\n\n',
        b"data: [DONE]\n\n",
    ]
    mock_upstream.script({"raw_stream": frames})
    chunks = _chunks(_stream(relay_url, alice_key, "/v1/chat/completions", CHAT))

    assert [chunk["choices"][0]["delta"] for chunk in chunks] == [{"content": "hi"}, {}]
    assert all("usage" not in chunk for chunk in chunks)
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens) == (11, 1)


# --- the Responses stream's own error event ---------------------------------------------------


@pytest.mark.parametrize("channel", ["openai_channel", "anthropic_channel"])
def test_a_broken_responses_stream_ends_with_the_next_sequence_number(
    alice, alice_key, make_openai, mock_upstream, books_balance, request, channel
):
    request.getfixturevalue(channel)
    model = "gpt-4o" if channel == "openai_channel" else CLAUDE
    mock_upstream.script({"chunks": 6, "cut_after": 2})
    events = list(make_openai(alice_key).responses.create(model=model, input="Hi", stream=True))

    assert events[-1].type == "error"
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    settled_usage()
    books_balance()


# --- Gemini's JSON-array stream ---------------------------------------------------------------


@pytest.fixture
def gemini_channel(mock_upstream, db):
    return add_channel(mock_upstream.url, type="gemini", models=(GEMINI,))


def test_a_gemini_stream_without_alt_sse_is_sent_as_json(
    alice, alice_key, gemini_channel, relay_url, mock_upstream
):
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    path = f"/v1beta/models/{GEMINI}:streamGenerateContent"
    array = _stream(relay_url, alice_key, path, body)
    sse = _stream(relay_url, alice_key, path, body, alt="sse")

    assert array.headers["content-type"] == "application/json"
    assert [len(item["candidates"]) for item in json.loads(array.text)] == [1, 1, 1, 1]
    assert sse.headers["content-type"] == "text/event-stream"
    settled_usage(2)


# --- previous_response_id ---------------------------------------------------------------------


def test_a_continued_response_holds_and_bills_the_earlier_conversation_on_its_channel(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    client = make_openai(alice_key)
    mock_upstream.script(
        {"usage": {"input_tokens": 20_000, "output_tokens": 3}},
        # The upstream bills the stored conversation again, as input of the next call.
        {"usage": {"input_tokens": 20_015, "output_tokens": 3}},
    )
    first = client.responses.create(model="gpt-4o", input="Read this long document ...")
    # A channel tried before the first one now: the continued call must not go there.
    other = add_channel(mock_upstream.url, name="newer", models=("gpt-4o",), priority=10)
    second = client.responses.create(
        model="gpt-4o", input="And then?", previous_response_id=first.id, max_output_tokens=50
    )

    assert second.usage.input_tokens == 20_015
    first_log, second_log = settled_usage(2)
    assert second_log.channel_id == first_log.channel_id != other.id
    # Believed: the earlier 20,003 tokens count in the bound on the upstream's input figure.
    assert second_log.usage_flag == UsageFlag.TRUSTED
    assert second_log.input_tokens == 20_015
    assert second_log.quota == expected_charge("gpt-4o", input=20_015, output=3)
    # The hold covered it: at least the earlier conversation plus the output limit.
    second_hold = Hold.objects.order_by("id").last()
    assert second_hold.amount >= expected_charge("gpt-4o", input=20_003, output=50)
    books_balance()


def test_another_user_s_previous_response_id_gets_no_credit_nor_routing(
    alice, alice_key, bob, openai_channel, make_openai, mock_upstream
):
    from accounts.services import create_api_key

    first = make_openai(alice_key).responses.create(model="gpt-4o", input="Hi")
    _, bob_key = create_api_key(user=bob, name="bob's key")
    mock_upstream.script({"usage": {"input_tokens": 20_000}})
    make_openai(bob_key).responses.create(
        model="gpt-4o", input="And then?", previous_response_id=first.id
    )

    bobs = UsageLog.objects.filter(user=bob).get()
    # Bob's call knew nothing of alice's conversation: the upstream's large figure is not
    # believed, and bob pays his own call's counts.
    assert bobs.usage_flag == UsageFlag.REJECTED
    assert bobs.input_tokens < 100


# --- stored responses' query string -----------------------------------------------------------


def test_reading_a_stored_response_forwards_its_query_string_but_no_key(
    alice, alice_key, openai_channel, relay_url, make_openai, mock_upstream
):
    made = make_openai(alice_key).responses.create(model="gpt-4o", input="Hi")
    answer = httpx.get(
        f"{relay_url}/v1/responses/{made.id}",
        params={"include[]": "message.output_text.logprobs", "key": alice_key},
        headers={"Authorization": f"Bearer {alice_key}"},
    )

    assert answer.status_code == 200 and answer.json()["id"] == made.id
    sent = mock_upstream.requests[-1]
    assert sent["query"] == {"include[]": "message.output_text.logprobs"}
