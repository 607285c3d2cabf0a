"""A client that goes away pays for what it was sent, no more, and the upstream is cancelled.

Settlement must not depend on ``CancelledError`` reaching the view (Django may swallow it while
the response is blocked in ``send``): the stream's own ending settles the hold, exactly once.
Clients here are plain httpx or a raw socket, so the tests decide exactly when a connection
closes and how (politely, or with a reset after stalling).
"""

import asyncio
import fcntl
import json
import socket
import struct
import termios
import threading
import time
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest

from accounts.models import ApiKey, User
from billing import services as billing
from billing.models import Hold, ModelPrice, UsageLog
from billing.operations import CallRecord, HeldQuota
from billing.pricing import Price, TokenUsage
from relay import tokens
from relay.auth import KeyInfo
from relay.calls import Call
from relay.operations import OPERATIONS
from relay.providers.base import CHAT
from tests.conftest import ALICE_CREDIT, eventually, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]
# (path, model, channel fixture): OpenAI passthrough, Anthropic passthrough, and an OpenAI
# client served by an Anthropic channel (the stream is converted event by event).
ROUTES = {
    "openai": ("/v1/chat/completions", "gpt-4o", "openai_channel"),
    "anthropic": ("/v1/messages", "claude-sonnet-4-5", "anthropic_channel"),
    "openai-client-on-anthropic-channel": (
        "/v1/chat/completions",
        "claude-sonnet-4-5",
        "anthropic_channel",
    ),
}


@pytest.fixture(params=list(ROUTES))
def route(request):
    """(path, model) of a streaming route, with the channel that serves it in place."""
    path, model, channel = ROUTES[request.param]
    request.getfixturevalue(channel)
    return path, model


def stream_body(path: str, model: str) -> dict:
    body = {"model": model, "messages": HELLO, "stream": True}
    if path == "/v1/messages":
        body["max_tokens"] = 4096
    return body


def event_text(block: bytes) -> str | None:
    """The answer text one SSE event carries (either format), or None for a non-answer event."""
    for line in block.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            data = json.loads(line[5:])
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if data.get("type") == "content_block_delta":
            return data["delta"].get("text")
        choices = data.get("choices") or [{}]
        return (choices[0].get("delta") or {}).get("content")
    return None


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events in ``buffer``, and the incomplete rest."""
    *events, rest = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
    return events, rest


def charge_for(log: UsageLog) -> int:
    """What the journal row's own usage costs at the model's current price."""
    price = Price.from_row(ModelPrice.objects.get(model=log.model))
    usage = TokenUsage(
        input_tokens=log.input_tokens,
        cached_input_tokens=log.cached_input_tokens,
        cache_write_tokens=log.cache_write_tokens,
        output_tokens=log.output_tokens,
    )
    return price.charge(usage, Decimal(1))


def hold_is_closed() -> Hold | None:
    hold = Hold.objects.first()
    return hold if hold and hold.status != Hold.Status.OPEN else None


def send_request(
    relay_url: str, path: str, key: str, body: dict, *, receive_buffer: int | None = None
) -> socket.socket:
    """A raw connection to the relay that has sent one POST; the caller reads and closes it."""
    address = urlsplit(relay_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((address.hostname, address.port))
    payload = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\n".encode()
        + f"Host: {address.netloc}\r\n".encode()
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def assert_charged_once(user: User, log: UsageLog) -> None:
    """The user paid the journal row's charge, once, and nothing stays set aside."""
    user.refresh_from_db()
    assert user.quota == ALICE_CREDIT - log.quota
    assert (user.used_quota, user.request_count) == (log.quota, 1)
    assert UsageLog.objects.count() == 1
    assert Hold.objects.get(id=log.hold_id).status == Hold.Status.SETTLED


def test_a_client_that_leaves_before_a_slow_answer_is_not_charged(
    alice, alice_key, openai_channel, relay_url, mock_upstream, books_balance
):
    mock_upstream.script({"delay": 2})
    sock = send_request(
        relay_url, "/v1/chat/completions", alice_key, {"model": "gpt-4o", "messages": HELLO}
    )
    try:
        # Leave once the hold is placed and the relay is waiting for the upstream's answer.
        assert eventually(lambda: mock_upstream.requests), "the upstream was never called"
        assert Hold.objects.get().status == Hold.Status.OPEN
    finally:
        sock.close()

    # Had the relay missed the disconnect, the answer (2 s later) would have settled the hold.
    hold = eventually(hold_is_closed)
    assert hold and hold.status == Hold.Status.RELEASED
    assert not UsageLog.objects.exists()
    alice.refresh_from_db()
    assert (alice.quota, alice.used_quota) == (ALICE_CREDIT, 0)
    books_balance()


