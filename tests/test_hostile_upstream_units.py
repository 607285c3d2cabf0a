"""A hostile or broken upstream, without a server: usage normalization and malformed streams.

The relay bills from the upstream's usage and forwards (or converts) its events, so neither
may be trusted: a figure that is not a token count must never reach billing, and an event of
the wrong shape must end the client's stream through `UpstreamStreamError`, never through a
TypeError in the middle of a chunk.
"""

import copy
import json
import math

import pytest

from billing.pricing import TokenUsage
from relay.formats.anthropic_messages import (
    AnthropicPassthrough,
    AnthropicToOpenAI,
    OpenAIToAnthropic,
    anthropic_event_text,
    anthropic_response_to_openai,
    normalize_anthropic_usage,
    openai_response_to_anthropic,
)
from relay.formats.common import EventParser, MalformedUpstream, UpstreamStreamError, UsageProblem
from relay.formats.openai_chat import OpenAIPassthrough, normalize_openai_usage, openai_chunk_text
from relay.providers import provider_for

# Text an upstream might put in an error or a field, which must never be repeated.
UPSTREAM_SECRET = "upstream-secret-7f3a at 10.1.2.3"

# --- Usage normalization ----------------------------------------------------------------------

OPENAI_REALTIME_USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 50},
    "completion_tokens_details": {
        "reasoning_tokens": 192,
        "audio_tokens": 40,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

ANTHROPIC_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 12000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 400,
    "server_tool_use": {"web_search_requests": 3},
    "service_tier": "standard",
}


def test_openai_usage_takes_cached_and_audio_input_out_of_the_prompt_and_audio_out_of_output():
    assert normalize_openai_usage(OPENAI_REALTIME_USAGE) == TokenUsage(
        input_tokens=36,
        cached_input_tokens=1920,
        audio_input_tokens=50,
        output_tokens=260,
        reasoning_tokens=192,
        audio_output_tokens=40,
    )


def test_openai_responses_api_usage_is_read_with_its_own_spelling():
    usage = {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 128},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 32},
        "total_tokens": 380,
    }

    assert normalize_openai_usage(usage) == TokenUsage(
        input_tokens=200, cached_input_tokens=128, output_tokens=52, reasoning_tokens=32
    )


def test_openai_compatible_usage_with_null_details_and_integral_floats_is_accepted():
    usage = {"prompt_tokens": 12.0, "completion_tokens": 5, "prompt_tokens_details": None}

    assert normalize_openai_usage(usage) == TokenUsage(input_tokens=12, output_tokens=5)


def test_anthropic_usage_splits_cache_writes_by_lifetime_and_counts_web_searches():
    assert normalize_anthropic_usage(ANTHROPIC_USAGE) == TokenUsage(
        input_tokens=25,
        cached_input_tokens=12000,
        cache_write_tokens=1000,
        cache_write_1h_tokens=2000,
        output_tokens=400,
        web_search_calls=3,
    )


def test_anthropic_cache_writes_without_a_breakdown_are_five_minute_writes():
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 700,
        "cache_read_input_tokens": 0,
        "output_tokens": 4,
        "cache_creation": None,
        "server_tool_use": None,
    }

    assert normalize_anthropic_usage(usage) == TokenUsage(
        input_tokens=10, cache_write_tokens=700, output_tokens=4
    )


def test_absent_usage_is_none_and_each_provider_delegates_to_its_normalizer():
    assert normalize_openai_usage(None) is None
    assert normalize_anthropic_usage(None) is None
    assert provider_for("openai").normalize_usage(OPENAI_REALTIME_USAGE).audio_input_tokens == 50
    assert provider_for("anthropic").normalize_usage(ANTHROPIC_USAGE).web_search_calls == 3


def with_(base: dict, **changes) -> dict:
    usage = copy.deepcopy(base)
    for path, value in changes.items():
        target = usage
        *parents, field = path.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[field] = value
    return usage


OPENAI_PLAIN = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}

