"""A call never costs more than its hold: every choice, one output limit, capped by the balance.

The mock upstream honours ``n``, ``best_of`` and the output limit it is sent, as real upstreams
do; the prompt here counts more tokens locally than the mock reports, so any overdraw would be
the relay's fault, not the documented input-count gap.
"""

import math

import httpx
import pytest

from accounts.services import create_api_key
from billing import services as billing
from billing.models import Hold, ModelPrice, UsageLog
from relay import tokens
from tests.conftest import settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

# 19 tokens locally; the mock reports 11 prompt tokens whatever it is sent.
PROMPT = [
    {"role": "user", "content": "Say hello to everyone in the room, please, and politely too"}
]
assert tokens.count_messages(PROMPT, "gpt-4o") >= 11


def post(relay_url, key, body, path="/v1/chat/completions"):
    return httpx.post(
        relay_url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def leave_with(user, quota: int) -> None:
    billing.grant(user=user, amount=quota - user.quota, note="spent elsewhere")


def balance(user) -> int:
    user.refresh_from_db()
    return user.quota


def test_every_choice_of_n_is_held_and_the_call_stays_within_the_balance(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    leave_with(alice, 1000)
    mock_upstream.script({"chunks": 400})

    response = post(relay_url, alice_key, {"model": "gpt-4o", "messages": PROMPT, "n": 50})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["choices"]) == 50
    sent = mock_upstream.requests[-1]["json"]
    # 1,000 quota cover 19 input tokens and 3 output tokens for each of the 50 choices.
    assert sent["max_tokens"] == 3 and sent["n"] == 50
    assert {choice["finish_reason"] for choice in answer["choices"]} == {"length"}
    [log] = settled_usage(1)
    assert log.output_tokens == 150
    assert 0 <= balance(alice) < 1000
    books_balance()


def test_a_named_limit_the_balance_cannot_cover_for_every_choice_is_refused(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    leave_with(alice, 1000)

    body = {"model": "gpt-4o", "messages": PROMPT, "n": 50, "max_tokens": 10}
    response = post(relay_url, alice_key, body)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert mock_upstream.requests == []
    assert balance(alice) == 1000
    books_balance()


def test_best_of_is_held_for_every_completion_it_generates(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    leave_with(alice, 1000)

    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "best_of": 20, "n": 1}
    response = post(relay_url, alice_key, {**body, "max_tokens": 100}, path="/v1/completions")

    # 20 completions of 100 tokens at ratio 0.75 × 4/3 are 2,000 quota: more than alice has.
    assert response.status_code == 429
    mock_upstream.script({"chunks": 400})
    response = post(relay_url, alice_key, {**body, "max_tokens": 5}, path="/v1/completions")
    assert response.status_code == 200, response.text
    [log] = settled_usage(1)
    assert log.output_tokens == 100  # 5 tokens × best_of 20, each billed
    assert balance(alice) >= 0
    books_balance()


def test_conflicting_limits_mean_the_smallest_and_only_it_goes_upstream(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 400})
    body = {"model": "gpt-4o", "messages": PROMPT, "max_tokens": 32000, "max_completion_tokens": 1}

    response = post(relay_url, alice_key, body)

    assert response.status_code == 200, response.text
    sent = mock_upstream.requests[-1]["json"]
    assert sent["max_completion_tokens"] == 1 and "max_tokens" not in sent
    [log] = settled_usage(1)
    assert log.output_tokens == 1
    hold = Hold.objects.get()
    price = ModelPrice.objects.get(model="gpt-4o")
    assert hold.amount == math.ceil(price.model_ratio * (19 + price.completion_ratio * 1))
    books_balance()


def test_a_call_naming_no_limit_is_sent_the_largest_the_balance_covers(
    relay_url, alice, alice_key, openai_channel, mock_upstream, make_openai, books_balance
):
    leave_with(alice, 1000)
    mock_upstream.script({"chunks": 5000})

    answer = make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=PROMPT)

    # (1000 − 1.25 × 19) / (1.25 × 4) = 195.25: the answer stops at 195 tokens.
    assert mock_upstream.requests[-1]["json"]["max_tokens"] == 195
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 195
    assert 0 <= balance(alice) < 1000
    books_balance()


