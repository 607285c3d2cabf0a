"""Tests of relay/validation.py: request bodies are parsed once and checked against the shape
of their operation, and a malformed one is a 400 naming its bad field, never a 500.

Unit tests only: the relay's admission calls these two functions (tests through HTTP belong to
the wiring).
"""

import copy
import json

import pytest

from relay.errors import RelayError
from relay.validation import MAX_JSON_DEPTH, parse_json, validate_request

USER_HELLO = [{"role": "user", "content": "Hello"}]


def refusal(operation: str, body: dict) -> RelayError:
    with pytest.raises(RelayError) as caught:
        validate_request(operation, body)
    return caught.value


def parse_refusal(raw: bytes) -> RelayError:
    with pytest.raises(RelayError) as caught:
        parse_json(raw)
    return caught.value


def assert_is_a_bad_request(error: RelayError) -> None:
    assert error.status == 400
    assert error.code == "invalid_request"
    assert error.retry is False  # the SDKs must not repeat a call that cannot succeed


def chat(**fields) -> dict:
    return {"model": "gpt-4o-mini", "messages": USER_HELLO, **fields}


def chat_saying(*messages: dict) -> dict:
    return {"model": "gpt-4o-mini", "messages": list(messages)}


def user_parts(*parts) -> dict:
    return chat_saying({"role": "user", "content": list(parts)})


def claude(**fields) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": USER_HELLO, **fields}


def claude_blocks(*blocks, role: str = "user") -> dict:
    return claude(messages=[{"role": role, "content": list(blocks)}])


def nested(levels: int) -> bytes:
    """A JSON object whose arrays bring its nesting to `levels` (the object is level 1)."""
    return b'{"a": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


# --- parse_json ---------------------------------------------------------------------------------


def test_it_parses_a_json_object():
    assert parse_json(b'{"model": "gpt-4o", "messages": [{"role": "user"}]}') == {
        "model": "gpt-4o",
        "messages": [{"role": "user"}],
    }


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"model": }', b"{'model': 'x'}", b'{"a": 1} trailing', b"\xff\xfe\xfa"],
    ids=["empty", "unfinished", "missing value", "single quotes", "trailing text", "not utf-8"],
)
def test_it_refuses_a_body_that_is_not_json(raw):
    error = parse_refusal(raw)

    assert_is_a_bad_request(error)
    assert "could not parse the JSON body" in error.message


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"5", b"null", b"true"])
def test_it_refuses_json_that_is_not_an_object(raw):
    error = parse_refusal(raw)

    assert_is_a_bad_request(error)
    assert error.message == "The request body must be a JSON object."


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"[1.5, NaN]"]
)
def test_it_refuses_numbers_that_are_not_finite(number):
    error = parse_refusal(b'{"model": "m", "temperature": ' + number + b"}")

    assert_is_a_bad_request(error)
    assert "not finite" in error.message


def test_it_keeps_finite_numbers_as_json_gives_them():
    assert parse_json(b'{"a": 0.5, "b": 2, "c": 1e3, "d": -0.0}') == {
        "a": 0.5,
        "b": 2,
        "c": 1000.0,
        "d": -0.0,
    }


def test_it_accepts_nesting_up_to_the_limit():
    body = parse_json(nested(MAX_JSON_DEPTH))

    assert isinstance(body["a"], list)


def test_it_refuses_nesting_one_level_past_the_limit():
    error = parse_refusal(nested(MAX_JSON_DEPTH + 1))

    assert_is_a_bad_request(error)
    assert f"more than {MAX_JSON_DEPTH} levels" in error.message


def test_the_depth_limit_counts_objects_and_arrays_alike():
    raw = b'{"a": ' + b'{"b": [' * 40 + b"1" + b"]}" * 40 + b"}"  # 81 levels

    assert f"more than {MAX_JSON_DEPTH} levels" in parse_refusal(raw).message


def test_a_deep_branch_is_found_beside_shallow_ones():
    raw = b'{"model": "m", "a": [1, 2, {"b": 3}], "z": ' + nested(MAX_JSON_DEPTH) + b"}"

    assert f"more than {MAX_JSON_DEPTH} levels" in parse_refusal(raw).message