BAD_OPENAI_USAGE = {
    "negative completion": with_(OPENAI_PLAIN, completion_tokens=-100000),
    "cached above the prompt": with_(OPENAI_PLAIN, prompt_tokens_details__cached_tokens=10**6),
    "cached and audio above the prompt": with_(
        OPENAI_PLAIN, prompt_tokens_details__cached_tokens=6, prompt_tokens_details__audio_tokens=5
    ),
    "reasoning above the completion": with_(
        OPENAI_PLAIN, completion_tokens_details__reasoning_tokens=6
    ),
    "reasoning and audio above the completion": with_(
        OPENAI_PLAIN,
        completion_tokens_details__reasoning_tokens=3,
        completion_tokens_details__audio_tokens=3,
    ),
    "a string figure": with_(OPENAI_PLAIN, prompt_tokens="12"),
    "a word": with_(OPENAI_PLAIN, completion_tokens="many"),
    "a bool": with_(OPENAI_PLAIN, prompt_tokens=True),
    "a fraction": with_(OPENAI_PLAIN, completion_tokens=1.5),
    "not a number": with_(OPENAI_PLAIN, completion_tokens=math.nan),
    "infinity": with_(OPENAI_PLAIN, prompt_tokens=math.inf),
    "a trillion": with_(OPENAI_PLAIN, prompt_tokens=10**12),
    "3e12": with_(OPENAI_PLAIN, completion_tokens=3e12),
    "a list total": with_(OPENAI_PLAIN, total_tokens=[15]),
    "details a string": with_(OPENAI_PLAIN, prompt_tokens_details="cached"),
    "responses spelling negative": {"input_tokens": -5, "output_tokens": 3},
    "usage a word": "many",
    "usage a list": [1, 2],
}


@pytest.mark.parametrize("usage", BAD_OPENAI_USAGE.values(), ids=BAD_OPENAI_USAGE.keys())
def test_openai_usage_that_cannot_be_trusted_raises_with_a_copy(usage):
    with pytest.raises(UsageProblem) as raised:
        normalize_openai_usage(usage)

    raw = raised.value.raw
    assert isinstance(raw, dict) and raw
    json.dumps(raw, allow_nan=False)  # storable as it is
    if isinstance(usage, dict):
        assert raw.keys() == usage.keys()


ANTHROPIC_PLAIN = {"input_tokens": 10, "output_tokens": 5}

BAD_ANTHROPIC_USAGE = {
    "negative input": with_(ANTHROPIC_PLAIN, input_tokens=-1),
    "a word for cache reads": with_(ANTHROPIC_PLAIN, cache_read_input_tokens="many"),
    "a bool for cache writes": with_(ANTHROPIC_PLAIN, cache_creation_input_tokens=False),
    "a string 1-hour write": with_(
        ANTHROPIC_PLAIN, cache_creation__ephemeral_1h_input_tokens="2000"
    ),
    "negative web searches": with_(ANTHROPIC_PLAIN, server_tool_use__web_search_requests=-3),
    "server tools a list": with_(ANTHROPIC_PLAIN, server_tool_use=[3]),
    "breakdown a number": with_(ANTHROPIC_PLAIN, cache_creation=3000),
    "absurd output": with_(ANTHROPIC_PLAIN, output_tokens=5e15),
    "usage a word": "many",
}


@pytest.mark.parametrize("usage", BAD_ANTHROPIC_USAGE.values(), ids=BAD_ANTHROPIC_USAGE.keys())
def test_anthropic_usage_that_cannot_be_trusted_raises_with_a_copy(usage):
    with pytest.raises(UsageProblem) as raised:
        normalize_anthropic_usage(usage)

    assert raised.value.raw
    json.dumps(raised.value.raw, allow_nan=False)


def test_a_large_but_plausible_figure_is_left_to_billing_to_clamp():
    # Below the 10**12 bound a count is a count: the call's limits are billing's to apply.
    assert normalize_openai_usage(with_(OPENAI_PLAIN, completion_tokens=3e9)).output_tokens == (
        3_000_000_000
    )