def test_a_key_allowance_caps_the_output_like_a_balance_does(
    relay_url, alice, openai_channel, mock_upstream, books_balance
):
    _, key = create_api_key(user=alice, quota=1000)
    mock_upstream.script({"chunks": 5000})

    response = post(relay_url, key, {"model": "gpt-4o", "messages": PROMPT, "stream": True})

    assert response.status_code == 200
    assert mock_upstream.requests[-1]["json"]["max_tokens"] == 195
    [log] = settled_usage(1)
    assert log.key_quota <= 1000
    assert log.api_key.remaining_quota >= 0
    books_balance()


def test_with_the_cap_off_no_limit_is_added_and_the_hold_is_what_the_balance_had(
    relay_url, alice, alice_key, openai_channel, mock_upstream, settings, books_balance
):
    settings.RELAY_CAP_OUTPUT_TO_BALANCE = False
    leave_with(alice, 1000)

    response = post(relay_url, alice_key, {"model": "gpt-4o", "messages": PROMPT})

    assert response.status_code == 200
    sent = mock_upstream.requests[-1]["json"]
    assert "max_tokens" not in sent and "max_completion_tokens" not in sent
    assert Hold.objects.get().amount == 1000
    books_balance()


def test_a_limit_above_the_models_largest_output_is_lowered_to_it(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    body = {"model": "gpt-4o", "messages": PROMPT, "max_tokens": 1_000_000}

    response = post(relay_url, alice_key, body)

    assert response.status_code == 200, response.text
    largest = ModelPrice.objects.get(model="gpt-4o").max_output_tokens
    assert mock_upstream.requests[-1]["json"]["max_tokens"] == largest
    books_balance()


def test_a_reasoning_model_is_sent_max_completion_tokens(
    relay_url, alice, alice_key, mock_upstream, books_balance
):
    from tests.conftest import add_channel

    add_channel(mock_upstream.url, models=("o3",))

    response = post(relay_url, alice_key, {"model": "o3", "messages": PROMPT})

    assert response.status_code == 200, response.text
    sent = mock_upstream.requests[-1]["json"]
    assert "max_tokens" not in sent
    assert sent["max_completion_tokens"] == ModelPrice.objects.get(model="o3").max_output_tokens
    books_balance()


def test_an_anthropic_call_gets_exactly_its_limit_through_a_conversion(
    relay_url, alice, alice_key, anthropic_channel, mock_upstream, books_balance
):
    body = {
        "model": "claude-haiku-4-5",
        "messages": PROMPT,
        "max_tokens": 500,
        "max_completion_tokens": 7,
    }

    response = post(relay_url, alice_key, body)

    assert response.status_code == 200, response.text
    assert mock_upstream.requests[-1]["json"]["max_tokens"] == 7
    books_balance()


IMAGE = {"type": "image_url", "image_url": {"url": "https://images.example/cat.png"}}


def test_images_are_held_and_billed_as_the_provider_counts_them_when_no_usage_arrives(
    relay_url, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    # A stream cut after its first delta, before the usage chunk.
    mock_upstream.script({"chunks": 10, "cut_after": 1})
    content = [{"type": "text", "text": "What are these?"}] + [IMAGE] * 100
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "stream": True}

    with httpx.stream(
        "POST",
        relay_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        response.read()

    [log] = settled_usage(1)
    assert log.status == UsageLog.Status.UPSTREAM_ERROR
    # An image of unknown size counts as GPT-4o's worst case at high detail: 1,445 tokens.
    assert log.input_tokens >= 100 * 1445
    assert log.quota >= math.ceil(1.25 * 100 * 1445)
    books_balance()
