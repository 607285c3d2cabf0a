"""Choosing the channel for a call: retries, priority, weights, groups, mapping, fresh edits.

Two upstreams run side by side: the shared ``mock_upstream`` and ``other_upstream``, a second
``MockUpstream`` on its own port, so where each call went is counted from their requests.
"""

import json

import httpx
import pytest

from accounts.services import create_api_key, create_user
from billing import services as billing
from billing.models import Hold, UsageLog
from relay import routing
from relay.models import Channel
from tests.conftest import ALICE_CREDIT, add_channel, free_port, settled_usage
from tests.mock_upstream import DEFAULT_KEY, MockUpstream

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]
ANSWER = "hello hello hello "
ROTATED_KEY = "rotated-upstream-key"


@pytest.fixture(scope="module")
def _second_server():
    with MockUpstream(keys={DEFAULT_KEY, ROTATED_KEY}) as server:
        yield server


@pytest.fixture
def other_upstream(_second_server) -> MockUpstream:
    """A second mock upstream, on another port, reset for each test."""
    _second_server.reset()
    return _second_server


@pytest.fixture
def routing_orders(monkeypatch) -> list[list[int]]:
    """The channel ids in the order each call was to try them (routing itself is unchanged)."""
    orders = []
    choose = routing.routing_order

    def recording(channels):
        order = choose(channels)
        orders.append([channel.id for channel in order])
        return order

    monkeypatch.setattr(routing, "routing_order", recording)
    return orders


def chat(client, **options):
    return client.chat.completions.create(model="gpt-4o", messages=HELLO, **options)


FAILURES = {
    "an upstream 500": {"status": 500},
    "an upstream 429": {"status": 429},
    "a dropped connection": {"drop": True},
    "a refused connection": None,
    "a revoked upstream key": None,
}


def failing_channel(failure: str, upstream: MockUpstream, **fields) -> Channel:
    """A channel that fails its next call in the given way."""
    if failure == "a refused connection":
        return add_channel(f"http://127.0.0.1:{free_port()}", name="failing", **fields)
    if failure == "a revoked upstream key":
        return add_channel(upstream.url, name="failing", key="revoked-key", **fields)
    upstream.script(FAILURES[failure])
    return add_channel(upstream.url, name="failing", **fields)


def until_tried_first(channel: Channel, orders: list, make_call, limit: int = 30) -> int:
    """Make calls until one tried ``channel`` first; returns how many calls were made."""
    for calls in range(1, limit + 1):
        make_call()
        if orders[-1][0] == channel.id:
            return calls
    raise AssertionError(f"channel {channel.id} was never tried first in {limit} calls")


# --- Retrying on another channel ------------------------------------------------------------


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_call_the_first_channel_fails_is_answered_by_the_other(
    alice,
    alice_key,
    mock_upstream,
    other_upstream,
    make_openai,
    routing_orders,
    failure,
    books_balance,
):
    # Equal priority; the weight only makes the failing channel come first sooner.
    failing = failing_channel(failure, mock_upstream, models=["gpt-4o"], weight=5)
    healthy = add_channel(other_upstream.url, name="healthy", models=["gpt-4o"])
    client = make_openai(alice_key)

    def call_and_check():
        assert chat(client).choices[0].message.content == ANSWER

    calls = until_tried_first(failing, routing_orders, call_and_check)

    assert routing_orders[-1] == [failing.id, healthy.id]
    assert len(other_upstream.requests) == calls
    if failure != "a refused connection":
        assert len(mock_upstream.requests) == 1  # tried once, in the last call, then skipped
    # One charge per call, each to the channel that answered.
    logs = settled_usage(calls)
    assert len(logs) == calls
    assert {log.channel_id for log in logs} == {healthy.id}
    assert Hold.objects.count() == calls
    assert set(Hold.objects.values_list("status", flat=True)) == {Hold.Status.SETTLED}
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - sum(log.quota for log in logs)
    books_balance()


def sse_payloads(body: bytes) -> list:
    """The data of each SSE event, decoded; "[DONE]" stays a string."""
    payloads = []
    for block in body.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