def test_the_copy_of_rejected_usage_is_small_and_storable():
    usage = {
        "prompt_tokens": "x" * 5000,
        "completion_tokens": math.nan,
        "huge": 10**30,
        "deep": {"one": {"two": {"three": {"four": 1}}, "kept": 2}},
        **{f"extra_{n}": n for n in range(200)},
    }

    with pytest.raises(UsageProblem) as raised:
        normalize_openai_usage(usage)

    raw = raised.value.raw
    assert raw["prompt_tokens"] == "x" * 64
    assert raw["completion_tokens"] == "nan"
    assert isinstance(raw["huge"], str) and len(raw["huge"]) <= 64
    assert raw["deep"] == {"one": {"kept": 2}}  # the fourth level is dropped
    assert len(json.dumps(raw, allow_nan=False)) < 2000
    assert 30 <= sum(1 for key in raw if key.startswith("extra_")) < 40


def test_a_rejected_usage_that_is_not_an_object_is_kept_under_one_key():
    with pytest.raises(UsageProblem) as raised:
        normalize_anthropic_usage("many" * 100)

    assert raised.value.raw == {"usage": ("many" * 100)[:64]}


# --- Streams: helpers -------------------------------------------------------------------------


def sse(data, event=None) -> bytes:
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def run(translator, *blocks: bytes) -> tuple[bytes, str]:
    """Feed raw SSE bytes through the parser and the translator, as the relay does."""
    parser = EventParser()
    sent, texts = [], []
    for event in parser.feed(b"".join(blocks)):
        data, text = translator.feed(event)
        sent.append(data)
        texts.append(text)
    return b"".join(sent), "".join(texts)


def openai_chunk(delta=None, *, finish_reason=None, usage=None, **fields) -> dict:
    chunk = {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-x",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **fields,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


OPENAI_STREAM = [
    openai_chunk({"role": "assistant", "content": ""}),
    openai_chunk({"content": "Hello"}),
    openai_chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ]
        }
    ),
    openai_chunk({}, finish_reason="tool_calls"),
    openai_chunk(usage={**OPENAI_PLAIN, "prompt_tokens_details": {"cached_tokens": 2}}),
]


def anthropic_event(data: dict) -> bytes:
    return sse(data, event=data["type"])


def message_start(usage=None) -> dict:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_abc",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 25, "output_tokens": 1},
        },
    }


def message_delta(usage=None) -> dict:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": usage or {"output_tokens": 12},
    }


ANTHROPIC_STREAM = [
    message_start(),
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city":"Oslo"}'},
    },
    {"type": "content_block_stop", "index": 1},
    message_delta(),
    {"type": "message_stop"},
]

OPENAI_TRANSLATORS = {
    "openai passthrough": lambda: OpenAIPassthrough(client_wants_usage=True),
    "openai to anthropic": lambda: OpenAIToAnthropic(model="client-model"),
}
ANTHROPIC_TRANSLATORS = {
    "anthropic passthrough": AnthropicPassthrough,
    "anthropic to openai": lambda: AnthropicToOpenAI(model="client-model", client_wants_usage=True),
}


def test_well_formed_streams_still_pass_through_every_translator():
    for make in OPENAI_TRANSLATORS.values():
        translator = make()
        sent, text = run(translator, *map(sse, OPENAI_STREAM), b"data: [DONE]\n\n")
        translator.finish()
        assert text == 'Helloget_weather{"city":"Paris"}'
        assert translator.completed and translator.usage_problem is None
        assert translator.usage == TokenUsage(
            input_tokens=8, cached_input_tokens=2, output_tokens=5
        )
    for make in ANTHROPIC_TRANSLATORS.values():
        translator = make()
        sent, text = run(translator, *map(anthropic_event, ANTHROPIC_STREAM))
        translator.finish()
        assert text == 'Higet_weather{"city":"Oslo"}'
        assert translator.completed and translator.usage_problem is None
        assert translator.usage == TokenUsage(input_tokens=25, output_tokens=12)


# --- Streams: malformed events end the stream cleanly -----------------------------------------

HOSTILE_OPENAI_EVENTS = {
    "bad json": b"data: {not json\n\n",
    "a json list": sse(["a", "list"]),
    "a json string": sse("chunk"),
    "error a string": sse({"error": "boom"}),
    "error an object": sse({"error": {"message": UPSTREAM_SECRET, "type": "server_error"}}),
    "error null but present": sse({"error": None, **openai_chunk({"content": "x"})}),
    "an event named error": sse(openai_chunk({"content": "x"}), event="error"),
    "choices a dict": sse({**openai_chunk(), "choices": {"0": {"delta": {}}}}),
    "choices a string": sse({**openai_chunk(), "choices": "hello"}),
    "a choice a string": sse({**openai_chunk(), "choices": ["hello"]}),
    "delta a string": sse({**openai_chunk(), "choices": [{"index": 0, "delta": "hello"}]}),
    "usage a word": sse(openai_chunk(usage="many")),
    "usage a list": sse(openai_chunk(usage=[10, 5])),
    "nesting too deep to parse": b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n",
}

