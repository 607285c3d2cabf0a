"""The demo channel type: built-in models answered in the relay's own process, free.

The answers are read here the way the relay reads an upstream's: through the provider's HTTP
client, from the URL and headers the provider builds, with the body the provider prepares.
"""

import asyncio
import base64
import io
import json
import math
import struct

import pytest
from django.core.management import call_command

from billing.models import ModelPrice
from relay import tokens, upstream
from relay.models import Channel
from relay.providers import channel_types_for, provider_for
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS
from relay.providers.demo import BASE_URL, LOREM

QUESTION = "Is the relay up?"
CHAT_BODY = {
    "model": "demo-echo",
    "messages": [
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": QUESTION},
    ],
}


def ask(operation: str, body: dict, *, prepare: bool = True) -> tuple[int, dict | list[dict]]:
    """Send ``body`` as the relay would, to a demo channel (``prepare``: as the provider
    prepares it, else untouched): (status, JSON answer or the data of each server-sent event,
    [DONE] included as the string)."""
    demo = provider_for("demo")
    prepared = body
    if prepare:
        prepared = demo.prepare(body, operation=operation, upstream_model=body["model"])

    async def send():
        response = await demo.client().send(
            upstream.request(
                demo.url(BASE_URL, operation),
                demo.headers("", {}),
                json.dumps(prepared).encode(),
            ),
            stream=True,
        )
        chunks = [chunk async for chunk in response.aiter_raw()]
        await response.aclose()
        return response, chunks

    response, chunks = asyncio.run(send())
    if not response.headers["content-type"].startswith("text/event-stream"):
        return response.status_code, json.loads(b"".join(chunks))
    events = b"".join(chunks).split(b"\n\n")
    assert events.pop() == b""  # the last event is complete
    data = [event.removeprefix(b"data: ").decode() for event in events]
    return response.status_code, [d if d == "[DONE]" else json.loads(d) for d in data]


def streamed_text(events: list, index: int = 0) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event["choices"]
        if choice["index"] == index
    )


def test_demo_echo_answers_the_last_user_message_with_its_usage():
    status, answer = ask(CHAT, CHAT_BODY)

    assert status == 200
    assert answer["object"] == "chat.completion" and answer["model"] == "demo-echo"
    [choice] = answer["choices"]
    assert choice["message"] == {"role": "assistant", "content": QUESTION, "refusal": None}
    assert choice["finish_reason"] == "stop"
    # Counted as the relay counts them, so the relay believes the figures.
    assert answer["usage"] == {
        "prompt_tokens": tokens.count_messages(CHAT_BODY["messages"], "demo-echo"),
        "completion_tokens": tokens.count_text(QUESTION, "demo-echo"),
        "total_tokens": answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"],
    }


def test_demo_echo_reads_the_text_parts_of_a_message():
    body = {
        "model": "demo-echo",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "first line"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "text", "text": "second line"},
                ],
            }
        ],
    }
    _, answer = ask(CHAT, body)

    assert answer["choices"][0]["message"]["content"] == "first line\nsecond line"


def test_the_output_limit_cuts_the_answer_and_says_so():
    _, answer = ask(CHAT, CHAT_BODY | {"max_tokens": 2})

    [choice] = answer["choices"]
    assert choice["finish_reason"] == "length"
    text = choice["message"]["content"]
    assert QUESTION.startswith(text) and text != QUESTION
    assert answer["usage"]["completion_tokens"] == tokens.count_text(text, "demo-echo") <= 2


def test_max_completion_tokens_is_honoured_like_max_tokens():
    _, answer = ask(CHAT, {**CHAT_BODY, "model": "demo-lorem", "max_completion_tokens": 5})

    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 5


def test_n_answers_that_many_choices_and_counts_each():
    _, answer = ask(CHAT, CHAT_BODY | {"n": 3})

    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in answer["choices"]} == {QUESTION}
    assert answer["usage"]["completion_tokens"] == 3 * tokens.count_text(QUESTION, "demo-echo")


def test_a_stop_sequence_ends_the_answer_before_it():
    _, answer = ask(CHAT, CHAT_BODY | {"stop": ["up"]})

    assert answer["choices"][0]["message"]["content"] == "Is the relay "
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_demo_lorem_answers_placeholder_text_whatever_was_asked():
    _, answer = ask(CHAT, CHAT_BODY | {"model": "demo-lorem"})

    assert answer["choices"][0]["message"]["content"] == LOREM


def test_a_stream_carries_the_answer_in_pieces_then_usage_then_done():
    status, events = ask(CHAT, CHAT_BODY | {"stream": True})

    assert status == 200
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == (
        tokens.count_text(QUESTION, "demo-echo")
    )
    assert streamed_text(events) == QUESTION
    assert len([e for e in events if isinstance(e, dict) and e["choices"]]) > 3  # in pieces
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_a_stream_holds_back_usage_unless_it_was_asked_for():
    body = CHAT_BODY | {"stream": True}
    # The relay always asks its OpenAI-format channels for usage (and withholds it from a
    # client that did not ask): the demo is asked the same way...
    prepared = provider_for("demo").prepare(body, operation=CHAT, upstream_model="demo-echo")
    assert prepared["stream_options"] == {"include_usage": True}

    # ...and, asked otherwise, answers as an upstream would.
    _, events = ask(CHAT, body, prepare=False)
    assert not any(isinstance(e, dict) and "usage" in e for e in events)
    assert streamed_text(events) == QUESTION and events[-1] == "[DONE]"


