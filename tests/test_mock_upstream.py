"""Tests of the mock upstream itself, with plain httpx and the official SDKs pointed at it.

These are plain functions that never touch the database or Django settings, so they run with
or without pytest-django: `python -m pytest tests/test_mock_upstream.py -p no:django`.
"""

import json
import time

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.mock_upstream import DEFAULT_KEY, MockUpstream, embedding_vector

# Provides the `mock_upstream` fixture here even before a conftest imports it.

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_WEATHER_TOOL = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def openai_client(upstream: MockUpstream, key: str = DEFAULT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{upstream.url}/v1", api_key=key, max_retries=0)


def anthropic_client(upstream: MockUpstream, key: str = DEFAULT_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=upstream.url, api_key=key, max_retries=0)


def post_json(upstream: MockUpstream, path: str, body: dict, **headers: str) -> httpx.Response:
    headers.setdefault("Authorization", f"Bearer {DEFAULT_KEY}")
    return httpx.post(f"{upstream.url}{path}", json=body, headers=headers, timeout=10)


def sse_payloads(upstream: MockUpstream, path: str, body: dict) -> list:
    """POST a streaming request and return each `data:` payload (JSON-decoded, or "[DONE]")."""
    payloads = []
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    url = f"{upstream.url}{path}"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


# -- OpenAI wire format ------------------------------------------------------------------------


def test_chat_completion_non_stream(mock_upstream):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    response = post_json(mock_upstream, "/v1/chat/completions", body)

    assert response.status_code == 200
    answer = response.json()
    assert answer["id"].startswith("chatcmpl-mock")
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "gpt-4o-mini"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "hello " * 3}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    [recorded] = mock_upstream.requests
    assert recorded["method"] == "POST"
    assert recorded["path"] == "/v1/chat/completions"
    assert recorded["headers"]["authorization"] == f"Bearer {DEFAULT_KEY}"
    assert recorded["json"] == body
    assert mock_upstream.events == []  # only streams record an outcome


def test_chat_stream_with_include_usage(mock_upstream):
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    *chunks, usage_chunk, done = sse_payloads(mock_upstream, "/v1/chat/completions", body)

    assert done == "[DONE]"
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all("usage" in chunk and chunk["usage"] is None for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text == "hello hello hello "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert mock_upstream.wait_for_events() == [
        {"path": "/v1/chat/completions", "completed": True, "client_gone": False, "deltas_sent": 3}
    ]


def test_chat_stream_without_include_usage_has_no_usage(mock_upstream):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    payloads = sse_payloads(mock_upstream, "/v1/chat/completions", body)

    assert payloads[-1] == "[DONE]"
    assert not any("usage" in payload for payload in payloads[:-1])


def test_usage_override_and_custom_text(mock_upstream):
    mock_upstream.script({"chunks": 2, "text": "ab", "usage": {"prompt_tokens": 100}})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    answer = post_json(mock_upstream, "/v1/chat/completions", body).json()

    assert answer["choices"][0]["message"]["content"] == "abab"
    assert answer["usage"]["prompt_tokens"] == 100
    assert answer["usage"]["completion_tokens"] == 2
    assert answer["usage"]["total_tokens"] == 102


def test_embeddings_float_format(mock_upstream):
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float"}
    answer = post_json(mock_upstream, "/v1/embeddings", body).json()

    assert [item["index"] for item in answer["data"]] == [0, 1]
    assert answer["data"][1]["embedding"] == embedding_vector(1)
    assert answer["usage"] == {"prompt_tokens": 11, "total_tokens": 11}


def test_anthropic_x_api_key_and_max_tokens(mock_upstream):
    body = {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}

    def post(key: str) -> httpx.Response:
        return post_json(mock_upstream, "/v1/messages", body, **{"x-api-key": key})

    wrong_key = post("wrong")
    assert wrong_key.status_code == 401
    assert wrong_key.json()["error"]["type"] == "authentication_error"
    assert wrong_key.json()["request_id"] == wrong_key.headers["request-id"]

    missing_max_tokens = post(DEFAULT_KEY)
    assert missing_max_tokens.status_code == 400
    assert missing_max_tokens.json()["type"] == "error"
    assert missing_max_tokens.json()["error"]["type"] == "invalid_request_error"


# -- OpenAI SDK --------------------------------------------------------------------------------


def test_openai_sdk_non_stream_and_stream(mock_upstream):
    client = openai_client(mock_upstream)
    messages = [{"role": "user", "content": "hi"}]

    completion = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert completion.choices[0].message.content == "hello hello hello "
    assert completion.usage.total_tokens == 14

    stream = client.chat.completions.create(
        model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "hello hello hello "
    assert chunks[-1].usage.prompt_tokens == 11
    assert chunks[-1].usage.completion_tokens == 3


def test_openai_sdk_tool_call(mock_upstream):
    client = openai_client(mock_upstream)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]

    completion = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("call_mock1", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    stream = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], stream=True
    )
    pieces = [call for chunk in stream for call in chunk.choices[0].delta.tool_calls or []]
    assert pieces[0].id == "call_mock1"
    assert pieces[0].function.name == "get_weather"
    assert json.loads("".join(piece.function.arguments for piece in pieces)) == {"city": "Paris"}

    # Once the tool result comes back, the model answers with text instead of calling again.
    follow_up = messages + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": "call_mock1", "content": "sunny"},
    ]
    answer = client.chat.completions.create(
        model="gpt-4o", messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].finish_reason == "stop"