HOSTILE_CONVERTED_OPENAI_EVENTS = {
    "content a list": sse(openai_chunk({"content": [{"type": "text", "text": "x"}]})),
    "tool_calls a dict": sse(openai_chunk({"tool_calls": {"index": 0}})),
    "a tool call a string": sse(openai_chunk({"tool_calls": ["call"]})),
    "tool call index a string": sse(
        openai_chunk({"tool_calls": [{"index": "0", "function": {"name": "f"}}]})
    ),
    "function a string": sse(openai_chunk({"tool_calls": [{"index": 0, "function": "f"}]})),
    "arguments an object": sse(
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": {"a": 1}}}]})
    ),
    "finish_reason a number": sse(openai_chunk({}, finish_reason=5)),
}


def assert_ends_cleanly(translator, prefix: list[bytes], hostile: bytes) -> None:
    run(translator, *prefix)
    with pytest.raises(UpstreamStreamError) as raised:
        run(translator, hostile)
    assert not translator.completed
    problem = raised.value
    assert problem.message in (
        "The upstream sent a malformed event.",
        "The upstream ended the stream with an error.",
    )
    assert UPSTREAM_SECRET not in f"{problem} {problem.detail} {problem.error_type}"
    assert problem.__cause__ is None


@pytest.mark.parametrize("make", OPENAI_TRANSLATORS.values(), ids=OPENAI_TRANSLATORS.keys())
@pytest.mark.parametrize(
    "hostile", HOSTILE_OPENAI_EVENTS.values(), ids=HOSTILE_OPENAI_EVENTS.keys()
)
def test_a_malformed_openai_event_ends_the_stream_with_an_upstream_error(make, hostile):
    assert_ends_cleanly(make(), [sse(OPENAI_STREAM[0])], hostile)


@pytest.mark.parametrize(
    "hostile", HOSTILE_CONVERTED_OPENAI_EVENTS.values(), ids=HOSTILE_CONVERTED_OPENAI_EVENTS.keys()
)
def test_an_openai_event_anthropic_cannot_express_ends_the_converted_stream(hostile):
    assert_ends_cleanly(OpenAIToAnthropic(model="m"), [sse(OPENAI_STREAM[0])], hostile)


def test_an_openai_error_chunk_keeps_its_error_type_but_not_its_words():
    translator = OpenAIPassthrough(client_wants_usage=False)

    with pytest.raises(UpstreamStreamError) as raised:
        run(translator, HOSTILE_OPENAI_EVENTS["error an object"])

    assert raised.value.error_type == "server_error"


HOSTILE_ANTHROPIC_EVENTS = {
    "bad json": b'event: content_block_delta\ndata: {"type": "content_bl\n\n',
    "an error event": anthropic_event(
        {"type": "error", "error": {"type": "overloaded_error", "message": UPSTREAM_SECRET}}
    ),
    "error a string": anthropic_event({"type": "error", "error": UPSTREAM_SECRET}),
    "error event without error": sse({"type": "error"}),
    "error null but present": anthropic_event(
        {"type": "content_block_stop", "index": 0, "error": None}
    ),
    "message_start without message": anthropic_event({"type": "message_start"}),
    "message a string": anthropic_event({"type": "message_start", "message": "msg"}),
    "message usage a word": anthropic_event(
        {"type": "message_start", "message": {**message_start()["message"], "usage": "many"}}
    ),
    "block start without index": anthropic_event(
        {"type": "content_block_start", "content_block": {"type": "text", "text": ""}}
    ),
    "block index a string": anthropic_event(
        {"type": "content_block_start", "index": "0", "content_block": {"type": "text"}}
    ),
    "block index a bool": anthropic_event({"type": "content_block_stop", "index": True}),
    "block index negative": anthropic_event({"type": "content_block_stop", "index": -1}),
    "content_block a list": anthropic_event(
        {"type": "content_block_start", "index": 0, "content_block": [{"type": "text"}]}
    ),
    "tool_use without a name": anthropic_event(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}}
    ),
    "delta a string": anthropic_event(
        {"type": "content_block_delta", "index": 0, "delta": "hello"}
    ),
    "delta text a number": anthropic_event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}
    ),
    "message_delta usage a word": anthropic_event({**message_delta(), "usage": "many"}),
    "message_delta delta a string": anthropic_event({**message_delta(), "delta": "end_turn"}),
    "stop_reason a number": anthropic_event({**message_delta(), "delta": {"stop_reason": 5}}),
    "type a number": sse({"type": 5}),
}


