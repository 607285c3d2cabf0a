"""The realtime API (/v1/realtime): a WebSocket relayed to an OpenAI channel, billed per response.

Real loopback WebSockets both ways: the `websockets` package (and the official openai SDK's
realtime client) against the running relay, which connects to the mock realtime upstream
(tests/mock_realtime.py).
"""

import asyncio
import json
import math
from decimal import Decimal

import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from accounts.models import ApiKey
from accounts.services import create_api_key, create_user
from billing import services as billing
from billing.models import Hold, ModelPrice, UsageLog
from relay import realtime
from relay.realtime import InputEstimate, realtime_usage, upstream_url
from relay.tokens import count_text
from tests.conftest import ALICE_CREDIT, UPSTREAM_KEY, add_channel, eventually
from tests.mock_realtime import DEFAULT_USAGE, TEXT_DELTA, shared_mock_realtime

MODEL = "gpt-4o-realtime-preview"
UPSTREAM_MODEL = "gpt-4o-realtime-preview-2024-12-17"
# gpt-4o-realtime-preview's list prices: text $5 in / $20 out / $2.50 cached, audio $40 in /
# $80 out per 1M tokens. Ratio 1 = $2 per 1M.
MODEL_RATIO = Decimal("2.5")
COMPLETION_RATIO = Decimal(4)
CACHE_READ_RATIO = Decimal("0.5")
AUDIO_INPUT_RATIO = Decimal(8)
AUDIO_OUTPUT_RATIO = Decimal(16)
MAX_OUTPUT = 4096


def charge(*, text_in=0, cached=0, audio_in=0, text_out=0, audio_out=0) -> int:
    """What the price above charges, worked out by hand: quota, rounded up once."""
    weighted = (
        text_in
        + cached * CACHE_READ_RATIO
        + audio_in * AUDIO_INPUT_RATIO
        + text_out * COMPLETION_RATIO
        + audio_out * AUDIO_OUTPUT_RATIO
    )
    return math.ceil(weighted * MODEL_RATIO)


# DEFAULT_USAGE: 120 input (100 text incl. 32 cached, 20 audio), 40 output (10 text, 30 audio).
DEFAULT_CHARGE = charge(text_in=68, cached=32, audio_in=20, text_out=10, audio_out=30)
SECOND_USAGE = {
    "total_tokens": 400,
    "input_tokens": 300,
    "output_tokens": 100,
    "input_token_details": {
        "text_tokens": 200,
        "audio_tokens": 100,
        "cached_tokens": 150,
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 50},
    },
    "output_token_details": {"text_tokens": 20, "audio_tokens": 80},
}
SECOND_CHARGE = charge(text_in=100, cached=150, audio_in=50, text_out=20, audio_out=80)


@pytest.fixture
def mock_realtime():
    """The shared mock realtime upstream, reset: no script, no records."""
    server = shared_mock_realtime()
    server.reset()
    return server


@pytest.fixture
def realtime_price(db):
    ModelPrice.objects.update_or_create(
        model=MODEL,
        defaults={
            "model_ratio": MODEL_RATIO,
            "completion_ratio": COMPLETION_RATIO,
            "cache_read_ratio": CACHE_READ_RATIO,
            "audio_input_ratio": AUDIO_INPUT_RATIO,
            "audio_output_ratio": AUDIO_OUTPUT_RATIO,
            "max_output_tokens": MAX_OUTPUT,
        },
    )


@pytest.fixture
def realtime_channel(mock_realtime, realtime_price):
    return add_channel(
        mock_realtime.url,
        name="realtime mock",
        models=(MODEL, "gpt-4o"),
        model_mapping={MODEL: UPSTREAM_MODEL},
    )


@pytest.fixture
def ws_url(relay_url):
    return relay_url.replace("http://", "ws://") + f"/v1/realtime?model={MODEL}"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=20))


async def until(ws, kind: str) -> list[dict]:
    """Events received up to and including the first of ``kind``."""
    seen = []
    while True:
        event = json.loads(await ws.recv())
        seen.append(event)
        if event["type"] == kind:
            return seen


def bearer(key: str, *, beta: bool = True) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    return headers


def balance(user) -> int:
    user.refresh_from_db()
    return user.quota


def no_open_holds() -> bool:
    return not Hold.objects.filter(status=Hold.Status.OPEN).exists()


# --- Billing per response ------------------------------------------------------------------