def test_openai_sdk_embeddings_default_base64(mock_upstream):
    result = openai_client(mock_upstream).embeddings.create(
        model="text-embedding-3-small", input="hello"
    )

    assert mock_upstream.requests[0]["json"]["encoding_format"] == "base64"
    assert result.data[0].embedding == embedding_vector(0)
    assert result.usage.prompt_tokens == 11


def test_openai_sdk_legacy_completions(mock_upstream):
    client = openai_client(mock_upstream)

    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "hello hello hello "

    stream = client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="hi",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == "hello " * 3
    assert chunks[-1].usage.completion_tokens == 3


def test_openai_sdk_models(mock_upstream):
    ids = [model.id for model in openai_client(mock_upstream).models.list()]

    assert "gpt-4o-mini" in ids


# -- Anthropic SDK -----------------------------------------------------------------------------


def test_anthropic_sdk_non_stream_and_stream(mock_upstream):
    client = anthropic_client(mock_upstream)
    request = {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }

    message = client.messages.create(**request)
    assert message.id.startswith("msg_mock")
    assert message.content[0].text == "hello hello hello "
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    # The anthropic SDK sends its key as a Bearer token; the mock accepts that or x-api-key.
    assert mock_upstream.requests[0]["headers"]["authorization"] == f"Bearer {DEFAULT_KEY}"

    with client.messages.stream(**request) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "hello hello hello "
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 3)


def test_anthropic_sdk_tool_use(mock_upstream):
    client = anthropic_client(mock_upstream)
    request = {
        "model": "claude-test",
        "max_tokens": 100,
        "tools": [ANTHROPIC_WEATHER_TOOL],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
    }

    message = client.messages.create(**request)
    [block] = message.content
    assert (block.type, block.id, block.name) == ("tool_use", "toolu_mock1", "get_weather")
    assert block.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"

    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


# -- scripted failures -------------------------------------------------------------------------


def test_scripted_500(mock_upstream):
    mock_upstream.script({"status": 500}, {"status": 529})
    messages = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.InternalServerError) as openai_error:
        openai_client(mock_upstream).chat.completions.create(model="m", messages=messages)
    assert openai_error.value.body["type"] == "server_error"

    with pytest.raises(anthropic.OverloadedError) as anthropic_error:
        anthropic_client(mock_upstream).messages.create(model="m", max_tokens=10, messages=messages)
    assert anthropic_error.value.body["error"]["type"] == "overloaded_error"

    # The script is used up: the next request gets the default success.
    assert openai_client(mock_upstream).chat.completions.create(model="m", messages=messages)


def test_script_is_consumed_in_order_by_sdk_retries(mock_upstream):
    mock_upstream.script({"status": 429}, {"status": 503})
    client = openai.OpenAI(base_url=f"{mock_upstream.url}/v1", api_key=DEFAULT_KEY, max_retries=2)

    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    assert len(mock_upstream.requests) == 3


def test_scripted_error_fields_override(mock_upstream):
    mock_upstream.script({"status": 429, "error": {"type": "insufficient_quota"}})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    response = post_json(mock_upstream, "/v1/chat/completions", body)

    assert response.status_code == 429
    assert response.json()["error"]["type"] == "insufficient_quota"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_cut_after_breaks_sdk_streams(mock_upstream):
    mock_upstream.script({"chunks": 5, "cut_after": 2}, {"chunks": 2, "cut_after": 2})

    received = []
    with pytest.raises(openai.APIConnectionError):
        stream = openai_client(mock_upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "hello ", "hello "]  # the role-only opening, then two deltas

    # Cutting after every delta still withholds the closing events. The anthropic SDK lets the
    # transport's error through mid-stream instead of wrapping it.
    anthropic_stream = anthropic_client(mock_upstream).messages.stream(
        model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)),
        anthropic_stream as stream,
    ):
        stream.get_final_message()

    events = mock_upstream.wait_for_events(2)
    assert [event["path"] for event in events] == ["/v1/chat/completions", "/v1/messages"]
    for event in events:
        assert (event["completed"], event["client_gone"], event["deltas_sent"]) == (False, False, 2)