@pytest.mark.parametrize("make", ANTHROPIC_TRANSLATORS.values(), ids=ANTHROPIC_TRANSLATORS.keys())
@pytest.mark.parametrize(
    "hostile", HOSTILE_ANTHROPIC_EVENTS.values(), ids=HOSTILE_ANTHROPIC_EVENTS.keys()
)
def test_a_malformed_anthropic_event_ends_the_stream_with_an_upstream_error(make, hostile):
    prefix = [anthropic_event(data) for data in ANTHROPIC_STREAM[:3]]
    assert_ends_cleanly(make(), prefix, hostile)


def test_an_anthropic_error_event_keeps_its_error_type():
    translator = AnthropicPassthrough()

    with pytest.raises(UpstreamStreamError) as raised:
        run(translator, HOSTILE_ANTHROPIC_EVENTS["an error event"])

    assert raised.value.error_type == "overloaded_error"


def test_an_error_type_that_is_not_a_plain_name_is_not_repeated():
    translator = AnthropicPassthrough()
    error = {"type": "error", "error": {"type": UPSTREAM_SECRET, "message": "x"}}

    with pytest.raises(UpstreamStreamError) as raised:
        run(translator, anthropic_event(error))

    assert raised.value.error_type == "api_error"


HOSTILE_VALUES = [None, True, -1, 5, "x", [], ["x"], {}, {"x": 1}]