def test_a_client_that_leaves_mid_stream_pays_for_what_it_was_sent_and_no_more(
    route, alice, alice_key, relay_url, mock_upstream, books_balance
):
    path, model = route
    chunks = 200
    mock_upstream.script({"chunks": chunks, "chunk_delay": 0.02})
    received = []
    with httpx.Client(base_url=relay_url, timeout=10) as client:
        with client.stream(
            "POST",
            path,
            headers={"Authorization": f"Bearer {alice_key}"},
            json=stream_body(path, model),
        ) as response:
            assert response.status_code == 200
            buffer = b""
            for piece in response.iter_raw():
                events, buffer = split_events(buffer + piece)
                received += [t for t in map(event_text, events) if t]
                if len(received) >= 5:
                    break
        # Leaving the block with the body unread closes the connection.

    [log] = settled_usage()
    assert (log.status, log.is_stream, log.model) == ("client_gone", True, model)
    full_answer = tokens.count_text("hello " * chunks, model)
    sent_to_client = tokens.count_text("".join(received), model)
    assert 0 < sent_to_client <= log.output_tokens < full_answer
    assert log.input_tokens > 0
    assert log.quota == charge_for(log) > 0
    assert_charged_once(alice, log)
    # The upstream call was cancelled: it saw its client go, long before its last delta.
    [event] = mock_upstream.wait_for_events(1, timeout=10)
    assert event["client_gone"] and not event["completed"]
    assert event["deltas_sent"] < chunks
    books_balance()


def readable_bytes(sock: socket.socket) -> int:
    """Bytes waiting unread in the socket's receive buffer (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


def dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body, as far as it has arrived."""
    payload = b""
    while b"\r\n" in body:
        size_line, rest = body.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        payload += rest[:size]
        if size == 0 or len(rest) < size + 2:
            break
        body = rest[size + 2 :]
    return payload


def test_a_stalled_reader_that_vanishes_is_settled_once_for_no_more_than_was_produced(
    alice, alice_key, openai_channel, relay_url, mock_upstream, books_balance
):
    text = "hello " * 340  # about 2 KB and 340 tokens per delta
    chunks = 16_000  # ~35 MB, far more than every buffer between the upstream and the client
    mock_upstream.script({"chunks": chunks, "text": text})
    # A small receive window, so the relay's writes back up into its own send().
    sock = send_request(
        relay_url,
        "/v1/chat/completions",
        alice_key,
        stream_body("/v1/chat/completions", "gpt-4o"),
        receive_buffer=4096,
    )
    try:
        received, answer = b"", []
        while not answer:
            piece = sock.recv(4096)
            assert piece, "the relay ended the stream early"
            received += piece
            if b"\r\n\r\n" in received:
                head, chunked = received.split(b"\r\n\r\n", 1)
                events, _ = split_events(dechunk(chunked))
                answer = [t for t in map(event_text, events) if t]
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()

        # Stop reading. Once the unread bytes stop growing for a while, every buffer on the
        # way is full and the relay is blocked in send() (so is the upstream, behind it).
        unread, steady_since = readable_bytes(sock), time.monotonic()
        while time.monotonic() - steady_since < 1.5:
            time.sleep(0.05)
            if readable_bytes(sock) != unread:
                unread, steady_since = readable_bytes(sock), time.monotonic()
        # A slow reader is not a gone reader: nothing is settled while it still might read.
        assert Hold.objects.get().status == Hold.Status.OPEN
        assert not UsageLog.objects.exists()

        # Vanish: an abortive close (RST), as a crashed client or a dropped network does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()

    [log] = settled_usage()
    assert log.status == "client_gone"
    # The upstream call was cut off: it ended long before its last delta.
    [event] = mock_upstream.wait_for_events(1, timeout=10)
    assert event["client_gone"] and not event["completed"] and event["deltas_sent"] < chunks
    produced = tokens.count_text(text * event["deltas_sent"], "gpt-4o")
    sent_to_client = tokens.count_text("".join(answer), "gpt-4o")
    assert 0 < sent_to_client <= log.output_tokens <= produced
    assert log.quota == charge_for(log)
    assert_charged_once(alice, log)
    books_balance()


