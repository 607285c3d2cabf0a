"""Tests of the OpenAI <-> Anthropic format conversions in relay/formats/anthropic_messages.py.

Converted streams are also replayed through the official SDKs' own accumulators, so a shape
the real clients would choke on fails here too.
"""

import json

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from relay.formats.anthropic_messages import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_response_to_openai,
    anthropic_to_openai_chat,
    map_anthropic_stop_reason,
    map_openai_finish_reason,
    openai_chat_to_anthropic,
    openai_response_to_anthropic,
)
from relay.formats.common import ConversionError, UpstreamStreamError

ANTHROPIC_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def to_anthropic(messages: list[dict], **fields) -> dict:
    return openai_chat_to_anthropic(
        {"model": "claude-x", "messages": messages, **fields}, default_max_tokens=4096
    )


# --- OpenAI request -> Anthropic request ------------------------------------------------------


def test_system_and_developer_messages_become_the_joined_system_field():
    body = to_anthropic(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
        ]
    )

    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert body["model"] == "claude-x"


def test_openai_only_fields_are_dropped_and_user_becomes_metadata():
    body = to_anthropic(
        [{"role": "user", "content": "Hi"}],
        n=1,
        logprobs=True,
        response_format={"type": "text"},
        stream_options={"include_usage": True},
        user="user-42",
        stream=True,
        temperature=0.3,
        top_p=0.9,
    )

    assert body["metadata"] == {"user_id": "user-42"}
    assert body["stream"] is True
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    for dropped in ("n", "logprobs", "response_format", "stream_options", "user"):
        assert dropped not in body


def test_a_json_schema_becomes_anthropics_output_config_and_json_mode_is_refused():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = to_anthropic(
        [{"role": "user", "content": "Hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    with pytest.raises(ConversionError, match="json_object"):
        to_anthropic([{"role": "user", "content": "Hi"}], response_format={"type": "json_object"})
    with pytest.raises(ConversionError, match="json_schema"):
        to_anthropic(
            [{"role": "user", "content": "Hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x"}},
        )


@pytest.mark.parametrize("spelling", ["output_config", "output_format"])
def test_anthropics_structured_output_becomes_a_json_schema_response_format(spelling):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    output_format = {"type": "json_schema", "schema": schema}
    fields = {"output_config": {"format": output_format}, "output_format": output_format}
    body = anthropic_to_openai_chat(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hi"}],
            spelling: fields[spelling],
        }
    )
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    with pytest.raises(ConversionError, match="output_config.format"):
        anthropic_to_openai_chat(
            {"model": "m", "messages": [], "output_config": {"format": {"type": "xml"}}}
        )


def test_temperature_above_anthropics_range_is_capped():
    assert to_anthropic([{"role": "user", "content": "Hi"}], temperature=1.7)["temperature"] == 1


def test_images_become_base64_or_url_sources():
    body = to_anthropic(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ]
    )

    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png,not-base64"}},
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
def test_content_anthropic_cannot_take_is_refused(part):
    with pytest.raises(ConversionError):
        to_anthropic([{"role": "user", "content": [part]}])


def test_tools_are_converted_to_input_schemas():
    body = to_anthropic([{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL])

    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_is_mapped(tool_choice, expected):
    body = to_anthropic(
        [{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL], tool_choice=tool_choice
    )

    assert body["tool_choice"] == expected
    assert body["tools"]


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    body = to_anthropic(
        [{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL], parallel_tool_calls=False
    )

    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_tool_calls_and_merged_tool_results_keep_roles_alternating():
    body = to_anthropic(
        [
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "functions.get_weather:1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Os'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "4C"},
            {"role": "user", "content": "Thanks, which is warmer?"},
        ]
    )

    assistant, results = body["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            # Truncated arguments cannot be parsed; ids are made acceptable to Anthropic.
            {
                "type": "tool_use",
                "id": "functions_get_weather_1",
                "name": "get_weather",
                "input": {},
            },
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "functions_get_weather_1", "content": "4C"},
            {"type": "text", "text": "Thanks, which is warmer?"},
        ],
    }


def test_consecutive_same_role_messages_are_merged_and_empty_ones_skipped():
    body = to_anthropic(
        [
            {"role": "user", "content": "First"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": "Second"}]},
            {"role": "assistant", "content": "Reply"},
            {"role": "assistant", "content": "More"},
        ]
    )

    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "First"}, {"type": "text", "text": "Second"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Reply"}, {"type": "text", "text": "More"}],
        },
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_completion_tokens": 100, "max_tokens": 200}, 100),
        ({"max_tokens": 200}, 200),
        ({}, 4096),
    ],
)
def test_max_tokens_falls_back_to_the_default(fields, expected):
    assert to_anthropic([{"role": "user", "content": "Hi"}], **fields)["max_tokens"] == expected