def test_a_session_with_two_responses_is_billed_per_response(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    mock_realtime.script({}, {"usage": SECOND_USAGE})

    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            created = json.loads(await ws.recv())
            assert created["type"] == "session.created"
            await ws.send(json.dumps({"type": "session.update", "session": {"voice": "alloy"}}))
            await until(ws, "session.updated")
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hello."}],
            }
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            first = await until(ws, "response.done")
            await ws.send(json.dumps({"type": "response.create"}))
            second = await until(ws, "response.done")
            return first, second

    first, second = run(session())
    assert [e["type"] for e in first].count("response.audio.delta") == 3
    assert first[-1]["response"]["usage"] == DEFAULT_USAGE
    assert second[-1]["response"]["usage"] == SECOND_USAGE

    rows = list(UsageLog.objects.order_by("id"))
    assert [row.quota for row in rows] == [DEFAULT_CHARGE, SECOND_CHARGE]
    first_row, second_row = rows
    assert first_row.endpoint == "realtime" and first_row.model == MODEL
    assert first_row.upstream_model == UPSTREAM_MODEL
    assert first_row.channel_id == realtime_channel.id
    assert (first_row.input_tokens, first_row.cached_input_tokens) == (68, 32)
    assert (first_row.audio_input_tokens, first_row.output_tokens) == (20, 10)
    assert first_row.audio_output_tokens == 30
    assert (second_row.input_tokens, second_row.cached_input_tokens) == (100, 150)
    assert (second_row.audio_input_tokens, second_row.audio_output_tokens) == (50, 80)
    assert balance(alice) == ALICE_CREDIT - DEFAULT_CHARGE - SECOND_CHARGE
    assert eventually(no_open_holds)
    books_balance()

    # The upstream got the channel's key, the mapped model and the beta header.
    [upstream] = mock_realtime.connections
    assert upstream["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert upstream["query"] == {"model": UPSTREAM_MODEL}
    assert upstream["beta"] is True
    assert len(mock_realtime.received("response.create")) == 2
    assert eventually(lambda: upstream["closed"] is not None)


def test_the_openai_sdk_realtime_client_works_through_the_relay(
    relay_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    client = openai.OpenAI(base_url=f"{relay_url}/v1", api_key=alice_key, max_retries=0)
    with client.realtime.connect(model=MODEL) as connection:
        connection.response.create()
        kinds = []
        for event in connection:
            kinds.append(event.type)
            if event.type == "response.done":
                break
    assert "response.output_audio.delta" in kinds  # GA event names: no beta header sent
    assert mock_realtime.connections[0]["beta"] is False
    [row] = list(UsageLog.objects.all())
    assert row.quota == DEFAULT_CHARGE
    books_balance()


def test_a_response_the_server_starts_on_vad_is_held_and_billed(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            await until(ws, "session.created")
            update = {"type": "session.update", "session": {"turn_detection": {"type": "vad"}}}
            await ws.send(json.dumps(update))
            await until(ws, "session.updated")
            audio = {"type": "input_audio_buffer.append", "audio": "AAAA" * 12_000}
            await ws.send(json.dumps(audio))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            return await until(ws, "response.done")

    events = run(session())
    assert events[-1]["response"]["usage"] == DEFAULT_USAGE
    assert not mock_realtime.received("response.create")  # the server started it
    [row] = list(UsageLog.objects.all())
    assert row.quota == DEFAULT_CHARGE
    assert balance(alice) == ALICE_CREDIT - DEFAULT_CHARGE
    books_balance()


def test_a_response_create_the_upstream_refuses_gives_its_hold_back(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    mock_realtime.script({"error": True})

    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create", "event_id": "evt_1"}))
            error = (await until(ws, "error"))[-1]
            assert error["error"]["event_id"] == "evt_1"
            await ws.send(json.dumps({"type": "response.create"}))
            await until(ws, "response.done")

    run(session())
    [row] = list(UsageLog.objects.all())
    assert row.quota == DEFAULT_CHARGE
    assert eventually(no_open_holds)
    assert balance(alice) == ALICE_CREDIT - DEFAULT_CHARGE
    books_balance()


# --- Out of credit -------------------------------------------------------------------------


def test_running_out_of_balance_closes_the_session_with_an_error_event(
    ws_url,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    dana = create_user(username="dana", password="dana-password")
    # Enough for a response limited to 100 tokens, not for one of the model's 4096.
    billing.grant(user=dana, amount=50_000, note="test credit")
    _, key = create_api_key(user=dana, name="dana's key")

    async def session():
        async with connect(ws_url, additional_headers=bearer(key)) as ws:
            await until(ws, "session.created")
            small = {"type": "response.create", "response": {"max_output_tokens": 100}}
            await ws.send(json.dumps(small))
            await until(ws, "response.done")
            await ws.send(json.dumps({"type": "response.create", "event_id": "evt_big"}))
            error = (await until(ws, "error"))[-1]
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return error, closed.value

    error, closed = run(session())
    assert error["error"]["code"] == "insufficient_quota"
    assert error["error"]["event_id"] == "evt_big"
    assert "balance is too low for the next response" in error["error"]["message"]
    assert "session is closed" in error["error"]["message"]
    assert closed.rcvd is not None and closed.rcvd.code == 1000
    # The refused response never reached the upstream; the first one was billed.
    assert len(mock_realtime.received("response.create")) == 1
    [row] = list(UsageLog.objects.all())
    assert row.quota == DEFAULT_CHARGE
    assert balance(dana) == 50_000 - DEFAULT_CHARGE
    assert eventually(lambda: mock_realtime.connections[0]["closed"] is not None)
    assert eventually(no_open_holds)
    books_balance()


def test_a_spent_balance_is_refused_before_the_upgrade(
    ws_url,
    realtime_channel,
    mock_realtime,
):
    erin = create_user(username="erin", password="erin-password")
    _, key = create_api_key(user=erin, name="erin's key")
    with pytest.raises(InvalidStatus) as refused:
        run(connect(ws_url, additional_headers=bearer(key)))
    assert refused.value.response.status_code == 429
    body = json.loads(refused.value.response.body)
    assert body["error"]["code"] == "insufficient_quota"
    assert not mock_realtime.connections


# --- Keys ----------------------------------------------------------------------------------


def test_the_key_may_come_as_a_subprotocol(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    offered = ["realtime", f"openai-insecure-api-key.{alice_key}", "openai-beta.realtime-v1"]

    async def session():
        async with connect(ws_url, subprotocols=offered) as ws:
            assert ws.subprotocol == "realtime"  # never the key echoed back
            assert alice_key not in str(ws.response.headers)
            await until(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create"}))
            return await until(ws, "response.done")

    run(session())
    assert mock_realtime.connections[0]["beta"] is True  # asked for by the subprotocol
    assert alice_key not in json.dumps(mock_realtime.connections[0]["headers"])
    [row] = list(UsageLog.objects.all())
    assert row.quota == DEFAULT_CHARGE
    books_balance()


@pytest.mark.parametrize(
    ("headers", "subprotocols"),
    [
        ({}, None),
        ({"Authorization": "Bearer sk-not-a-key"}, None),
        ({}, ["realtime", "openai-insecure-api-key.sk-not-a-key"]),
    ],
    ids=["no key", "bad key", "bad subprotocol key"],
)
def test_a_bad_key_is_refused_with_401_before_the_upgrade(
    ws_url,
    realtime_channel,
    mock_realtime,
    headers,
    subprotocols,
):
    with pytest.raises(InvalidStatus) as refused:
        run(connect(ws_url, additional_headers=headers, subprotocols=subprotocols))
    assert refused.value.response.status_code == 401
    error = json.loads(refused.value.response.body)["error"]
    assert error["code"] == "invalid_api_key"
    assert not mock_realtime.connections


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        ({"allowed_models": ["gpt-4o"]}, "model_not_allowed"),
        ({"allowed_ips": ["10.9.8.0/24"]}, "ip_not_allowed"),
        ({"status": ApiKey.Status.DISABLED}, "key_disabled"),
    ],
    ids=["model allow-list", "IP allow-list", "disabled"],
)
def test_the_keys_own_checks_apply(
    ws_url,
    alice,
    realtime_channel,
    mock_realtime,
    limits,
    code,
):
    status = limits.pop("status", None)
    row, key = create_api_key(user=alice, name="limited", **limits)
    if status is not None:
        row.status = status
        row.save()
    with pytest.raises(InvalidStatus) as refused:
        run(connect(ws_url, additional_headers=bearer(key)))
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["code"] == code
    assert not mock_realtime.connections


def test_a_model_without_an_audio_price_is_refused(
    relay_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
):
    url = relay_url.replace("http://", "ws://") + "/v1/realtime?model=gpt-4o"
    with pytest.raises(InvalidStatus) as refused:
        run(connect(url, additional_headers=bearer(alice_key)))
    assert refused.value.response.status_code == 400
    assert "no audio price" in json.loads(refused.value.response.body)["error"]["message"]
    assert not mock_realtime.connections


def test_an_unknown_model_or_none_is_refused(relay_url, alice, alice_key, realtime_channel):
    base = relay_url.replace("http://", "ws://") + "/v1/realtime"
    for url, status in ((base, 400), (base + "?model=no-such-model", 404)):
        with pytest.raises(InvalidStatus) as refused:
            run(connect(url, additional_headers=bearer(alice_key)))
        assert refused.value.response.status_code == status


def test_the_tolerant_paths_reach_the_realtime_endpoint(
    relay_url, alice, alice_key, realtime_channel, mock_realtime
):
    base = relay_url.replace("http://", "ws://")

    async def session(url):
        async with connect(url, additional_headers=bearer(alice_key)) as ws:
            return (await until(ws, "session.created"))[-1]

    for path in ("/v1/v1/realtime", "/realtime", "/v1/realtime/"):
        assert run(session(f"{base}{path}?model={MODEL}"))["type"] == "session.created"
    assert len(mock_realtime.connections) == 3


def test_a_plain_http_request_is_told_to_upgrade(relay_url, alice_key):
    import httpx

    answer = httpx.get(f"{relay_url}/v1/realtime?model={MODEL}", headers=bearer(alice_key))
    assert answer.status_code == 426
    assert answer.json()["error"]["code"] == "upgrade_required"


# --- Closing -------------------------------------------------------------------------------


def test_the_upstream_closing_closes_the_client(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            await until(ws, "session.created")
            await asyncio.to_thread(mock_realtime.close_all, 4000)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            return closed.value

    closed = run(session())
    assert closed.rcvd is not None and closed.rcvd.code == 4000
    assert not UsageLog.objects.exists()
    books_balance()


def test_a_response_cut_by_the_upstream_is_billed_for_what_was_sent(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    mock_realtime.script({"deltas": 3, "close_after": 2})

    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create"}))
            seen = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    seen.append(json.loads(await ws.recv()))
            return seen, closed.value

    seen, closed = run(session())
    assert [e["type"] for e in seen].count("response.audio.delta") == 2
    assert closed.rcvd is not None and closed.rcvd.code == 1011
    [row] = settled(1)
    assert row.status == UsageLog.Status.UPSTREAM_ERROR
    # Two audio deltas of 100 ms each (output audio: a token per 50 ms), two text deltas.
    assert row.audio_output_tokens == 4
    assert row.output_tokens == 2 * count_text(TEXT_DELTA, MODEL)
    assert row.quota > 0
    assert eventually(no_open_holds)
    books_balance()


def test_the_client_leaving_closes_the_upstream_and_settles_what_it_was_sent(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    mock_realtime.script({"hang": True})

    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create"}))
            seen = [json.loads(await ws.recv()) for _ in range(8)]
            return seen  # leaving with the response open

    seen = run(session())
    assert seen[-1]["type"] == "response.audio.delta"
    assert eventually(lambda: mock_realtime.connections[0]["closed"] is not None)
    [row] = settled(1)
    assert row.status == UsageLog.Status.CLIENT_GONE
    assert (row.output_tokens, row.audio_output_tokens) == (3 * count_text(TEXT_DELTA, MODEL), 6)
    assert eventually(no_open_holds)
    books_balance()


def test_a_response_asked_for_and_never_started_is_released_at_the_end(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
    books_balance,
):
    mock_realtime.script({"silent": True})

    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create"}))
            await ws.send(json.dumps({"type": "session.update", "session": {}}))
            await until(ws, "session.updated")  # the response.create was held and forwarded
            return await asyncio.to_thread(
                eventually, lambda: Hold.objects.filter(status=Hold.Status.OPEN).exists()
            )

    assert run(session())  # a hold was open while the response was awaited
    assert eventually(no_open_holds)
    assert balance(alice) == ALICE_CREDIT
    assert not UsageLog.objects.exists()
    books_balance()


def test_a_client_that_stops_reading_holds_the_upstream_back_and_is_disconnected(
    ws_url, alice, alice_key, realtime_channel, mock_realtime, books_balance, monkeypatch
):
    """Bounded buffers: the relay reads the upstream only as fast as the client takes frames,
    so a client that stops reading stops the upstream too (flow control all the way back),
    and after SEND_TIMEOUT seconds without progress the session is closed and billed."""
    monkeypatch.setattr(realtime, "SEND_TIMEOUT", 1.0)
    deltas = 3000  # 3000 x 6.4 KB of audio (~19 MB): far more than the socket buffers hold
    mock_realtime.script({"deltas": deltas})

    async def session():
        # Uncompressed: the mock's silent audio would deflate to almost nothing on the wire.
        async with connect(
            ws_url,
            additional_headers=bearer(alice_key),
            max_queue=4,
            compression=None,
            close_timeout=1,
        ) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create"}))
            await asyncio.sleep(0.5)
            sent_while_stalled = mock_realtime.connections[0]["deltas_sent"]
            closed_upstream = await asyncio.to_thread(
                eventually, lambda: mock_realtime.connections[0]["closed"] is not None
            )
            return sent_while_stalled, closed_upstream

    sent_while_stalled, closed_upstream = run(session())
    assert 0 < sent_while_stalled < deltas
    assert closed_upstream
    assert mock_realtime.connections[0]["deltas_sent"] < deltas
    [row] = settled(1)
    assert row.status == UsageLog.Status.CLIENT_GONE
    assert row.quota > 0
    assert eventually(no_open_holds)
    books_balance()


def test_binary_frames_are_relayed_both_ways(
    ws_url,
    alice,
    alice_key,
    realtime_channel,
    mock_realtime,
):
    async def session():
        async with connect(ws_url, additional_headers=bearer(alice_key)) as ws:
            await until(ws, "session.created")
            await ws.send(b"\x00\x01binary\xff")
            return await ws.recv()

    assert run(session()) == b"\x00\x01binary\xff"
    assert mock_realtime.connections[0]["binary"] == 1


def settled(count: int):
    rows = eventually(lambda: len(list(UsageLog.objects.all())) >= count, timeout=10)
    assert rows
    return list(UsageLog.objects.order_by("id"))


# --- Without a server ----------------------------------------------------------------------


def test_usage_splits_cached_and_audio_tokens():
    usage = realtime_usage(SECOND_USAGE)
    assert (usage.input_tokens, usage.cached_input_tokens, usage.audio_input_tokens) == (
        100,
        150,
        50,
    )
    assert (usage.output_tokens, usage.audio_output_tokens) == (20, 80)
    # Without cached details, cached tokens beyond the text ones are audio.
    bare = {
        "input_tokens": 50,
        "output_tokens": 0,
        "input_token_details": {"audio_tokens": 40, "cached_tokens": 20},
    }
    usage = realtime_usage(bare)
    assert (usage.input_tokens, usage.cached_input_tokens, usage.audio_input_tokens) == (
        0,
        20,
        30,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"input_tokens": -1},
        {"input_tokens": "10"},
        {"input_tokens": 5, "input_token_details": {"cached_tokens": 9}},
        {"output_tokens": 5, "output_token_details": {"audio_tokens": 9}},
        "lots",
    ],
)
def test_usage_that_cannot_be_true_is_a_problem(bad):
    from relay.formats.common import UsageProblem

    with pytest.raises(UsageProblem):
        realtime_usage(bad)


def test_the_input_estimate_follows_the_conversation():
    estimate = InputEstimate(model=MODEL)
    estimate.read_session({"instructions": "Be brief.", "max_response_output_tokens": 300})
    assert estimate.session_limit == 300
    text, audio = estimate.tokens()
    assert text > 0 and audio == 0
    estimate.add_audio("A" * 64_000)  # 48,000 bytes: one second of pcm16 -> 10 tokens
    assert estimate.tokens()[1] == 10
    estimate.after_response(realtime_usage(SECOND_USAGE))
    # The conversation is now what the upstream counted: input and output.
    assert estimate.tokens() == (100 + 150 + 20, 50 + 80)
    estimate.read_session({"input_audio_format": "g711_ulaw"})
    estimate.add_audio("A" * 64_000)  # 48,000 bytes of g711: six seconds -> 60 tokens
    assert estimate.tokens()[1] == 130 + 60


def test_the_upstream_url_is_the_channel_base_with_ws():
    assert (
        upstream_url("https://api.openai.com", "gpt-4o-realtime-preview")
        == "wss://api.openai.com/v1/realtime?model=gpt-4o-realtime-preview"
    )
    assert (
        upstream_url("https://relay.example/v1/", "m") == "wss://relay.example/v1/realtime?model=m"
    )
    assert upstream_url("http://127.0.0.1:9/v1", "m") == "ws://127.0.0.1:9/v1/realtime?model=m"