@pytest.mark.parametrize("failure", ["an upstream 500", "a dropped connection"])
def test_a_stream_the_first_channel_fails_before_any_event_arrives_clean_from_the_other(
    relay_url,
    alice,
    alice_key,
    mock_upstream,
    other_upstream,
    routing_orders,
    failure,
    books_balance,
):
    failing = failing_channel(failure, mock_upstream, models=["gpt-4o"], weight=5)
    healthy = add_channel(other_upstream.url, name="healthy", models=["gpt-4o"])
    bodies = []

    def stream():
        with httpx.stream(
            "POST",
            f"{relay_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {alice_key}"},
            json={"model": "gpt-4o", "messages": HELLO, "stream": True},
            timeout=30,
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            bodies.append(response.read())

    calls = until_tried_first(failing, routing_orders, stream)

    payloads = sse_payloads(bodies[-1])
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    chunks = payloads[:-1]
    assert not any("error" in chunk for chunk in chunks)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert [delta.get("role") for delta in deltas].count("assistant") == 1
    assert "".join(delta.get("content") or "" for delta in deltas) == ANSWER
    assert len({chunk["id"] for chunk in chunks}) == 1  # one upstream answer, not two spliced
    logs = settled_usage(calls)
    assert len(logs) == calls and {log.channel_id for log in logs} == {healthy.id}
    assert logs[-1].is_stream and logs[-1].output_tokens == 3
    books_balance()


def test_an_anthropic_stream_is_retried_on_the_other_channel_too(
    alice, alice_key, mock_upstream, other_upstream, make_anthropic, routing_orders
):
    mock_upstream.script({"drop": True})
    failing = add_channel(
        mock_upstream.url, type="anthropic", models=["claude-haiku-4-5"], weight=5
    )
    add_channel(other_upstream.url, type="anthropic", models=["claude-haiku-4-5"])
    client = make_anthropic(alice_key)
    texts = []

    def stream():
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=HELLO
        ) as events:
            texts.append("".join(events.text_stream))

    until_tried_first(failing, routing_orders, stream)

    assert texts[-1] == ANSWER


def test_each_channel_gets_its_own_mapped_model_name_on_a_retry(
    alice, alice_key, mock_upstream, other_upstream, make_openai, routing_orders
):
    failing = failing_channel(
        "an upstream 500",
        mock_upstream,
        models=["gpt-4o"],
        weight=5,
        model_mapping={"gpt-4o": "first-name"},
    )
    add_channel(other_upstream.url, models=["gpt-4o"], model_mapping={"gpt-4o": "second-name"})
    client = make_openai(alice_key)

    calls = until_tried_first(failing, routing_orders, lambda: chat(client))

    assert mock_upstream.requests[-1]["json"]["model"] == "first-name"
    assert other_upstream.requests[-1]["json"]["model"] == "second-name"
    assert settled_usage(calls)[-1].upstream_model == "second-name"


# --- Priority and weights -------------------------------------------------------------------


def test_the_highest_priority_channel_is_used_while_it_works(
    alice, alice_key, mock_upstream, other_upstream, make_openai
):
    high = add_channel(mock_upstream.url, models=["gpt-4o"], priority=10)
    low = add_channel(other_upstream.url, models=["gpt-4o"], priority=0, weight=100)
    client = make_openai(alice_key)

    for _ in range(6):
        chat(client)
    assert (len(mock_upstream.requests), len(other_upstream.requests)) == (6, 0)

    mock_upstream.script({"status": 500})
    assert chat(client).choices[0].message.content == ANSWER  # the lower one stands in
    chat(client)  # and the higher one is back at once

    assert (len(mock_upstream.requests), len(other_upstream.requests)) == (8, 1)
    logs = settled_usage(8)
    assert [log.channel_id for log in logs] == [high.id] * 6 + [low.id, high.id]


def test_equal_priority_channels_share_calls_by_weight(
    relay_url, alice, alice_key, mock_upstream, other_upstream
):
    add_channel(mock_upstream.url, models=["gpt-4o"], weight=3)
    add_channel(other_upstream.url, models=["gpt-4o"], weight=1)
    calls = 200

    with httpx.Client(
        base_url=relay_url, headers={"Authorization": f"Bearer {alice_key}"}, timeout=30
    ) as client:
        for _ in range(calls):
            body = {"model": "gpt-4o", "messages": HELLO, "max_tokens": 5}
            assert client.post("/v1/chat/completions", json=body).status_code == 200

    heavy, light = len(mock_upstream.requests), len(other_upstream.requests)
    assert heavy + light == calls
    # 3:1 expects 75%; the bounds are over six standard deviations away.
    assert 0.55 * calls <= heavy <= 0.95 * calls, (heavy, light)


# --- Channels a call may not use ------------------------------------------------------------