def test_stop_becomes_stop_sequences_without_whitespace_only_ones():
    messages = [{"role": "user", "content": "Hi"}]

    assert to_anthropic(messages, stop="END")["stop_sequences"] == ["END"]
    assert to_anthropic(messages, stop=["END", "\n"])["stop_sequences"] == ["END"]


# --- Anthropic request -> OpenAI request ------------------------------------------------------


def test_anthropic_request_becomes_openai_messages():
    body = anthropic_to_openai_chat(
        {
            "model": "gpt-x",
            "max_tokens": 1024,
            "system": [
                {"type": "text", "text": "You are a helper."},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Hmm", "signature": "sig"},
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "lookup",
                            "input": {"q": "png"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A logo"},
                        {"type": "text", "text": "And now?"},
                    ],
                },
            ],
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "metadata": {"user_id": "u1"},
            "stop_sequences": ["END"],
            "temperature": 0.5,
        }
    )

    assert body["messages"] == [
        {"role": "system", "content": "You are a helper.\n\nBe brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "png"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "A logo"},
        {"role": "user", "content": "And now?"},
    ]
    assert body["max_tokens"] == 1024
    assert body["stop"] == ["END"]
    assert body["temperature"] == 0.5
    assert body["model"] == "gpt-x"
    assert "thinking" not in body
    assert "metadata" not in body
    assert "stream_options" not in body


def test_tool_result_blocks_become_tool_messages_with_text_content():
    body = anthropic_to_openai_chat(
        {
            "model": "gpt-x",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "line 1"}],
                        },
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "line 2"},
                    ],
                }
            ],
        }
    )

    assert body["messages"] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "line 1"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "line 2"},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "lookup"}, {"type": "function", "function": {"name": "lookup"}}),
    ],
)
def test_anthropic_tools_and_tool_choice_are_mapped(tool_choice, expected):
    body = anthropic_to_openai_chat(
        {
            "model": "gpt-x",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "Look it up"}],
            "tools": [
                {
                    "name": "lookup",
                    "description": "Search",
                    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                }
            ],
            "tool_choice": tool_choice,
        }
    )

    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Search",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    assert body["tool_choice"] == expected


def test_server_tools_are_refused():
    with pytest.raises(ConversionError):
        anthropic_to_openai_chat(
            {
                "model": "gpt-x",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "Search the web"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            }
        )


def test_streaming_anthropic_request_asks_openai_for_usage():
    body = anthropic_to_openai_chat(
        {
            "model": "gpt-x",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        }
    )

    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


# --- Non-stream responses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason, finish_reason):
    assert map_anthropic_stop_reason(stop_reason) == finish_reason


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish_reason, stop_reason):
    assert map_openai_finish_reason(finish_reason) == stop_reason


def test_anthropic_response_becomes_a_chat_completion_with_cached_tokens_in_prompt():
    completion = anthropic_response_to_openai(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-upstream-name",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "output_tokens": 7,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 50,
            },
        },
        model="claude-client-name",
    )

    ChatCompletion.model_validate(completion)
    assert completion["id"] == "chatcmpl-msg_01"
    assert completion["model"] == "claude-client-name"
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        }
    ]
    assert completion["usage"] == {
        "prompt_tokens": 160,
        "completion_tokens": 7,
        "total_tokens": 167,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_anthropic_response_without_text_has_null_content():
    completion = anthropic_response_to_openai(
        {
            "id": "msg_02",
            "content": [],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 3, "output_tokens": 0},
        },
        model="m",
    )

    assert completion["choices"][0]["message"]["content"] is None
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["prompt_tokens"] == 3


