"""Calls served by a channel of the other dialect, streams included, billed once each.

An OpenAI-format call (/v1/chat/completions, openai SDK) to an Anthropic channel, and an
Anthropic-format call (/v1/messages, anthropic SDK) to an OpenAI channel.
"""

import base64
import json
import math

import pytest

from billing.models import Hold, ModelPrice, UsageLog
from tests.conftest import UPSTREAM_KEY, settled_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

CLAUDE = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "Say hello"}]
HELLO_BLOCK = {"type": "text", "text": "Say hello"}
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}}
OPENAI_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": PARAMETERS,
    },
}
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": PARAMETERS,
}


def cost(model: str, *, input: int, output: int, cache_read: int = 0, cache_write: int = 0):
    """The model's charge at the shipped list price, input meaning uncached input."""
    price = ModelPrice.objects.get(model=model)
    weighted = (
        input
        + cache_read * price.cache_read_ratio
        + cache_write * price.cache_write_ratio
        + output * price.completion_ratio
    )
    return math.ceil(weighted * price.model_ratio)


def assert_billed_once_each(calls: int) -> None:
    assert UsageLog.objects.count() == calls
    assert list(Hold.objects.values_list("status", flat=True)) == [Hold.Status.SETTLED] * calls


# --- OpenAI client, Anthropic channel -------------------------------------------------------


def test_a_chat_completion_is_answered_by_an_anthropic_channel(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    answer = make_openai(alice_key).chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "system", "content": "You are terse."}, *HELLO],
    )

    assert answer.object == "chat.completion" and answer.model == CLAUDE
    assert answer.choices[0].message.content == "hello hello hello "
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 3)
    assert answer.usage.total_tokens == 14
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == UPSTREAM_KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    # The system message became Anthropic's top-level system; max_tokens, required there,
    # is the model's largest output (what the hold covered) because the client sent none.
    assert sent["json"]["system"] == "You are terse."
    assert sent["json"]["messages"] == [{"role": "user", "content": [HELLO_BLOCK]}]
    assert sent["json"]["max_tokens"] == ModelPrice.objects.get(model=CLAUDE).max_output_tokens
    log = UsageLog.objects.get()
    assert (log.endpoint, log.model, log.input_tokens, log.output_tokens) == ("chat", CLAUDE, 11, 3)
    assert log.quota == cost(CLAUDE, input=11, output=3)
    assert_billed_once_each(1)
    books_balance()


def test_the_clients_max_tokens_is_kept(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream
):
    client = make_openai(alice_key)
    client.chat.completions.create(model=CLAUDE, messages=HELLO, max_tokens=77)
    client.chat.completions.create(model=CLAUDE, messages=HELLO, max_completion_tokens=55)

    assert [r["json"]["max_tokens"] for r in mock_upstream.requests] == [77, 55]


def test_anthropic_cache_counts_map_onto_openai_usage_and_are_billed_apart(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script(
        {
            "usage": {
                "input_tokens": 20,
                "cache_read_input_tokens": 300,
                "cache_creation_input_tokens": 100,
                "output_tokens": 6,
            }
        }
    )
    answer = make_openai(alice_key).chat.completions.create(model=CLAUDE, messages=HELLO)

    # OpenAI's prompt_tokens include cached input: all three Anthropic counts, added up.
    assert answer.usage.prompt_tokens == 420
    assert answer.usage.prompt_tokens_details.cached_tokens == 300
    assert (answer.usage.completion_tokens, answer.usage.total_tokens) == (6, 426)
    log = UsageLog.objects.get()
    assert (log.input_tokens, log.cached_input_tokens, log.cache_write_tokens) == (20, 300, 100)
    assert log.quota == cost(CLAUDE, input=20, output=6, cache_read=300, cache_write=100)
    books_balance()


def test_a_tool_call_from_an_anthropic_channel_and_its_result_going_back(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    client = make_openai(alice_key)
    answer = client.chat.completions.create(model=CLAUDE, messages=WEATHER, tools=[OPENAI_TOOL])

    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("toolu_mock1", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert mock_upstream.requests[-1]["json"]["tools"] == [ANTHROPIC_TOOL]

    history = [
        *WEATHER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"},
    ]
    follow_up = client.chat.completions.create(model=CLAUDE, messages=history, tools=[OPENAI_TOOL])
    assert follow_up.choices[0].message.content == "hello hello hello "
    assert follow_up.choices[0].finish_reason == "stop"
    sent = mock_upstream.requests[-1]["json"]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21C"}],
    }
    assert_billed_once_each(2)
    books_balance()


def test_a_streamed_tool_call_from_an_anthropic_channel(
    alice, alice_key, anthropic_channel, make_openai, books_balance
):
    stream = make_openai(alice_key).chat.completions.create(
        model=CLAUDE, messages=WEATHER, tools=[OPENAI_TOOL], stream=True
    )
    chunks = list(stream)

    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    assert (calls[0].index, calls[0].id, calls[0].function.name) == (
        0,
        "toolu_mock1",
        "get_weather",
    )
    arguments = "".join(call.function.arguments or "" for call in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens) == (11, 3)
    assert log.quota == cost(CLAUDE, input=11, output=3)
    books_balance()


def test_an_image_data_url_becomes_a_base64_image_source(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream
):
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
            ],
        }
    ]
    answer = make_openai(alice_key).chat.completions.create(model=CLAUDE, messages=messages)

    assert answer.choices[0].message.content == "hello hello hello "
    assert mock_upstream.requests[-1]["json"]["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
    ]