def test_a_disabled_channel_is_never_used(
    relay_url, alice, alice_key, mock_upstream, other_upstream, make_openai
):
    add_channel(mock_upstream.url, models=["gpt-4o"])
    add_channel(
        other_upstream.url,
        models=["gpt-4o", "gpt-4o-mini"],
        priority=10,
        weight=100,
        status=Channel.Status.DISABLED,
    )
    client = make_openai(alice_key)

    for _ in range(5):
        chat(client)
    # A model whose only channel is disabled is not offered at all.
    response = httpx.post(
        f"{relay_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "gpt-4o-mini", "messages": HELLO},
        timeout=30,
    )

    assert other_upstream.requests == []
    assert len(mock_upstream.requests) == 5
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_a_channel_for_another_group_is_not_used_for_alices_group(
    alice, alice_key, mock_upstream, other_upstream, make_openai
):
    mine = add_channel(mock_upstream.url, models=["gpt-4o"])
    theirs = add_channel(
        other_upstream.url, models=["gpt-4o"], groups=["vip"], priority=10, weight=100
    )
    vip = create_user(username="vera", group="vip")
    billing.grant(user=vip, amount=ALICE_CREDIT)
    _, vip_key = create_api_key(user=vip)

    for _ in range(4):
        chat(make_openai(alice_key))
    chat(make_openai(vip_key))

    assert len(mock_upstream.requests) == 4 and len(other_upstream.requests) == 1
    by_user = dict(UsageLog.objects.values_list("user_id", "channel_id").distinct())
    assert by_user == {alice.id: mine.id, vip.id: theirs.id}


# --- Model mapping --------------------------------------------------------------------------


def test_a_mapped_model_goes_upstream_under_its_mapped_name(
    alice, alice_key, mock_upstream, make_openai, make_anthropic
):
    add_channel(mock_upstream.url, models=["gpt-4o"], model_mapping={"gpt-4o": "gpt-4o-2024-11-20"})
    add_channel(
        mock_upstream.url,
        type="anthropic",
        models=["claude-haiku-4-5"],
        model_mapping={"claude-haiku-4-5": "claude-haiku-4-5-20251001"},
    )
    client = make_openai(alice_key)

    chat(client)
    assert mock_upstream.requests[-1]["json"]["model"] == "gpt-4o-2024-11-20"
    list(chat(client, stream=True))
    assert mock_upstream.requests[-1]["json"]["model"] == "gpt-4o-2024-11-20"
    make_anthropic(alice_key).messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=HELLO
    )
    assert mock_upstream.requests[-1]["json"]["model"] == "claude-haiku-4-5-20251001"
    # An OpenAI-format call to the Anthropic channel is converted and mapped as well.
    client.chat.completions.create(model="claude-haiku-4-5", messages=HELLO)
    assert mock_upstream.requests[-1]["json"]["model"] == "claude-haiku-4-5-20251001"

    logs = settled_usage(4)
    assert [(log.model, log.upstream_model) for log in logs] == [
        ("gpt-4o", "gpt-4o-2024-11-20"),
        ("gpt-4o", "gpt-4o-2024-11-20"),
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ]


# --- Edits take effect at once --------------------------------------------------------------


def test_a_channel_edited_through_the_model_changes_routing_at_once(
    alice, alice_key, mock_upstream, other_upstream, make_openai
):
    first = add_channel(mock_upstream.url, models=["gpt-4o"], priority=10)
    second = add_channel(other_upstream.url, models=["gpt-4o"], priority=0)
    client = make_openai(alice_key)
    chat(client)  # the channels are now cached

    first.status = Channel.Status.DISABLED
    first.save()
    chat(client)
    assert (len(mock_upstream.requests), len(other_upstream.requests)) == (1, 1)

    first.status = Channel.Status.ENABLED
    first.save()
    chat(client)
    assert (len(mock_upstream.requests), len(other_upstream.requests)) == (2, 1)

    second.priority = 20
    second.save()
    chat(client)
    assert (len(mock_upstream.requests), len(other_upstream.requests)) == (2, 2)

    second.delete()
    chat(client)
    assert (len(mock_upstream.requests), len(other_upstream.requests)) == (3, 2)


def test_a_rotated_upstream_key_is_used_at_once(alice, alice_key, other_upstream, make_openai):
    channel = add_channel(other_upstream.url, models=["gpt-4o"])
    client = make_openai(alice_key)
    chat(client)

    channel.set_key(ROTATED_KEY)
    channel.save()
    chat(client)

    sent = [request["headers"]["authorization"] for request in other_upstream.requests]
    assert sent == [f"Bearer {DEFAULT_KEY}", f"Bearer {ROTATED_KEY}"]