def test_drop_closes_without_response(mock_upstream):
    mock_upstream.script({"drop": True})

    with pytest.raises(httpx.RemoteProtocolError):
        post_json(mock_upstream, "/v1/chat/completions", {"model": "m", "messages": []})


def test_delay_holds_the_answer(mock_upstream):
    mock_upstream.script({"delay": 0.3})
    started = time.monotonic()
    post_json(mock_upstream, "/v1/chat/completions", {"model": "m", "messages": []})

    assert time.monotonic() - started >= 0.3


def test_client_disconnect_is_recorded(mock_upstream):
    mock_upstream.script({"chunks": 20, "chunk_delay": 0.05})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    url = f"{mock_upstream.url}/v1/chat/completions"

    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
        next(response.iter_lines())  # read the start, then hang up

    [event] = mock_upstream.wait_for_events()
    assert event["client_gone"] is True
    assert event["completed"] is False
    assert event["deltas_sent"] < 20


def test_wrong_key_is_rejected_with_provider_errors(mock_upstream):
    mock_upstream.script({"status": 500})
    messages = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.AuthenticationError) as openai_error:
        openai_client(mock_upstream, key="wrong").chat.completions.create(
            model="m", messages=messages
        )
    assert openai_error.value.body["code"] == "invalid_api_key"

    with pytest.raises(anthropic.AuthenticationError) as anthropic_error:
        anthropic_client(mock_upstream, key="wrong").messages.create(
            model="m", max_tokens=10, messages=messages
        )
    assert anthropic_error.value.body["error"]["type"] == "authentication_error"

    assert mock_upstream.auth_failures == [
        {"path": "/v1/chat/completions", "key": "wrong"},
        {"path": "/v1/messages", "key": "wrong"},
    ]
    # Rejected requests do not consume the script.
    with pytest.raises(openai.InternalServerError):
        openai_client(mock_upstream).chat.completions.create(model="m", messages=messages)


def test_unknown_behaviour_key_is_refused(mock_upstream):
    with pytest.raises(ValueError, match="stauts"):
        mock_upstream.script({"stauts": 500})


def test_reset_forgets_everything(mock_upstream):
    mock_upstream.script({"status": 500})
    post_json(mock_upstream, "/v1/chat/completions", {"model": "m", "messages": []})
    mock_upstream.script({"status": 500})

    mock_upstream.reset()

    assert mock_upstream.requests == []
    response = post_json(mock_upstream, "/v1/chat/completions", {"model": "m", "messages": []})
    assert response.status_code == 200


def test_standalone_server_with_custom_keys():
    with MockUpstream(keys={"k1", "k2"}) as upstream:
        assert upstream.url.startswith("http://127.0.0.1:")
        response = openai_client(upstream, key="k2").models.list()
        assert response.data
    with pytest.raises(RuntimeError, match="not running"):
        _ = upstream.url


# -- quirky and hostile upstreams --------------------------------------------------------------


def raw_stream_bytes(upstream: MockUpstream, path: str, body: dict) -> tuple[httpx.Response, bytes]:
    """POST a streaming request; the response and its body exactly as it came off the wire."""
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    with httpx.stream(
        "POST", f"{upstream.url}{path}", json=body, headers=headers, timeout=10
    ) as response:
        return response, b"".join(response.iter_raw())