def test_a_stream_from_an_anthropic_channel_without_include_usage(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 4, "usage": {"output_tokens": 8}})
    stream = make_openai(alice_key).chat.completions.create(
        model=CLAUDE, messages=HELLO, stream=True
    )
    chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" and c.model == CLAUDE for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hello " * 4
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices and c.usage is None for c in chunks)
    assert mock_upstream.requests[-1]["json"]["stream"] is True
    [log] = settled_usage()
    assert log.is_stream and log.status == "success"
    # Billed from Anthropic's message_start and message_delta counts, not from the deltas seen.
    assert (log.input_tokens, log.output_tokens) == (11, 8)
    assert log.quota == cost(CLAUDE, input=11, output=8)
    books_balance()


def test_a_stream_from_an_anthropic_channel_with_include_usage_ends_with_usage(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"usage": {"cache_read_input_tokens": 40}})
    stream = make_openai(alice_key).chat.completions.create(
        model=CLAUDE, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (51, 3, 54)
    assert usage.prompt_tokens_details.cached_tokens == 40
    assert all(c.usage is None for c in chunks[:-1])
    [log] = settled_usage()
    assert (log.input_tokens, log.cached_input_tokens, log.output_tokens) == (11, 40, 3)
    assert log.quota == cost(CLAUDE, input=11, output=3, cache_read=40)
    books_balance()


# --- Anthropic client, OpenAI channel -------------------------------------------------------


def test_a_message_is_answered_by_an_openai_channel(
    alice, alice_key, openai_channel, make_anthropic, mock_upstream, books_balance
):
    message = make_anthropic(alice_key).messages.create(
        model="gpt-4o", max_tokens=128, system="You are terse.", messages=HELLO
    )

    assert message.type == "message" and message.role == "assistant"
    assert message.model == "gpt-4o"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "hello hello hello "
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-api-key" not in sent["headers"]
    assert sent["json"] == {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "You are terse."}, *HELLO],
        "max_tokens": 128,
    }
    log = UsageLog.objects.get()
    assert (log.endpoint, log.model, log.input_tokens, log.output_tokens) == (
        "messages",
        "gpt-4o",
        11,
        3,
    )
    assert log.quota == cost("gpt-4o", input=11, output=3)
    assert_billed_once_each(1)
    books_balance()


def test_openai_cached_tokens_become_anthropic_cache_reads(
    alice, alice_key, openai_channel, make_anthropic, mock_upstream
):
    mock_upstream.script(
        {"usage": {"prompt_tokens": 1000, "prompt_tokens_details": {"cached_tokens": 800}}}
    )
    message = make_anthropic(alice_key).messages.create(
        model="gpt-4o", max_tokens=128, messages=HELLO
    )

    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (200, 800)
    log = UsageLog.objects.get()
    assert (log.input_tokens, log.cached_input_tokens, log.cache_write_tokens) == (200, 800, 0)
    assert log.quota == cost("gpt-4o", input=200, output=3, cache_read=800)


def test_a_tool_use_from_an_openai_channel_and_its_result_going_back(
    alice, alice_key, openai_channel, make_anthropic, mock_upstream, books_balance
):
    client = make_anthropic(alice_key)
    message = client.messages.create(
        model="gpt-4o", max_tokens=128, tools=[ANTHROPIC_TOOL], messages=WEATHER
    )

    [call] = message.content
    assert (call.type, call.id, call.name, call.input) == (
        "tool_use",
        "call_mock1",
        "get_weather",
        {"city": "Paris"},
    )
    assert message.stop_reason == "tool_use"
    assert mock_upstream.requests[-1]["json"]["tools"] == [OPENAI_TOOL]

    history = [
        *WEATHER,
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21C"}],
        },
    ]
    answer = client.messages.create(
        model="gpt-4o", max_tokens=128, tools=[ANTHROPIC_TOOL], messages=history
    )
    assert answer.content[0].text == "hello hello hello " and answer.stop_reason == "end_turn"
    sent = mock_upstream.requests[-1]["json"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"}
    assert_billed_once_each(2)
    books_balance()


def test_a_message_stream_from_an_openai_channel(
    alice, alice_key, openai_channel, make_anthropic, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 5})
    with make_anthropic(alice_key).messages.stream(
        model="gpt-4o", max_tokens=128, messages=HELLO
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert pieces == ["hello "] * 5
    assert final.content[0].text == "hello " * 5 and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 5)
    # OpenAI streams carry usage only when asked, and the bill depends on it.
    sent = mock_upstream.requests[-1]["json"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    [log] = settled_usage()
    assert log.is_stream and log.status == "success" and log.endpoint == "messages"
    assert (log.input_tokens, log.output_tokens) == (11, 5)
    assert log.quota == cost("gpt-4o", input=11, output=5)
    assert_billed_once_each(1)
    books_balance()


def test_a_streamed_tool_use_from_an_openai_channel(
    alice, alice_key, openai_channel, make_anthropic, books_balance
):
    with make_anthropic(alice_key).messages.stream(
        model="gpt-4o", max_tokens=128, tools=[ANTHROPIC_TOOL], messages=WEATHER
    ) as stream:
        final = stream.get_final_message()

    [call] = final.content
    assert (call.type, call.id, call.name, call.input) == (
        "tool_use",
        "call_mock1",
        "get_weather",
        {"city": "Paris"},
    )
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 3)
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens) == (11, 3)
    books_balance()