def test_a_stream_the_upstream_cuts_is_billed_for_what_was_sent_as_an_upstream_error(
    route, alice, alice_key, relay_url, mock_upstream, books_balance
):
    path, model = route
    mock_upstream.script({"chunks": 10, "cut_after": 4})
    with httpx.Client(base_url=relay_url, timeout=10) as client:
        response = client.post(
            path, headers={"Authorization": f"Bearer {alice_key}"}, json=stream_body(path, model)
        )
    assert response.status_code == 200
    events, rest = split_events(response.content)
    received = "".join(t for t in map(event_text, events) if t)
    assert received == "hello " * 4
    # The stream does not end as if the answer were whole: it ends with an error event.
    last = events[-1]
    assert b'"error"' in last and b"[DONE]" not in response.content and not rest.strip()
    if path == "/v1/messages":
        assert last.startswith(b"event: error") and b"message_stop" not in response.content

    [log] = settled_usage()
    assert log.status == "upstream_error"
    assert log.output_tokens == tokens.count_text(received, model)
    assert log.quota == charge_for(log) > 0
    assert_charged_once(alice, log)
    assert mock_upstream.wait_for_events(1)[0]["deltas_sent"] == 4
    books_balance()


def test_a_finished_stream_is_charged_once_whoever_settles_its_hold_again(
    alice, alice_key, openai_channel, relay_url, books_balance
):
    with httpx.Client(base_url=relay_url, timeout=10) as client:
        response = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {alice_key}"},
            json=stream_body("/v1/chat/completions", "gpt-4o"),
        )
    assert response.content.rstrip().endswith(b"data: [DONE]")
    [log] = settled_usage()
    assert log.status == "success"

    again = billing.settle_hold(
        hold=HeldQuota.from_row(Hold.objects.get(id=log.hold_id)),
        price=Price.from_row(ModelPrice.objects.get(model="gpt-4o")),
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=1000, output_tokens=1000),
        call=CallRecord(endpoint="chat", model="gpt-4o", is_stream=True),
    )
    assert again is None
    assert not billing.release_hold(hold_id=log.hold_id)
    assert_charged_once(alice, log)
    books_balance()


def test_settling_a_hold_twice_charges_it_once(alice, alice_key, books_balance):
    key = ApiKey.objects.get(user=alice)
    hold = billing.reserve_quota(
        user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=50_000
    )
    price = Price.from_row(ModelPrice.objects.get(model="gpt-4o"))
    usage = TokenUsage(input_tokens=100, output_tokens=200)
    call = CallRecord(endpoint="chat", model="gpt-4o", is_stream=True)

    first = billing.settle_hold(
        hold=hold, price=price, group_ratio=Decimal(1), usage=usage, call=call
    )
    second = billing.settle_hold(
        hold=hold, price=price, group_ratio=Decimal(1), usage=usage, call=call
    )

    assert first is not None and first.quota == price.charge(usage, Decimal(1)) > 0
    assert second is None
    assert_charged_once(alice, first)
    # Neither the expiry sweep nor a late release gives a settled hold back.
    assert billing.release_expired_holds(now=hold.expires_at + timedelta(hours=1)) == 0
    assert not billing.release_hold(hold_id=hold.id)
    books_balance()


def test_a_call_cancelled_while_settling_is_still_settled_and_only_once(
    alice, alice_key, books_balance
):
    call = held_call(alice)
    price = call.price
    sent = TokenUsage(input_tokens=11, output_tokens=7)

    async def every_ending_at_once():
        # The stream's ending starts settling, and its task is cancelled (the client left)...
        ending = asyncio.ensure_future(call.settle(sent, UsageLog.Status.CLIENT_GONE))
        await asyncio.sleep(0)
        ending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ending
        # ...then other endings arrive: a late settle with a bigger bill, a release.
        await call.settle(TokenUsage(input_tokens=11, output_tokens=4096), "success")
        await call.release()

    # In a thread of its own, as in the server: the settlement's connection is not the test's.
    runner = threading.Thread(target=asyncio.run, args=(every_ending_at_once(),))
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive()

    log = UsageLog.objects.get()
    assert (log.status, log.output_tokens) == ("client_gone", 7)
    assert log.quota == price.charge(sent, Decimal(1))
    assert_charged_once(alice, log)
    books_balance()


