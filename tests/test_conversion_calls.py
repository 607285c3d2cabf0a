"""Calls served by a channel of the other format, streams included, billed once each.

An OpenAI-format call (/v1/chat/completions, openai SDK) to an Anthropic channel, and an
Anthropic-format call (/v1/messages, anthropic SDK) to an OpenAI channel.
"""

import base64

import pytest

from billing.models import ModelPrice, UsageLog
from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import UPSTREAM_KEY, settled_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

CLAUDE = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "Say hello"}]
HELLO_BLOCK = {"type": "text", "text": "Say hello"}


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
    assert log.quota == expected_charge(CLAUDE, input=11, output=3)
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
    assert log.quota == expected_charge(CLAUDE, input=20, output=6, cached=300, cache_write=100)
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
    assert log.quota == expected_charge(CLAUDE, input=11, output=8)
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
    assert log.quota == expected_charge(CLAUDE, input=11, output=3, cached=40)
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
    assert log.quota == expected_charge("gpt-4o", input=11, output=3)
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
    assert log.quota == expected_charge("gpt-4o", input=200, output=3, cached=800)


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
    assert log.quota == expected_charge("gpt-4o", input=11, output=5)
    assert_billed_once_each(1)
    books_balance()