def test_a_stream_of_several_choices_keeps_them_apart():
    _, events = ask(CHAT, CHAT_BODY | {"stream": True, "n": 2, "max_tokens": 3})

    first, second = streamed_text(events, 0), streamed_text(events, 1)
    assert first == second and QUESTION.startswith(first) and first != QUESTION
    finishes = [c["finish_reason"] for e in events if isinstance(e, dict) for c in e["choices"]]
    assert [reason for reason in finishes if reason] == ["length", "length"]


def test_demo_echo_completes_a_prompt_by_repeating_it():
    _, answer = ask(COMPLETIONS, {"model": "demo-echo", "prompt": "Once upon a time"})

    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == "Once upon a time"
    assert answer["usage"]["prompt_tokens"] == tokens.count_text("Once upon a time", "demo-echo")

    _, events = ask(
        COMPLETIONS, {"model": "demo-echo", "prompt": "Once upon a time", "stream": True}
    )
    text = "".join(c["text"] for e in events if isinstance(e, dict) for c in e["choices"])
    assert text == "Once upon a time" and events[-1] == "[DONE]"


def test_embeddings_are_unit_vectors_that_depend_only_on_the_text():
    body = {"model": "demo-echo", "input": ["alpha", "beta", "alpha"], "dimensions": 6}
    _, answer = ask(EMBEDDINGS, body)

    vectors = [item["embedding"] for item in answer["data"]]
    assert [len(v) for v in vectors] == [6, 6, 6]
    assert vectors[0] == vectors[2] != vectors[1]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in vectors)

    _, encoded = ask(EMBEDDINGS, body | {"encoding_format": "base64"})
    decoded = struct.unpack("<6f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, vectors[0], strict=True))


def test_a_model_the_demo_does_not_have_is_refused_in_openais_format():
    status, answer = ask(CHAT, CHAT_BODY | {"model": "gpt-4o"})

    assert status == 404
    assert answer["error"]["code"] == "model_not_found"
    assert "demo-echo" in answer["error"]["message"]


def test_a_demo_channel_serves_whatever_openai_format_channels_serve():
    assert channel_types_for({"openai"}) == {"openai", "demo"}
    assert channel_types_for({"anthropic"}) == {"anthropic"}
    assert provider_for("demo").headers("", {"openai-beta": "x"}) == {
        "Content-Type": "application/json"
    }


# --- Setting it up -----------------------------------------------------------------------------


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_the_demo_command_adds_the_channel_and_free_prices_once():
    printed = run("demo")
    run("demo", "--groups", "vip")

    channel = Channel.objects.get()
    assert channel.is_demo and channel.status == Channel.Status.ENABLED
    assert channel.served_models == ["demo-echo", "demo-lorem"]
    assert channel.groups == ["default", "vip"]
    prices = ModelPrice.objects.filter(model__in=["demo-echo", "demo-lorem"])
    assert [(p.model, p.is_free) for p in prices.order_by("model")] == [
        ("demo-echo", True),
        ("demo-lorem", True),
    ]
    # The next steps of a first call are printed, the balance a free call needs included.
    for step in ("create_user", "grant", "create_key", "/v1", "demo-echo"):
        assert step in printed


@pytest.mark.django_db
def test_the_demo_command_enables_a_disabled_demo_channel():
    run("demo")
    Channel.objects.update(status=Channel.Status.DISABLED)

    assert "refreshed" in run("demo")
    assert Channel.objects.get().status == Channel.Status.ENABLED


@pytest.mark.django_db
def test_add_channel_takes_a_demo_channel_without_url_or_key():
    run("add_channel", "--type", "demo", "--name", "try", "--models", "demo-echo")

    channel = Channel.objects.get()
    assert (channel.type, channel.base_url, channel.api_key()) == ("demo", BASE_URL, "")


# --- Admin -------------------------------------------------------------------------------------


@pytest.fixture
def ops_client(client, ops):
    client.force_login(ops)
    return client


CHANNEL_FORM = {
    "name": "try it",
    "served_models": '["demo-echo"]',
    "model_mapping": "{}",
    "groups": '["default"]',
    "priority": "0",
    "weight": "1",
    "status": "enabled",
    "key": "",
    "base_url": "",
}


@pytest.mark.django_db
def test_a_demo_channel_is_added_in_admin_without_url_or_key(ops_client):
    response = ops_client.post("/admin/relay/channel/add/", CHANNEL_FORM | {"type": "demo"})

    assert response.status_code == 302
    channel = Channel.objects.get()
    assert channel.is_demo and channel.base_url == BASE_URL


@pytest.mark.django_db
def test_an_upstream_channel_still_needs_its_url_and_key_in_admin(ops_client):
    response = ops_client.post("/admin/relay/channel/add/", CHANNEL_FORM | {"type": "openai"})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"base_url", "key"}
    assert not Channel.objects.exists()


@pytest.mark.django_db
def test_demo_channels_are_flagged_in_the_channel_list(ops_client):
    run("demo")
    upstream_channel = Channel(type="openai", name="real", base_url="https://api.openai.com/v1")
    upstream_channel.set_key("k")
    upstream_channel.save()

    page = ops_client.get("/admin/relay/channel/")

    assert page.status_code == 200
    results = page.context["cl"].result_list
    flags = {channel.name: page.context["cl"].model_admin.demo(channel) for channel in results}
    assert flags == {"demo": True, "real": False}
    html = page.content.decode()
    assert "column-demo" in html and 'alt="True"' in html and 'alt="False"' in html