def test_nesting_too_deep_for_the_json_parser_itself_is_a_400_too():
    raw = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"

    error = parse_refusal(raw)

    assert_is_a_bad_request(error)
    assert f"more than {MAX_JSON_DEPTH} levels" in error.message


def test_a_lone_surrogate_escape_parses_and_validates_without_an_error():
    body = parse_json(b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}')

    validate_request("chat", body)


# --- validate_request: what the 400 says ----------------------------------------------------------


def test_the_400_names_the_bad_field_as_a_readable_path():
    error = refusal("chat", user_parts(1))

    assert_is_a_bad_request(error)
    assert error.param == "messages[0].content[0]"
    assert error.message == "messages[0].content[0]: Input should be a valid dictionary"


def test_the_path_goes_through_nested_objects_and_arrays():
    error = refusal(
        "chat", user_parts({"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}})
    )

    assert error.param == "messages[0].content[1].image_url.url"
    assert error.message == "messages[0].content[1].image_url.url: Field required"


def test_only_the_first_bad_field_is_named():
    error = refusal("chat", chat(temperature="hot", n="3"))

    assert error.param == "temperature"
    assert error.message == "temperature: Input should be a valid number"


@pytest.mark.parametrize("body", [[chat()], "chat", None])
def test_a_body_that_is_not_an_object_is_refused_without_a_param(body):
    error = refusal("chat", body)

    assert_is_a_bad_request(error)
    assert error.param is None
    assert error.message == "The request body must be a JSON object."


def test_a_model_name_too_long_is_refused_as_too_long():
    error = refusal("chat", {"model": "m" * 257, "messages": USER_HELLO})

    assert error.param == "model"
    assert error.message == "model: too long (at most 256 characters)"


@pytest.mark.parametrize("name", ["gpt-4o\x00", "gpt\n4o", "\x7fgpt-4o"])
def test_a_model_name_with_a_control_character_is_refused(name):
    error = refusal("chat", {"model": name, "messages": USER_HELLO})

    assert_is_a_bad_request(error)
    assert error.param == "model"
    assert error.message == "model: a model name cannot contain control characters"


def test_every_operation_has_a_shape():
    for operation, body in [
        ("chat", chat()),
        ("completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}),
        ("embeddings", {"model": "text-embedding-3-small", "input": "hi"}),
        ("messages", claude()),
    ]:
        assert validate_request(operation, body) is None
        assert refusal(operation, {"model": 5}).param == "model"


# --- validate_request: OpenAI chat completions ----------------------------------------------------

CHAT_REFUSALS = {
    # the body's own fields
    "model not a string": (chat(model=5), "model", "valid string"),
    "model empty": (chat(model=""), "model", "at least 1 character"),
    "model missing": ({"messages": USER_HELLO}, "model", "Field required"),
    "messages missing": ({"model": "m"}, "messages", "Field required"),
    "messages empty": (chat(messages=[]), "messages", "at least 1 item"),
    "messages a string": (chat(messages="hi"), "messages", "valid list"),
    "a message a string": (chat(messages=["hi"]), "messages[0]", "valid dictionary"),
    "role unknown": (chat_saying({"role": "bot", "content": "x"}), "messages[0].role", "'user'"),
    "role missing": (chat_saying({"content": "x"}), "messages[0].role", "Field required"),
    "role not a string": (chat_saying({"role": 1, "content": "x"}), "messages[0].role", "'user'"),
    # content
    "user content missing": (chat_saying({"role": "user"}), "messages[0].content", "required"),
    "user content null": (
        chat_saying({"role": "user", "content": None}),
        "messages[0].content",
        "a string or an array of content parts",
    ),
    "user content a number": (
        chat_saying({"role": "user", "content": 5}),
        "messages[0].content",
        "a string or an array of content parts",
    ),
    "a part a number": (user_parts(1), "messages[0].content[0]", "valid dictionary"),
    "a part without type": (user_parts({"text": "x"}), "messages[0].content[0].type", "required"),
    "a part type not a string": (
        user_parts({"type": 3}),
        "messages[0].content[0].type",
        "valid string",
    ),
    "text part without text": (
        user_parts({"type": "text"}),
        "messages[0].content[0].text",
        "Field required",
    ),
    "text part text a number": (
        user_parts({"type": "text", "text": 5}),
        "messages[0].content[0].text",
        "valid string",
    ),
    "image part without image_url": (
        user_parts({"type": "image_url"}),
        "messages[0].content[0].image_url",
        "Field required",
    ),
    "image_url a number": (
        user_parts({"type": "image_url", "image_url": 5}),
        "messages[0].content[0].image_url",
        "an object with a url, or a string",
    ),
    "image_url without url": (
        user_parts({"type": "image_url", "image_url": {"detail": "low"}}),
        "messages[0].content[0].image_url.url",
        "Field required",
    ),
    "image url not a string": (
        user_parts({"type": "image_url", "image_url": {"url": ["x"]}}),
        "messages[0].content[0].image_url.url",
        "valid string",
    ),
    "input_audio without format": (
        user_parts({"type": "input_audio", "input_audio": {"data": "AAAA"}}),
        "messages[0].content[0].input_audio.format",
        "Field required",
    ),
    "input_audio a string": (
        user_parts({"type": "input_audio", "input_audio": "AAAA"}),
        "messages[0].content[0].input_audio",
        "valid dictionary",
    ),
    "file part file a string": (
        user_parts({"type": "file", "file": "file-abc"}),
        "messages[0].content[0].file",
        "valid dictionary",
    ),
    "an image in a system message": (
        chat_saying(
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
        ),
        "messages[0].content[0].type",
        "'text'",
    ),
    # tool calls and results
    "tool message without tool_call_id": (
        chat_saying({"role": "tool", "content": "sunny"}),
        "messages[0].tool_call_id",
        "Field required",
    ),
    "tool message content missing": (
        chat_saying({"role": "tool", "tool_call_id": "call_1"}),
        "messages[0].content",
        "Field required",
    ),
    "tool_calls not a list": (
        chat_saying({"role": "assistant", "tool_calls": {"id": "call_1"}}),
        "messages[0].tool_calls",
        "valid list",
    ),
    "tool call without function": (
        chat_saying({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function"}]}),
        "messages[0].tool_calls[0].function",
        "Field required",
    ),
    "tool call without id": (
        chat_saying(
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            }
        ),
        "messages[0].tool_calls[0].id",
        "Field required",
    ),
    "tool call arguments an object": (
        chat_saying(
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
            }
        ),
        "messages[0].tool_calls[0].function.arguments",
        "valid string",
    ),
    "tool call name missing": (
        chat_saying(
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}
        ),
        "messages[0].tool_calls[0].function.name",
        "Field required",
    ),
    "function message without name": (
        chat_saying({"role": "function", "content": "42"}),
        "messages[0].name",
        "Field required",
    ),
    # tools
    "tools not a list": (chat(tools={"type": "function"}), "tools", "valid list"),
    "a tool a string": (chat(tools=["get_weather"]), "tools[0]", "valid dictionary"),
    "a function tool without function": (
        chat(tools=[{"type": "function"}]),
        "tools[0].function",
        "Field required",
    ),
    "a function tool without a name": (
        chat(tools=[{"type": "function", "function": {"parameters": {}}}]),
        "tools[0].function.name",
        "Field required",
    ),
    "a tool without type": (
        chat(tools=[{"function": {"name": "f"}}]),
        "tools[0].type",
        "Field required",
    ),
    "function parameters a string": (
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        "tools[0].function.parameters",
        "valid dictionary",
    ),
    "tool_choice an unknown word": (chat(tool_choice="maybe"), "tool_choice", "'required'"),
    "tool_choice a number": (chat(tool_choice=1), "tool_choice", "an object naming a tool"),
    "tool_choice function without function": (
        chat(tool_choice={"type": "function"}),
        "tool_choice.function",
        "Field required",
    ),
    "parallel_tool_calls a string": (chat(parallel_tool_calls="no"), "parallel_tool_calls", "bool"),
    # sampling and limits
    "stop a number": (chat(stop=5), "stop", "a string or an array of up to 4 strings"),
    "stop five strings": (chat(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4 items"),
    "stop holding a number": (chat(stop=["a", 1]), "stop[1]", "valid string"),
    "temperature a word": (chat(temperature="hot"), "temperature", "valid number"),
    "temperature true": (chat(temperature=True), "temperature", "valid number"),
    "temperature above 2": (chat(temperature=2.5), "temperature", "less than or equal to 2"),
    "temperature below 0": (chat(temperature=-0.1), "temperature", "greater than or equal to 0"),
    "top_p above 1": (chat(top_p=1.5), "top_p", "less than or equal to 1"),
    "presence_penalty above 2": (chat(presence_penalty=3), "presence_penalty", "less than"),
    "frequency_penalty below -2": (chat(frequency_penalty=-3), "frequency_penalty", "greater"),
    "n a string": (chat(n="3"), "n", "valid integer"),
    "n true": (chat(n=True), "n", "valid integer"),
    "n a float": (chat(n=2.0), "n", "valid integer"),
    "n zero": (chat(n=0), "n", "greater than or equal to 1"),
    "n above 128": (chat(n=129), "n", "less than or equal to 128"),
    "max_tokens negative": (chat(max_tokens=-1), "max_tokens", "greater than or equal to 1"),
    "max_tokens zero": (chat(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    "max_tokens a string": (chat(max_tokens="100"), "max_tokens", "valid integer"),
    "max_tokens absurd": (chat(max_tokens=10_000_001), "max_tokens", "less than or equal"),
    "max_completion_tokens zero": (
        chat(max_completion_tokens=0),
        "max_completion_tokens",
        "greater than or equal to 1",
    ),
    "top_logprobs above 20": (chat(top_logprobs=21), "top_logprobs", "less than or equal"),
    "logprobs a number": (chat(logprobs=5), "logprobs", "valid boolean"),
    "seed a float": (chat(seed=1.5), "seed", "valid integer"),
    # options
    "stream a string": (chat(stream="true"), "stream", "valid boolean"),
    "stream 1": (chat(stream=1), "stream", "valid boolean"),
    "stream_options a string": (chat(stream_options="x"), "stream_options", "valid dictionary"),
    "include_usage a string": (
        chat(stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        "valid boolean",
    ),
    "logit_bias a list": (chat(logit_bias=[1]), "logit_bias", "valid dictionary"),
    "user a number": (chat(user=42), "user", "valid string"),
    "response_format a string": (chat(response_format="json"), "response_format", "dictionary"),
    "service_tier a number": (chat(service_tier=1), "service_tier", "valid string"),
    "reasoning_effort a number": (chat(reasoning_effort=1), "reasoning_effort", "valid string"),
    "modalities a string": (chat(modalities="text"), "modalities", "valid list"),
    "audio a string": (chat(audio="alloy"), "audio", "valid dictionary"),
    "web_search_options a list": (chat(web_search_options=[]), "web_search_options", "dict"),
    "metadata a string": (chat(metadata="x"), "metadata", "valid dictionary"),
}


@pytest.mark.parametrize(
    ("body", "param", "text"), CHAT_REFUSALS.values(), ids=CHAT_REFUSALS.keys()
)
def test_it_refuses_a_malformed_chat_body(body, param, text):
    error = refusal("chat", body)

    assert_is_a_bad_request(error)
    assert error.param == param
    assert error.message.startswith(f"{param}: ")
    assert text in error.message


def test_a_real_world_chat_body_passes_untouched():
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse.", "name": "house-rules"},
            {
                "role": "developer",
                "content": [
                    {"type": "text", "text": "Use metric units.", "cache_control": {"type": "x"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": "https://example.com/b.png"},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-abc123"}},
                    {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "x"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "3"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
            {"role": "function", "name": "legacy", "content": None},
            {"role": "assistant", "refusal": None, "audio": {"id": "audio_1"}},
            {"role": "user", "content": "Thanks", "name": "alice"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "strict": True,
                },
            },
            {"type": "custom", "custom": {"name": "sql"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "stop": ["\n\n", "END"],
        "temperature": 0,
        "top_p": 1,
        "n": 1,
        "max_completion_tokens": 2048,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 5,
        "seed": 12345678901234,
        "user": "user-1",
        "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": False},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "service_tier": "flex",
        "reasoning_effort": "low",
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "mp3"},
        "web_search_options": {"search_context_size": "low"},
        "metadata": {"team": "a"},
        "store": False,
        "prediction": {"type": "content", "content": "x"},
        "provider": {"order": ["a", "b"], "allow_fallbacks": None},  # another relay's field
        "x_anything": [1, {"nested": [None, 2.5]}],
    }
    before = copy.deepcopy(body)

    assert validate_request("chat", body) is None
    assert body == before


def test_optional_chat_fields_may_be_null_as_clients_send_them():
    body = chat(
        **{
            name: None
            for name in [
                "tools",
                "tool_choice",
                "stop",
                "temperature",
                "top_p",
                "n",
                "max_tokens",
                "max_completion_tokens",
                "presence_penalty",
                "frequency_penalty",
                "logit_bias",
                "seed",
                "user",
                "stream",
                "stream_options",
                "response_format",
                "service_tier",
            ]
        }
    )

    validate_request("chat", body)


@pytest.mark.parametrize(
    "fields",
    [
        {"stop": "END"},
        {"stop": []},
        {"tool_choice": "none"},
        {"tool_choice": "required"},
        {"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto"}}},
        {"tools": [{"type": "web_search_preview"}]},
        {"temperature": 2, "top_p": 0, "presence_penalty": -2, "frequency_penalty": 2},
        {"n": 128, "max_tokens": 10_000_000},
        {"model": "m" * 256},
    ],
    ids=str,
)
def test_chat_values_at_the_edges_of_what_is_allowed_pass(fields):
    validate_request("chat", chat(**fields))


def test_an_assistant_turn_may_hold_only_tool_calls():
    body = chat_saying(
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "sunny"},
    )

    validate_request("chat", body)


# --- validate_request: legacy completions and embeddings ------------------------------------------


def completion(**fields) -> dict:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", **fields}


def embedding(**fields) -> dict:
    return {"model": "text-embedding-3-small", "input": "hello", **fields}


COMPLETION_REFUSALS = {
    "prompt a number": (
        completion(prompt=5),
        "prompt",
        "a string, an array of strings, an array of token ids or an array of arrays of token ids",
    ),
    "prompt strings then a number": (completion(prompt=["a", 1]), "prompt[1]", "valid string"),
    "prompt token ids then a string": (completion(prompt=[1, "a"]), "prompt[1]", "valid integer"),
    "prompt a negative token id": (completion(prompt=[-1]), "prompt[0]", "greater than or equal"),
    "prompt token lists then a string": (
        completion(prompt=[[1, 2], ["a"]]),
        "prompt[1][0]",
        "valid integer",
    ),
    "prompt token ids true": (completion(prompt=[[1], [True]]), "prompt[1][0]", "valid integer"),
    "max_tokens negative": (completion(max_tokens=-1), "max_tokens", "greater than or equal to 0"),
    "n zero": (completion(n=0), "n", "greater than or equal to 1"),
    "best_of above 20": (completion(best_of=21), "best_of", "less than or equal to 20"),
    "echo a string": (completion(echo="yes"), "echo", "valid boolean"),
    "logprobs above 5": (completion(logprobs=6), "logprobs", "less than or equal to 5"),
    "logprobs true": (completion(logprobs=True), "logprobs", "valid integer"),
    "suffix a number": (completion(suffix=5), "suffix", "valid string"),
    "stop a number": (completion(stop=5), "stop", "array of up to 4 strings"),
    "temperature a string": (completion(temperature="0.5"), "temperature", "valid number"),
    "model missing": ({"prompt": "x"}, "model", "Field required"),
}


@pytest.mark.parametrize(
    ("body", "param", "text"), COMPLETION_REFUSALS.values(), ids=COMPLETION_REFUSALS.keys()
)
def test_it_refuses_a_malformed_completions_body(body, param, text):
    error = refusal("completions", body)

    assert_is_a_bad_request(error)
    assert error.param == param
    assert text in error.message


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "Say hi"},
        {"prompt": ["Say hi", "Say bye"]},
        {"prompt": [1639, 1820]},
        {"prompt": [[1639], [1820, 11]]},
        {"prompt": ""},
        {"prompt": None},
        {"max_tokens": 0, "echo": True, "logprobs": 0},
        {"best_of": 3, "n": 2, "suffix": "", "stop": "\n", "logit_bias": {"1": 5}},
        {"stream": True, "stream_options": {"include_usage": True}, "seed": 1, "user": "u"},
    ],
    ids=str,
)
def test_real_completions_bodies_pass_untouched(fields):
    body = completion(**fields)
    before = copy.deepcopy(body)

    validate_request("completions", body)

    assert body == before


EMBEDDING_REFUSALS = {
    "input missing": ({"model": "m"}, "input", "Field required"),
    "input empty string": (embedding(input=""), "input", "at least 1 character"),
    "input empty list": (embedding(input=[]), "input", "at least 1 item"),
    "input a number": (embedding(input=5), "input", "an array of token ids"),
    "input an object": (embedding(input={"text": "x"}), "input", "an array of token ids"),
    "input ids then a string": (embedding(input=[1, "a"]), "input[1]", "valid integer"),
    "input an empty string in a list": (embedding(input=["a", ""]), "input[1]", "at least 1"),
    "input an empty token list": (embedding(input=[[1], []]), "input[1]", "at least 1 item"),
    "input too many strings": (embedding(input=["a"] * 2049), "input", "at most 2048 items"),
    "dimensions zero": (embedding(dimensions=0), "dimensions", "greater than or equal to 1"),
    "dimensions a string": (embedding(dimensions="256"), "dimensions", "valid integer"),
    "encoding_format unknown": (embedding(encoding_format="hex"), "encoding_format", "'base64'"),
    "user a number": (embedding(user=1), "user", "valid string"),
}


@pytest.mark.parametrize(
    ("body", "param", "text"), EMBEDDING_REFUSALS.values(), ids=EMBEDDING_REFUSALS.keys()
)
def test_it_refuses_a_malformed_embeddings_body(body, param, text):
    error = refusal("embeddings", body)

    assert_is_a_bad_request(error)
    assert error.param == param
    assert text in error.message


@pytest.mark.parametrize(
    "fields",
    [
        {"input": "hello"},
        {"input": ["hello", "world"]},
        {"input": [15339, 1917]},
        {"input": [[15339], [1917, 0]]},
        {"input": ["a"] * 2048},
        {"dimensions": 256, "encoding_format": "base64", "user": "u"},
        {"encoding_format": None, "dimensions": None},
    ],
    ids=lambda fields: str(fields)[:60],
)
def test_real_embeddings_bodies_pass_untouched(fields):
    body = embedding(**fields)
    before = copy.deepcopy(body)

    validate_request("embeddings", body)

    assert body == before


# --- validate_request: Anthropic messages -------------------------------------------------------

MESSAGES_REFUSALS = {
    "max_tokens missing": (
        {"model": "claude-sonnet-4-5", "messages": USER_HELLO},
        "max_tokens",
        "Field required",
    ),
    "max_tokens zero": (claude(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    "max_tokens a string": (claude(max_tokens="1024"), "max_tokens", "valid integer"),
    "model a number": (claude(model=5), "model", "valid string"),
    "messages empty": (claude(messages=[]), "messages", "at least 1 item"),
    "a message a string": (claude(messages=["hi"]), "messages[0]", "valid dictionary"),
    "role system": (
        claude(messages=[{"role": "system", "content": "x"}]),
        "messages[0].role",
        "'user' or 'assistant'",
    ),
    "content missing": (claude(messages=[{"role": "user"}]), "messages[0].content", "required"),
    "content a number": (
        claude(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
        "a string or an array of content blocks",
    ),
    "a block a number": (claude_blocks(1), "messages[0].content[0]", "valid dictionary"),
    "a block without type": (
        claude_blocks({"text": "x"}),
        "messages[0].content[0].type",
        "Field required",
    ),
    "text block without text": (
        claude_blocks({"type": "text"}),
        "messages[0].content[0].text",
        "Field required",
    ),
    "image block without source": (
        claude_blocks({"type": "image"}),
        "messages[0].content[0].source",
        "Field required",
    ),
    "image source a string": (
        claude_blocks({"type": "image", "source": "https://example.com/a.png"}),
        "messages[0].content[0].source",
        "valid dictionary",
    ),
    "document without source": (
        claude_blocks({"type": "document", "title": "x"}),
        "messages[0].content[0].source",
        "Field required",
    ),
    "tool_use without input": (
        claude_blocks({"type": "tool_use", "id": "toolu_1", "name": "f"}, role="assistant"),
        "messages[0].content[0].input",
        "Field required",
    ),
    "tool_use input a string": (
        claude_blocks(
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": "{}"}, role="assistant"
        ),
        "messages[0].content[0].input",
        "valid dictionary",
    ),
    "tool_use id a number": (
        claude_blocks({"type": "tool_use", "id": 1, "name": "f", "input": {}}, role="assistant"),
        "messages[0].content[0].id",
        "valid string",
    ),
    "tool_result without tool_use_id": (
        claude_blocks({"type": "tool_result", "content": "ok"}),
        "messages[0].content[0].tool_use_id",
        "Field required",
    ),
    "tool_result content a number": (
        claude_blocks({"type": "tool_result", "tool_use_id": "toolu_1", "content": 5}),
        "messages[0].content[0].content",
        "a string or an array of content blocks",
    ),
    "tool_result text block without text": (
        claude_blocks(
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text"}]}
        ),
        "messages[0].content[0].content[0].text",
        "Field required",
    ),
    "tool_result is_error a string": (
        claude_blocks({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}),
        "messages[0].content[0].is_error",
        "valid boolean",
    ),
    "thinking block without signature": (
        claude_blocks({"type": "thinking", "thinking": "hmm"}, role="assistant"),
        "messages[0].content[0].signature",
        "Field required",
    ),
    "redacted_thinking without data": (
        claude_blocks({"type": "redacted_thinking"}, role="assistant"),
        "messages[0].content[0].data",
        "Field required",
    ),
    # system
    "system a list of strings": (claude(system=["a"]), "system", None),
    "system a number": (claude(system=5), "system", "a string or an array of text blocks"),
    "system block not text": (
        claude(system=[{"type": "image", "source": {}}]),
        "system[0].type",
        "'text'",
    ),
    # tools
    "tools an object": (claude(tools={"name": "f"}), "tools", "valid list"),
    "custom tool without input_schema": (
        claude(tools=[{"name": "f", "description": "d"}]),
        "tools[0].input_schema",
        "Field required",
    ),
    "custom tool without name": (
        claude(tools=[{"input_schema": {"type": "object"}}]),
        "tools[0].name",
        "Field required",
    ),
    "custom tool input_schema a string": (
        claude(tools=[{"type": "custom", "name": "f", "input_schema": "object"}]),
        "tools[0].input_schema",
        "valid dictionary",
    ),
    "server tool without name": (
        claude(tools=[{"type": "web_search_20250305"}]),
        "tools[0].name",
        "Field required",
    ),
    "tool_choice the string auto": (
        claude(tool_choice="auto"),
        "tool_choice",
        'an object such as {"type": "auto"}',
    ),
    "tool_choice type unknown": (
        claude(tool_choice={"type": "required"}),
        "tool_choice.type",
        "'auto', 'any', 'tool' or 'none'",
    ),
    "tool_choice tool without name": (
        claude(tool_choice={"type": "tool"}),
        "tool_choice.name",
        "Field required",
    ),
    "disable_parallel_tool_use a string": (
        claude(tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}),
        "tool_choice.disable_parallel_tool_use",
        "valid boolean",
    ),
    # sampling and options
    "stop_sequences a string": (claude(stop_sequences="END"), "stop_sequences", "valid list"),
    "stop_sequences holding a number": (
        claude(stop_sequences=["END", 1]),
        "stop_sequences[1]",
        "valid string",
    ),
    "temperature above 1": (claude(temperature=1.5), "temperature", "less than or equal to 1"),
    "temperature a string": (claude(temperature="0.5"), "temperature", "valid number"),
    "top_p above 1": (claude(top_p=2), "top_p", "less than or equal to 1"),
    "top_k negative": (claude(top_k=-1), "top_k", "greater than or equal to 0"),
    "top_k a float": (claude(top_k=1.5), "top_k", "valid integer"),
    "stream a string": (claude(stream="true"), "stream", "valid boolean"),
    "metadata a string": (claude(metadata="x"), "metadata", "valid dictionary"),
    "service_tier a number": (claude(service_tier=1), "service_tier", "valid string"),
    "thinking a string": (claude(thinking="enabled"), "thinking", "valid dictionary"),
    "thinking type unknown": (claude(thinking={"type": "on"}), "thinking.type", "'adaptive'"),
    "thinking enabled without budget": (
        claude(thinking={"type": "enabled"}),
        "thinking.budget_tokens",
        "Field required",
    ),
    "thinking budget below 1024": (
        claude(thinking={"type": "enabled", "budget_tokens": 1000}),
        "thinking.budget_tokens",
        "greater than or equal to 1024",
    ),
}


@pytest.mark.parametrize(
    ("body", "param", "text"), MESSAGES_REFUSALS.values(), ids=MESSAGES_REFUSALS.keys()
)
def test_it_refuses_a_malformed_messages_body(body, param, text):
    error = refusal("messages", body)

    assert_is_a_bad_request(error)
    assert error.param == param or error.param.startswith(f"{param}[")
    assert text is None or text in error.message


def test_a_system_of_plain_strings_is_refused_at_its_first_item():
    error = refusal("messages", claude(system=["Be brief.", "Be kind."]))

    assert error.param == "system[0]"
    assert error.message == "system[0]: Input should be a valid dictionary"


def test_a_real_world_messages_body_passes_untouched():
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16000,
        "system": [
            {"type": "text", "text": "You are terse."},
            {
                "type": "text",
                "text": "Long reference text.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image and this file?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a"}},
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                        "title": "notes",
                        "citations": {"enabled": True},
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Look it up.", "signature": "c2lnbmF0dXJl"},
                    {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "server_tool_use",
                        "id": "srvtoolu_01",
                        "name": "web_search",
                        "input": {"query": "x"},
                    },
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": []},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01",
                        "content": [
                            {"type": "text", "text": "18 C"},
                            {"type": "image", "source": {"type": "url", "url": "https://x/y"}},
                            {"type": "search_result", "source": "s", "title": "t", "content": []},
                        ],
                        "is_error": False,
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": "done"},
                    {"type": "tool_result", "tool_use_id": "toolu_03"},
                ],
            },
            {"role": "assistant", "content": "It is sunny."},
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "custom", "name": "lookup", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "bash_20250124", "name": "bash"},
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 4096},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 1,
        "top_p": 0.9,
        "top_k": 40,
        "stream": True,
        "metadata": {"user_id": "user-1"},
        "service_tier": "auto",
        "container": "container_1",
        "mcp_servers": [{"type": "url", "url": "https://example.com/mcp", "name": "m"}],
    }
    before = copy.deepcopy(body)

    assert validate_request("messages", body) is None
    assert body == before


@pytest.mark.parametrize(
    "fields",
    [
        {"system": "You are terse."},
        {"system": []},
        {"thinking": {"type": "disabled"}},
        {"thinking": {"type": "adaptive", "display": "summarized"}},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"tool_choice": {"type": "any"}},
        {"tool_choice": {"type": "none"}},
        {"tool_choice": {"type": "tool", "name": "get_weather"}},
        {"temperature": 0, "top_k": 0, "max_tokens": 1},
        {"stop_sequences": [], "tools": []},
        {"temperature": None, "system": None, "tools": None, "metadata": None},
    ],
    ids=str,
)
def test_messages_values_at_the_edges_of_what_is_allowed_pass(fields):
    validate_request("messages", claude(**fields))


# --- the shapes and the parser together -----------------------------------------------------------


def test_a_parsed_body_is_what_gets_validated():
    raw = json.dumps(chat(n=True)).encode()

    error = refusal("chat", parse_json(raw))

    assert error.param == "n"