def wait_until(check, timeout: float = 5.0) -> bool:
    """Poll `check` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_n_gives_every_choice_the_whole_answer_and_multiplies_usage(mock_upstream):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 3}
    answer = post_json(mock_upstream, "/v1/chat/completions", body).json()

    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2]
    assert {choice["message"]["content"] for choice in answer["choices"]} == {"hello " * 3}
    assert (answer["usage"]["completion_tokens"], answer["usage"]["total_tokens"]) == (9, 20)

    stream = openai_client(mock_upstream).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    finishes = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert texts == {0: "hello " * 3, 1: "hello " * 3}
    assert finishes == {0: "stop", 1: "stop"}
    assert usage.completion_tokens == 6

    # Legacy completions bill every best_of candidate but return only n of them.
    body = {"model": "m", "prompt": "hi", "n": 2, "best_of": 4}
    answer = post_json(mock_upstream, "/v1/completions", body).json()
    assert [(c["index"], c["text"]) for c in answer["choices"]] == [(0, "hello " * 3)] + [
        (1, "hello " * 3)
    ]
    assert answer["usage"]["completion_tokens"] == 12


def test_an_output_limit_below_the_answer_cuts_it_with_finish_reason_length(mock_upstream):
    mock_upstream.script({"chunks": 5}, {"long": 50}, {"chunks": 5}, {"chunks": 5})
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    answer = post_json(mock_upstream, "/v1/chat/completions", chat | {"max_tokens": 2}).json()
    assert answer["choices"][0]["message"]["content"] == "hello hello "
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 2

    streamed = chat | {
        "max_completion_tokens": 4,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    *chunks, usage_chunk, _done = sse_payloads(mock_upstream, "/v1/chat/completions", streamed)
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert contents.count("hello ") == 4 * 2
    assert [c["choices"][0]["finish_reason"] for c in chunks[-2:]] == ["length", "length"]
    assert usage_chunk["usage"]["completion_tokens"] == 8

    completion = {"model": "m", "prompt": "hi", "max_tokens": 1}
    answer = post_json(mock_upstream, "/v1/completions", completion).json()
    assert (answer["choices"][0]["text"], answer["choices"][0]["finish_reason"]) == (
        "hello ",
        "length",
    )

    with anthropic_client(mock_upstream).messages.stream(
        model="m", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "hello " * 3
    assert (final.stop_reason, final.usage.output_tokens) == ("max_tokens", 3)

    # A limit at or above the answer changes nothing.
    answer = post_json(mock_upstream, "/v1/chat/completions", chat | {"max_tokens": 3}).json()
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 3


def test_raw_stream_and_raw_body_arrive_byte_exact(mock_upstream):
    pieces = [
        b'data: {"choices": [{"index": 0, "delta": "not an object"}]}\n\n',
        b"data: {this is not json\n\n",
        b'data: {"error": "boom"}\n\n',
        b'data: {"choices": [], "usage": "many"}\n\n',
        b'event: content_block_start\ndata: {"type": "content_block_start"}\n\n',
    ]
    mock_upstream.script({"raw_stream": pieces, "chunk_delay": 0.01})
    body = {"model": "m", "messages": [], "stream": True}

    response, received = raw_stream_bytes(mock_upstream, "/v1/chat/completions", body)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert received == b"".join(pieces)
    [event] = mock_upstream.wait_for_events()
    assert (event["completed"], event["deltas_sent"]) == (True, len(pieces))

    raw = b'{"id": "x", "choices": [{"message": {"content": 7}}], "usage": {"prompt_tokens": -1'
    mock_upstream.script({"raw_body": raw})
    response = post_json(mock_upstream, "/v1/messages", {"model": "m", "max_tokens": 5})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == raw


def test_usage_values_and_service_tier_pass_through_untouched(mock_upstream):
    openai_usage = {
        "prompt_tokens": -5,
        "completion_tokens": 3e9,
        "total_tokens": "lots",
        "prompt_tokens_details": {"cached_tokens": 1_000_000, "audio_tokens": 40},
    }
    mock_upstream.script(
        {"usage": openai_usage, "service_tier": "priority"},
        {"usage": openai_usage, "service_tier": "priority"},
    )
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    answer = post_json(mock_upstream, "/v1/chat/completions", chat).json()
    assert answer["usage"] == openai_usage | {"completion_tokens_details": {"reasoning_tokens": 0}}
    assert answer["service_tier"] == "priority"

    streamed = chat | {"stream": True, "stream_options": {"include_usage": True}}
    *chunks, usage_chunk, _done = sse_payloads(mock_upstream, "/v1/chat/completions", streamed)
    assert usage_chunk["usage"]["prompt_tokens_details"] == openai_usage["prompt_tokens_details"]
    assert usage_chunk["usage"]["completion_tokens"] == 3e9
    assert {chunk["service_tier"] for chunk in chunks + [usage_chunk]} == {"priority"}

    anthropic_usage = {
        "input_tokens": "many",
        "cache_creation": {"ephemeral_1h_input_tokens": 2_000, "ephemeral_5m_input_tokens": 0},
        "server_tool_use": {"web_search_requests": 3},
    }
    behaviour = {"usage": anthropic_usage, "service_tier": "priority"}
    mock_upstream.script(behaviour, behaviour)
    message = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}

    answer = post_json(mock_upstream, "/v1/messages", message).json()
    assert answer["usage"].items() >= (anthropic_usage | {"service_tier": "priority"}).items()

    events = [
        payload
        for payload in sse_payloads(mock_upstream, "/v1/messages", message | {"stream": True})
        if payload["type"] in ("message_start", "message_delta")
    ]
    start, delta = events
    assert start["message"]["usage"].items() >= anthropic_usage.items()
    assert delta["usage"] == {"output_tokens": 3, **anthropic_usage}


def test_a_request_left_unanswered_is_recorded_as_cancelled_when_its_client_leaves(
    mock_upstream,
):
    mock_upstream.script({"hang": True}, {"hang_after_headers": True})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    # Nothing comes back, so the client's read times out and it closes the connection.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{mock_upstream.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
            timeout=httpx.Timeout(10, read=0.3),
        )
    [cancelled] = mock_upstream.wait_for_cancelled()
    assert cancelled["path"] == "/v1/chat/completions"
    assert cancelled["after"] > 0

    headers = {"Authorization": f"Bearer {DEFAULT_KEY}", "anthropic-version": "2023-06-01"}
    message = {"model": "m", "max_tokens": 5, "messages": [], "stream": True}
    with httpx.stream(
        "POST", f"{mock_upstream.url}/v1/messages", json=message, headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
    assert [c["path"] for c in mock_upstream.wait_for_cancelled(2)] == [
        "/v1/chat/completions",
        "/v1/messages",
    ]


def test_a_client_leaving_a_delay_or_a_stream_is_recorded_as_cancelled(mock_upstream):
    mock_upstream.script({"delay": 30}, {"chunks": 500, "chunk_delay": 0.05})

    # The client gives up on the delayed answer, then on the stream after its first line.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{mock_upstream.url}/v1/completions",
            json={"model": "m", "prompt": "hi"},
            headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
            timeout=httpx.Timeout(10, read=0.2),
        )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    url = f"{mock_upstream.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
        next(response.iter_lines())

    cancelled = mock_upstream.wait_for_cancelled(2)
    assert [c["path"] for c in cancelled] == ["/v1/completions", "/v1/chat/completions"]
    [event] = mock_upstream.wait_for_events()
    assert event["client_gone"] and event["deltas_sent"] < 500


def test_open_requests_counts_a_request_until_its_client_leaves(mock_upstream):
    assert wait_until(lambda: mock_upstream.open_requests == 0)
    mock_upstream.script({"hang_after_headers": True})
    body = {"model": "m", "messages": [], "stream": True}
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    url = f"{mock_upstream.url}/v1/chat/completions"

    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        assert mock_upstream.open_requests == 1

    assert wait_until(lambda: mock_upstream.open_requests == 0)
    assert len(mock_upstream.cancelled) == 1


def test_reset_ends_a_request_still_hanging(mock_upstream):
    mock_upstream.script({"hang_after_headers": True})
    body = {"model": "m", "messages": [], "stream": True}
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    url = f"{mock_upstream.url}/v1/chat/completions"

    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
        mock_upstream.reset()
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()

    assert wait_until(lambda: mock_upstream.open_requests == 0)
    assert mock_upstream.cancelled == []  # the mock hung up, not the client


def test_error_body_is_sent_exactly_and_error_message_is_any_text(mock_upstream):
    mock_upstream.script(
        {"status": 502, "error_body": {"error": "boom"}},
        {"status": 400, "error_body": {"type": "error", "error": {"message": {"nested": [1]}}}},
        {"status": 500, "error_body": None},
        {"status": 401, "error_message": f"bad key upstream-test-key at {mock_upstream.url}"},
    )
    chat = {"model": "m", "messages": []}

    response = post_json(mock_upstream, "/v1/chat/completions", chat)
    assert (response.status_code, response.content) == (502, b'{"error": "boom"}')

    response = post_json(mock_upstream, "/v1/messages", {"model": "m", "max_tokens": 5})
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {"message": {"nested": [1]}}}
    assert response.headers["request-id"].startswith("req_mock")

    response = post_json(mock_upstream, "/v1/chat/completions", chat)
    assert (response.status_code, response.content) == (500, b"null")

    response = post_json(mock_upstream, "/v1/chat/completions", chat)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        f"bad key upstream-test-key at {mock_upstream.url}"
    )
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_malformed_hostile_behaviours_are_refused_when_scripted(mock_upstream):
    with pytest.raises(ValueError, match="need a status"):
        mock_upstream.script({"error_body": {"error": "boom"}})
    with pytest.raises(ValueError, match="raw_stream"):
        mock_upstream.script({"raw_stream": [b"data: ok\n\n", "text"]})
    with pytest.raises(ValueError, match="raw_body"):
        mock_upstream.script({"raw_body": "{}"})
