"""Stream translation between two formats besides the hub, chained through it
(relay.formats.translator -> ChainedTranslator).

Anthropic -> hub -> Anthropic is the chain that can be checked against a known answer: the
passthrough of the same stream. Same text, same usage, a whole message for the client's SDK.
"""

import json

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent

from billing.pricing import TokenUsage
from relay.formats import anthropic_messages
from relay.formats.common import ChainedTranslator, Event, EventParser, UpstreamStreamError

ANTHROPIC_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


def frame(data: dict) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def upstream_stream(*content: dict, usage: dict | None = None, output_tokens: int = 7) -> list:
    start_usage = {
        "input_tokens": 25,
        "output_tokens": 1,
        "cache_read_input_tokens": 200,
        "cache_creation_input_tokens": 30,
        **(usage or {}),
    }
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "model": "claude-upstream",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
        {"type": "ping"},
        *content,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


TEXT = [
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 0},
]
TOOL = [
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city":'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'},
    },
    {"type": "content_block_stop", "index": 1},
]


def chain() -> ChainedTranslator:
    return ChainedTranslator(
        anthropic_messages.stream_to_hub(model="claude", client_wants_usage=True),
        anthropic_messages.stream_from_hub(model="claude"),
    )


def run(translator, events: list[dict], *, pieces: int = 1) -> tuple[bytes, str]:
    """Feed the events as raw bytes (cut into ``pieces`` per event), then finish."""
    parser = EventParser()
    sent, text = [], []
    for data in events:
        raw = frame(data)
        size = -(-len(raw) // pieces)
        for start in range(0, len(raw), size):
            for event in parser.feed(raw[start : start + size]):
                out, said = translator.feed(event)
                sent.append(out)
                text.append(said)
    sent.append(translator.finish())
    return b"".join(sent), "".join(text)


def client_message(sent: bytes):
    """The message the anthropic SDK builds from the bytes, each event validated as it types
    them."""
    snapshot, buffers = None, {}
    for event in EventParser().feed(sent):
        data = json.loads(event.data)
        assert event.name == data["type"]
        typed = ANTHROPIC_EVENT.validate_python(data)
        snapshot = accumulate_event(event=typed, current_snapshot=snapshot, json_bufs=buffers)
    return snapshot


@pytest.mark.parametrize("content", [TEXT, TEXT + TOOL], ids=["text", "text and tool"])
def test_a_chain_through_the_hub_keeps_the_passthroughs_text_and_usage(content):
    events = upstream_stream(*content)
    passthrough = anthropic_messages.passthrough(model="claude", client_wants_usage=False)
    _, direct_text = run(passthrough, events)

    chained = chain()
    sent, chained_text = run(chained, events, pieces=3)

    assert chained_text == direct_text
    assert chained.usage == passthrough.usage
    assert chained.usage == TokenUsage(
        input_tokens=25, cached_input_tokens=200, cache_write_tokens=30, output_tokens=7
    )
    assert chained.completed and chained.usage_problem is None
    message = client_message(sent)
    assert message.content[0].text == "Hello"
    assert message.usage.output_tokens == 7
    if content is TEXT:
        assert message.stop_reason == "end_turn"
    else:
        assert message.content[1].input == {"city": "Oslo"}
        assert message.stop_reason == "tool_use"


def test_an_untrusted_usage_report_is_kept_as_the_upstreams():
    events = upstream_stream(*TEXT, usage={"input_tokens": -5})
    chained = chain()
    run(chained, events)
    passthrough = anthropic_messages.passthrough(model="claude", client_wants_usage=False)
    run(passthrough, events)

    # Billing flags the report and bills local counts, exactly as for the passthrough.
    assert chained.usage is None and passthrough.usage is None
    assert chained.usage_problem["input_tokens"] == -5
    assert passthrough.usage_problem["input_tokens"] == -5


def test_an_error_event_ends_the_chain_with_the_upstreams_error_type():
    events = upstream_stream(*TEXT)[:3]
    chained = chain()
    run_events = [*events, {"type": "error", "error": {"type": "overloaded_error"}}]
    with pytest.raises(UpstreamStreamError) as raised:
        run(chained, run_events)
    assert raised.value.error_type == "overloaded_error"
    assert not chained.completed


def test_a_stream_cut_before_its_end_is_not_completed_but_keeps_its_input_usage():
    chained = chain()
    parser = EventParser()
    sent = b""
    for data in upstream_stream(*TEXT)[:4]:
        for event in parser.feed(frame(data)):
            sent += chained.feed(event)[0]

    assert not chained.completed
    assert chained.usage.input_tokens == 25
    assert b"Hel" in sent


def test_events_after_the_upstreams_end_are_not_relayed():
    chained = chain()
    run(chained, upstream_stream(*TEXT))
    late = Event(name="content_block_delta", data=b"{}", raw=b"")
    assert chained.feed(late) == (b"", "")


def test_the_relay_chains_two_formats_besides_the_hub(monkeypatch):
    from relay import formats

    monkeypatch.setitem(formats.FORMATS, "chained-test", anthropic_messages)
    translator = formats.translator(
        client="chained-test", upstream="anthropic", model="claude", client_wants_usage=False
    )
    assert isinstance(translator, ChainedTranslator)
    sent, text = run(translator, upstream_stream(*TEXT))
    assert text == "Hello" and client_message(sent).content[0].text == "Hello"