def mutations(value, path=()):
    """Every copy of ``value`` with one field (at any depth) replaced by a hostile value."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return
    for key, item in items:
        for hostile in HOSTILE_VALUES:
            mutated = copy.deepcopy(value)
            mutated[key] = hostile
            yield path + (key,), mutated
        for inner_path, inner in mutations(item, path + (key,)):
            mutated = copy.deepcopy(value)
            mutated[key] = inner
            yield inner_path, mutated


def feed_to_the_end(translator, events: list[bytes]) -> None:
    """Feed a stream and close it: anything but UpstreamStreamError fails the test."""
    try:
        run(translator, *events)
        translator.finish()
    except UpstreamStreamError:
        assert not translator.completed


@pytest.mark.parametrize("make", OPENAI_TRANSLATORS.values(), ids=OPENAI_TRANSLATORS.keys())
def test_no_field_of_an_openai_stream_can_raise_anything_but_an_upstream_error(make):
    events = [sse(chunk) for chunk in OPENAI_STREAM]
    for position, chunk in enumerate(OPENAI_STREAM):
        for _, mutated in mutations(chunk):
            feed_to_the_end(make(), [*events[:position], sse(mutated), *events[position + 1 :]])


@pytest.mark.parametrize("make", ANTHROPIC_TRANSLATORS.values(), ids=ANTHROPIC_TRANSLATORS.keys())
def test_no_field_of_an_anthropic_stream_can_raise_anything_but_an_upstream_error(make):
    events = [anthropic_event(data) for data in ANTHROPIC_STREAM]
    for position, data in enumerate(ANTHROPIC_STREAM):
        for _, mutated in mutations(data):
            hostile = sse(mutated, event=data["type"])
            feed_to_the_end(make(), [*events[:position], hostile, *events[position + 1 :]])


def test_events_after_the_upstreams_end_are_not_relayed():
    translator = OpenAIPassthrough(client_wants_usage=True)

    sent, _ = run(translator, sse(OPENAI_STREAM[1]), b"data: [DONE]\n\n")
    after, text = run(translator, sse(OPENAI_STREAM[1]), b"data: {oops\n\n")

    assert translator.completed
    assert sent.endswith(b"data: [DONE]\n\n")
    assert (after, text) == (b"", "")


def test_an_event_without_data_is_skipped_rather_than_relayed():
    translator = AnthropicPassthrough()

    assert run(translator, b"event: ping\n\n", b"data: \n\n") == (b"", "")


# --- Streams: usage that cannot be trusted ----------------------------------------------------

BAD_STREAM_USAGE = {
    "negative": with_(OPENAI_PLAIN, completion_tokens=-100000),
    "a string figure": with_(OPENAI_PLAIN, prompt_tokens="10"),
    "3e12": with_(OPENAI_PLAIN, completion_tokens=3e12),
    "cached above the prompt": with_(OPENAI_PLAIN, prompt_tokens_details__cached_tokens=10**6),
}


@pytest.mark.parametrize("make", OPENAI_TRANSLATORS.values(), ids=OPENAI_TRANSLATORS.keys())
@pytest.mark.parametrize("usage", BAD_STREAM_USAGE.values(), ids=BAD_STREAM_USAGE.keys())
def test_untrusted_openai_usage_is_flagged_and_the_stream_goes_on(make, usage):
    translator = make()

    sent, _ = run(
        translator,
        *map(sse, OPENAI_STREAM[:-1]),
        sse(openai_chunk(usage=usage)),
        b"data: [DONE]\n\n",
    )
    sent += translator.finish()

    assert translator.completed
    assert translator.usage is None
    assert translator.usage_problem == json.loads(json.dumps(usage))
    assert b"get_weather" in sent


def test_the_client_still_gets_the_usage_chunk_of_an_untrusted_usage_it_asked_for():
    translator = OpenAIPassthrough(client_wants_usage=True)
    usage_chunk = sse(openai_chunk(usage=BAD_STREAM_USAGE["negative"]))

    sent, _ = run(translator, usage_chunk, b"data: [DONE]\n\n")

    assert sent == usage_chunk + b"data: [DONE]\n\n"


@pytest.mark.parametrize("make", ANTHROPIC_TRANSLATORS.values(), ids=ANTHROPIC_TRANSLATORS.keys())
def test_untrusted_anthropic_usage_keeps_the_last_good_report_and_the_stream_goes_on(make):
    translator = make()
    events = [*ANTHROPIC_STREAM]
    events[-2] = message_delta({"output_tokens": "many"})

    sent, text = run(translator, *map(anthropic_event, events))
    sent += translator.finish()

    assert translator.completed
    assert translator.usage == TokenUsage(input_tokens=25, output_tokens=1)  # message_start's
    assert translator.usage_problem["output_tokens"] == "many"
    assert "Hi" in text and b"Oslo" in sent


def test_the_converted_usage_chunk_shows_an_untrusted_figure_as_zero():
    translator = AnthropicToOpenAI(model="m", client_wants_usage=True)
    events = [*ANTHROPIC_STREAM]
    events[0] = message_start({"input_tokens": -100000, "output_tokens": 1})

    run(translator, *map(anthropic_event, events))
    *_, usage_chunk, done = translator.finish().split(b"\n\n")[:-1]

    assert json.loads(usage_chunk.removeprefix(b"data: "))["usage"]["prompt_tokens"] == 0
    assert translator.usage_problem["input_tokens"] == -100000


@pytest.mark.parametrize("make", ANTHROPIC_TRANSLATORS.values(), ids=ANTHROPIC_TRANSLATORS.keys())
def test_a_later_sane_cumulative_report_replaces_an_untrusted_one(make):
    translator = make()
    events = [*ANTHROPIC_STREAM]
    events[0] = message_start({"input_tokens": -5, "output_tokens": 1})
    events[-2] = message_delta({"input_tokens": 25, "output_tokens": 12})

    run(translator, *map(anthropic_event, events))

    assert translator.usage_problem is None
    assert translator.usage == TokenUsage(input_tokens=25, output_tokens=12)


# --- Text counting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": 5},
        {"choices": "abc"},
        {"choices": [{"delta": "abc"}]},
        {"choices": [{"delta": {"tool_calls": "abc"}}]},
        {"choices": [{"delta": {"tool_calls": [{"function": "f"}, "call"]}}]},
        {"choices": [{"delta": {"content": 5}}]},
        "not even a dict",
    ],
)
def test_openai_text_counting_skips_parts_of_the_wrong_type(chunk):
    assert openai_chunk_text(chunk) == ""


@pytest.mark.parametrize(
    "data",
    [
        {"type": "content_block_delta", "delta": "abc"},
        {"type": "content_block_delta", "delta": {"text": 5}},
        {"type": "content_block_start", "content_block": ["tool_use"]},
        {"type": "content_block_start", "content_block": {"name": {"x": 1}}},
        ["not", "a", "dict"],
    ],
)
def test_anthropic_text_counting_skips_parts_of_the_wrong_type(data):
    assert anthropic_event_text(data) == ""


# --- Non-stream answers -----------------------------------------------------------------------

ANTHROPIC_ANSWER = {
    "id": "msg_abc",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5},
}

OPENAI_ANSWER = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-x",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": OPENAI_PLAIN,
}


@pytest.mark.parametrize(
    "answer",
    [
        ["a", "list"],
        {**ANTHROPIC_ANSWER, "content": "Checking."},
        {**ANTHROPIC_ANSWER, "content": ["Checking."]},
        {**ANTHROPIC_ANSWER, "content": [{"type": "text", "text": None}]},
        {**ANTHROPIC_ANSWER, "content": [{"type": "tool_use", "name": "f", "input": {}}]},
        {**ANTHROPIC_ANSWER, "content": [{"type": "tool_use", "id": 5, "name": "f", "input": {}}]},
        {**ANTHROPIC_ANSWER, "stop_reason": ["end_turn"]},
    ],
)
def test_a_malformed_anthropic_answer_raises_malformed_upstream(answer):
    with pytest.raises(MalformedUpstream) as raised:
        anthropic_response_to_openai(answer, model="m")

    assert not isinstance(raised.value, UpstreamStreamError)
    assert isinstance(raised.value, ValueError)  # what the relay catches for unreadable answers
    assert raised.value.message == "The upstream sent a malformed answer."


def openai_answer_with(**message_changes) -> dict:
    answer = copy.deepcopy(OPENAI_ANSWER)
    answer["choices"][0]["message"].update(message_changes)
    return answer


@pytest.mark.parametrize(
    "answer",
    [
        "a string",
        {**OPENAI_ANSWER, "choices": {"0": {}}},
        {**OPENAI_ANSWER, "choices": ["a choice"]},
        {**OPENAI_ANSWER, "choices": [{"message": "hello"}]},
        openai_answer_with(content=[{"type": "text", "text": "x"}]),
        openai_answer_with(tool_calls={"id": "call_a"}),
        openai_answer_with(tool_calls=[{"id": "call_a", "function": "f"}]),
        openai_answer_with(tool_calls=[{"function": {"name": 5}}]),
        openai_answer_with(tool_calls=[{"function": {"name": "f", "arguments": {"a": 1}}}]),
    ],
)
def test_a_malformed_openai_answer_raises_malformed_upstream(answer):
    with pytest.raises(MalformedUpstream):
        openai_response_to_anthropic(answer, model="m")


def test_an_answer_with_untrusted_usage_is_still_converted_with_zero_figures():
    anthropic = anthropic_response_to_openai(
        {**ANTHROPIC_ANSWER, "usage": {"input_tokens": "many", "output_tokens": -3}}, model="m"
    )
    openai = openai_response_to_anthropic({**OPENAI_ANSWER, "usage": "many"}, model="m")

    assert anthropic["usage"]["prompt_tokens"] == anthropic["usage"]["completion_tokens"] == 0
    assert openai["usage"]["input_tokens"] == 0
    assert openai["content"][1]["name"] == "get_weather"


def test_no_field_of_an_answer_can_raise_anything_but_malformed_upstream():
    for convert, answer in (
        (anthropic_response_to_openai, ANTHROPIC_ANSWER),
        (openai_response_to_anthropic, OPENAI_ANSWER),
    ):
        for _, mutated in mutations(answer):
            try:
                json.dumps(convert(mutated, model="m"))
            except MalformedUpstream:
                pass