def held_call(user) -> Call:
    """A streaming gpt-4o call of ``user``'s key with a 50,000 quota hold placed."""
    key = ApiKey.objects.get(user=user)
    call = Call(
        key=KeyInfo(
            id=key.id,
            user_id=user.id,
            group=user.group,
            enabled=True,
            user_active=True,
            expires_at=None,
            unlimited_quota=True,
            allowed_models=(),
            allowed_ips=(),
        ),
        operation=OPERATIONS[CHAT],
        body={},
        model="gpt-4o",
        stream=True,
        client_ip=None,
        price=Price.from_row(ModelPrice.objects.get(model="gpt-4o")),
        group_ratio=Decimal(1),
        input_tokens=11,
    )
    call.hold = billing.reserve_quota(
        user_id=user.id, api_key_id=key.id, unlimited_key=True, amount=50_000
    )
    return call


def test_a_stream_whose_body_never_started_gives_the_hold_back(alice, alice_key, books_balance):
    """The client vanished while the headers were being sent: the body iterator never ran
    (so its finally never will), yet the hold goes back and the upstream call is cancelled."""
    from relay import http
    from relay.calls import stream_response

    call = held_call(alice)
    closed, bodies = [], []

    class Upstream:
        async def aclose(self):
            closed.append(True)

    async def never_iterated():
        bodies.append("started")
        yield b""

    async def send(message):
        await asyncio.Event().wait()  # blocked on a client that will never read

    async def client_leaves_while_headers_are_sent():
        upstream = Upstream()
        response = stream_response(call, never_iterated(), on_unsent=upstream.aclose)
        sending = asyncio.ensure_future(http.stream(send, response, watch=None))
        await asyncio.sleep(0.05)
        sending.cancel()  # what relay.http.Watch does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await sending

    runner = threading.Thread(target=asyncio.run, args=(client_leaves_while_headers_are_sent(),))
    runner.start()
    runner.join(timeout=30)

    assert bodies == []
    assert closed == [True]  # the upstream call was cancelled
    assert Hold.objects.get(id=call.hold.id).status == Hold.Status.RELEASED
    assert not UsageLog.objects.exists()
    assert User.objects.get(id=alice.id).quota == ALICE_CREDIT
    books_balance()


def test_a_hold_placed_for_a_client_that_left_during_admission_is_given_back(
    alice, alice_key, openai_channel, books_balance, monkeypatch
):
    """relay.http cancels the call when the client leaves; the ledger writer may be placing
    its hold right then. Nobody would settle that hold: it must be released, not left to the
    expiry sweep."""
    from billing import writer
    from relay import admission as admitting
    from relay import calls
    from relay.responses import Request

    request = Request(
        method="POST",
        path="/v1/chat/completions",
        headers={"authorization": f"Bearer {alice_key}", "content-type": "application/json"},
        peer="127.0.0.1",
        body=json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
    )
    submit = writer.submit
    placed = []

    def submit_then_leave(operation):
        future = submit(operation)
        if not placed:  # the hold is on its way: now the client leaves
            placed.append(future)
            asyncio.get_running_loop().call_soon(admission.cancel)
        return future

    monkeypatch.setattr(writer, "submit", submit_then_leave)

    async def client_leaves_during_admission():
        nonlocal admission
        admission = asyncio.ensure_future(admitting.admit(request, OPERATIONS[CHAT]))
        with pytest.raises(asyncio.CancelledError):
            await admission
        for _ in range(500):  # let the orphaned hold's release run on this loop
            await asyncio.sleep(0.01)
            if await asyncio.to_thread(released):
                return

    def released():
        from django.db import connection

        try:
            return Hold.objects.filter(status=Hold.Status.RELEASED).exists()
        finally:
            connection.close()

    admission = None
    runner = threading.Thread(target=asyncio.run, args=(client_leaves_during_admission(),))
    runner.start()
    runner.join(timeout=30)

    assert placed and placed[0].done()  # the hold was placed after the client had left
    [hold] = Hold.objects.all()
    assert hold.status == Hold.Status.RELEASED
    assert User.objects.get(id=alice.id).quota == ALICE_CREDIT
    assert calls.calls_in_flight() == 0
    books_balance()