def test_openai_response_becomes_a_message_with_cached_tokens_out_of_input():
    message = openai_response_to_anthropic(
        {
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-upstream-name",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Looking.",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": 9,
                "total_tokens": 129,
                "prompt_tokens_details": {"cached_tokens": 100},
            },
        },
        model="gpt-client-name",
    )

    Message.model_validate(message)
    assert message["id"] == "msg_abc"
    assert message["model"] == "gpt-client-name"
    assert message["content"] == [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["stop_sequence"] is None
    assert message["usage"] == {
        "input_tokens": 20,
        "output_tokens": 9,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


def test_tool_calls_ended_with_stop_are_reported_as_tool_use():
    message = openai_response_to_anthropic(
        {
            "id": "chatcmpl-abc",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "lookup", "arguments": "{}"},
                            }
                        ],
                    },
                    "finish_reason": "stop",
                }
            ],
        },
        model="m",
    )

    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 0


# --- Anthropic stream -> OpenAI chunks --------------------------------------------------------


def anthropic_events(*content_events, stop_reason="end_turn", output_tokens=12):
    """A realistic Anthropic event sequence around the given content events."""
    return [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_stream",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-upstream-name",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 25,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 200,
                        "cache_creation_input_tokens": 30,
                    },
                },
            },
        ),
        ("ping", {"type": "ping"}),
        *content_events,
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def block_start(index, block):
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def block_delta(index, delta):
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index):
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def run_anthropic_stream(events, *, include_usage=True):
    converter = AnthropicToOpenAIStream("client-model", include_usage=include_usage)
    chunks = [chunk for event, data in events for chunk in converter.feed(event, data)]
    chunks.extend(converter.finish())
    return converter, chunks


def openai_final_message(chunks):
    """Accumulate chunks the way the openai SDK does and return the final completion."""
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def test_anthropic_text_stream_becomes_openai_chunks_with_usage():
    converter, chunks = run_anthropic_stream(
        anthropic_events(
            block_start(0, {"type": "text", "text": ""}),
            block_delta(0, {"type": "text_delta", "text": "Hello"}),
            block_delta(0, {"type": "text_delta", "text": " world"}),
            block_stop(0),
        )
    )

    assert [chunk["choices"][0]["delta"] for chunk in chunks[:-2]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " world"},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 255,
        "completion_tokens": 12,
        "total_tokens": 267,
        "prompt_tokens_details": {"cached_tokens": 200},
    }
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-msg_stream"}
    assert {chunk["model"] for chunk in chunks} == {"client-model"}
    assert len({chunk["created"] for chunk in chunks}) == 1
    assert converter.usage == {
        "input_tokens": 25,
        "output_tokens": 12,
        "cache_read_input_tokens": 200,
        "cache_creation_input_tokens": 30,
    }
    final = openai_final_message(chunks)
    assert final.choices[0].message.content == "Hello world"
    assert final.usage.prompt_tokens == 255


def test_anthropic_stream_sends_no_usage_chunk_unless_asked():
    _, chunks = run_anthropic_stream(
        anthropic_events(block_delta(0, {"type": "text_delta", "text": "Hi"})),
        include_usage=False,
    )

    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in chunk for chunk in chunks)


def test_anthropic_tool_stream_becomes_indexed_tool_call_chunks():
    _, chunks = run_anthropic_stream(
        anthropic_events(
            block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            block_delta(0, {"type": "thinking_delta", "thinking": "Two cities."}),
            block_delta(0, {"type": "signature_delta", "signature": "abc"}),
            block_stop(0),
            block_start(1, {"type": "text", "text": ""}),
            block_delta(1, {"type": "text_delta", "text": "Checking both."}),
            block_stop(1),
            block_start(
                2, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}
            ),
            block_delta(2, {"type": "input_json_delta", "partial_json": ""}),
            block_delta(2, {"type": "input_json_delta", "partial_json": '{"city": '}),
            block_delta(2, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
            block_stop(2),
            block_start(
                3, {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {}}
            ),
            block_delta(3, {"type": "input_json_delta", "partial_json": '{"city": "Oslo"}'}),
            block_stop(3),
            stop_reason="tool_use",
        )
    )

    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[:-2]]
    assert deltas[1] == {"reasoning_content": "Two cities."}
    assert deltas[3] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert deltas[4] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}
    assert deltas[6]["tool_calls"][0]["index"] == 1
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    message = openai_final_message(chunks).choices[0].message
    assert message.content == "Checking both."
    assert [json.loads(call.function.arguments) for call in message.tool_calls] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]
    assert [call.id for call in message.tool_calls] == ["toolu_a", "toolu_b"]


