"""Paid upstream options are billed at their own price or refused, never passed through free."""

import math

import httpx
import pytest

from billing.models import ModelPrice, UsageLog
from tests.conftest import settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = [
    {"role": "user", "content": "Say hello to everyone in the room, please, and politely too"}
]
OPENAI = ("/v1/chat/completions", lambda key: {"Authorization": f"Bearer {key}"})
ANTHROPIC = ("/v1/messages", lambda key: {"x-api-key": key, "anthropic-version": "2023-06-01"})


def post(relay_url, key, body, api=OPENAI, headers=None):
    path, auth = api
    return httpx.post(
        relay_url + path, json=body, headers={**auth(key), **(headers or {})}, timeout=30
    )


def chat_body(**fields):
    return {"model": "gpt-4o", "messages": PROMPT, "max_tokens": 20, **fields}


def claude_body(**fields):
    return {"model": "claude-haiku-4-5", "messages": PROMPT, "max_tokens": 20, **fields}


def assert_refused_naming(response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert param in error["message"]
    assert not UsageLog.objects.exists()


def test_a_priority_tier_costs_its_multiplier(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    post(relay_url, alice_key, chat_body())
    post(relay_url, alice_key, chat_body(service_tier="priority"))

    standard, priority = settled_usage(2)
    assert priority.service_tier == "priority"
    assert priority.quota == math.ceil(2 * 1.25 * (11 + 4 * 3))
    assert standard.quota == math.ceil(1.25 * (11 + 4 * 3))
    books_balance()


def test_a_tier_the_site_does_not_offer_is_refused(
    relay_url, alice, alice_key, openai_channel, mock_upstream
):
    response = post(relay_url, alice_key, chat_body(service_tier="scale"))

    assert_refused_naming(response, "service_tier")
    assert mock_upstream.requests == []


def test_web_search_is_refused_until_priced_then_billed_per_call(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    body = chat_body(web_search_options={})
    assert_refused_naming(post(relay_url, alice_key, body), "web_search_options")

    row = ModelPrice.objects.get(model="gpt-4o")
    row.web_search_quota = 12_500  # $25 per 1,000 searches
    row.save()
    response = post(relay_url, alice_key, body)

    assert response.status_code == 200, response.text
    [log] = settled_usage(1)
    assert log.web_search_calls == 1
    assert log.quota == math.ceil(1.25 * (11 + 4 * 3)) + 12_500
    books_balance()


def test_anthropic_web_search_is_bounded_by_max_uses_and_billed_per_search(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream, settings, books_balance
):
    settings.RELAY_WEB_SEARCH_MAX_USES = 3
    row = ModelPrice.objects.get(model="claude-haiku-4-5")
    row.web_search_quota = 5_000
    row.save()
    # The upstream claims more searches than it was allowed.
    mock_upstream.script(
        {"usage": {"input_tokens": 11, "server_tool_use": {"web_search_requests": 9}}}
    )
    body = claude_body(tools=[{"type": "web_search_20250305", "name": "web_search"}])

    response = post(relay_url, alice_key, body, api=ANTHROPIC)

    assert response.status_code == 200, response.text
    assert mock_upstream.requests[-1]["json"]["tools"][0]["max_uses"] == 3
    [log] = settled_usage(1)
    assert log.web_search_calls == 3 and log.usage_flag == UsageLog.UsageFlag.CLAMPED
    assert log.quota >= 3 * 5_000
    books_balance()


def test_one_hour_cache_writes_are_billed_at_their_own_ratio(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream, books_balance
):
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000},
    }
    mock_upstream.script({"usage": usage})
    system = [
        {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]

    response = post(relay_url, alice_key, claude_body(system=system), api=ANTHROPIC)

    assert response.status_code == 200, response.text
    [log] = settled_usage(1)
    assert log.cache_write_1h_tokens == 1000 and log.cache_write_tokens == 0
    # claude-haiku-4-5: ratio 0.5; 1-hour writes at 2× input, output at 5×.
    assert log.quota == math.ceil(0.5 * (10 + 2 * 1000 + 5 * log.output_tokens))
    books_balance()


def test_an_anthropic_beta_the_site_does_not_offer_is_refused(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream
):
    response = post(
        relay_url,
        alice_key,
        claude_body(),
        api=ANTHROPIC,
        headers={"anthropic-beta": "prompt-caching-2024-07-31, context-1m-2025-08-07"},
    )

    assert response.status_code == 400
    assert "context-1m-2025-08-07" in response.json()["error"]["message"]
    assert mock_upstream.requests == []


def test_an_offered_beta_is_forwarded(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream
):
    beta = "token-efficient-tools-2025-02-19"
    response = post(
        relay_url, alice_key, claude_body(), api=ANTHROPIC, headers={"anthropic-beta": beta}
    )

    assert response.status_code == 200
    assert mock_upstream.requests[-1]["headers"]["anthropic-beta"] == beta


def test_audio_is_refused_unless_priced(relay_url, alice, alice_key, openai_channel, mock_upstream):
    audio_part = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    listening = chat_body(messages=[{"role": "user", "content": [audio_part]}])
    speaking = chat_body(modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})

    assert_refused_naming(post(relay_url, alice_key, listening), "audio")
    assert_refused_naming(post(relay_url, alice_key, speaking), "modalities")
    assert mock_upstream.requests == []


def test_audio_tokens_are_billed_at_the_audio_price(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    row = ModelPrice.objects.get(model="gpt-4o")
    row.audio_input_ratio, row.audio_output_ratio = 16, 32
    row.save()
    mock_upstream.script(
        {
            "usage": {
                "prompt_tokens": 111,
                "completion_tokens": 13,
                "prompt_tokens_details": {"audio_tokens": 100, "cached_tokens": 0},
                "completion_tokens_details": {"audio_tokens": 10, "reasoning_tokens": 0},
            }
        }
    )

    response = post(relay_url, alice_key, chat_body(modalities=["text", "audio"], audio={}))

    assert response.status_code == 200, response.text
    [log] = settled_usage(1)
    assert (log.audio_input_tokens, log.audio_output_tokens) == (100, 10)
    assert (log.input_tokens, log.output_tokens) == (11, 3)
    assert log.quota == math.ceil(1.25 * (11 + 16 * 100 + 4 * 3 + 32 * 10))
    books_balance()