def test_anthropic_stream_error_event_raises_without_the_upstreams_words():
    converter = AnthropicToOpenAIStream("client-model", include_usage=True)
    converter.feed(*anthropic_events()[0])

    with pytest.raises(UpstreamStreamError) as raised:
        converter.feed(
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded at 10.0.0.5"},
            },
        )

    assert str(raised.value) == "The upstream ended the stream with an error."
    assert "10.0.0.5" not in raised.value.detail
    assert raised.value.error_type == "overloaded_error"
    assert converter.usage["input_tokens"] == 25


# --- OpenAI stream -> Anthropic events --------------------------------------------------------


def openai_chunk(delta=None, *, finish_reason=None, usage=None):
    chunk = {
        "id": "chatcmpl-xyz",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-upstream-name",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage:
        chunk["usage"] = usage
    return chunk


OPENAI_USAGE = {
    "prompt_tokens": 150,
    "completion_tokens": 8,
    "total_tokens": 158,
    "prompt_tokens_details": {"cached_tokens": 128},
}


def run_openai_stream(chunks):
    converter = OpenAIToAnthropicStream("client-model")
    events = [event for chunk in chunks for event in converter.feed(chunk)]
    events.extend(converter.finish())
    return converter, events


def anthropic_final_message(events):
    """Validate each event as the anthropic SDK types it, and accumulate them as it does."""
    snapshot = None
    json_buffers: dict = {}
    for name, data in events:
        assert data["type"] == name
        event = ANTHROPIC_EVENT.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_buffers)
    return snapshot


def test_openai_text_stream_becomes_anthropic_events_with_usage():
    converter, events = run_openai_stream(
        [
            openai_chunk({"role": "assistant", "content": ""}),
            openai_chunk({"content": "Hello"}),
            openai_chunk({"content": " world"}),
            openai_chunk({}, finish_reason="stop"),
            openai_chunk(usage=OPENAI_USAGE),
        ]
    )

    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["id"] == "msg_xyz"
    assert events[0][1]["message"]["model"] == "client-model"
    assert events[0][1]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[5][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[5][1]["usage"] == {
        "input_tokens": 22,
        "output_tokens": 8,
        "cache_read_input_tokens": 128,
        "cache_creation_input_tokens": 0,
    }
    assert converter.usage == OPENAI_USAGE
    final = anthropic_final_message(events)
    assert final.content[0].text == "Hello world"
    assert final.usage.input_tokens == 22


def test_openai_tool_stream_closes_text_and_opens_tool_use_blocks():
    _, events = run_openai_stream(
        [
            openai_chunk({"role": "assistant", "content": "Checking."}),
            openai_chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
            openai_chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ]
                }
            ),
            openai_chunk({}, finish_reason="tool_calls"),
            openai_chunk(usage=OPENAI_USAGE),
        ]
    )

    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[4][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "get_weather",
        "input": {},
    }
    assert events[5][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":'}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    final = anthropic_final_message(events)
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[1].input == {"city": "Paris"}
    assert final.content[2].input == {"city": "Oslo"}


def test_openai_stream_without_finish_reason_or_usage_ends_the_turn():
    converter, events = run_openai_stream([openai_chunk({"content": "Partial"})])

    assert events[-2] == (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        },
    )
    assert converter.usage is None
    assert anthropic_final_message(events).content[0].text == "Partial"


def test_empty_openai_stream_still_produces_a_whole_message():
    _, events = run_openai_stream([])

    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert anthropic_final_message(events).content == []
