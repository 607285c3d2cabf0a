"""A call's answer goes out before its settlement is written, and a whole answer whose client
left before it could be written is not charged.

The settlement still happens exactly once after the answer (the books balance after every
test); what changes is that the client no longer waits for it.
"""

import asyncio
import threading
from types import SimpleNamespace

import httpx
import pytest

from billing import writer
from billing.models import Hold, UsageLog
from billing.operations import Settle
from relay import http as front
from relay.responses import Response
from tests.conftest import ALICE_CREDIT, wait_until_settled

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def settlements_held_back(monkeypatch):
    """Ledger batches that settle a call wait until the test lets them through."""
    gate = threading.Event()
    apply_batch = writer.apply_batch

    def held_back(operations, **options):
        if any(isinstance(operation, Settle) for operation in operations):
            gate.wait(timeout=30)
        return apply_batch(operations, **options)

    monkeypatch.setattr(writer, "apply_batch", held_back)
    yield gate
    gate.set()


def test_a_whole_answer_reaches_the_client_before_its_settlement_is_written(
    alice, alice_key, openai_channel, relay_url, settlements_held_back, books_balance
):
    response = httpx.post(
        f"{relay_url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello hello hello "
    # The client has its answer while the settlement still waits: the hold is open.
    assert Hold.objects.get().status == Hold.Status.OPEN
    assert not UsageLog.objects.exists()

    settlements_held_back.set()
    assert wait_until_settled()
    [log] = UsageLog.objects.all()
    assert log.status == UsageLog.Status.SUCCESS and log.quota > 0
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - log.quota
    books_balance()


def test_a_stream_ends_for_its_client_before_its_settlement_is_written(
    alice, alice_key, openai_channel, relay_url, settlements_held_back, books_balance
):
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST",
        f"{relay_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    ) as response:
        text = response.read().decode()  # the whole body: the stream has ended

    assert text.rstrip().endswith("data: [DONE]")
    assert Hold.objects.get().status == Hold.Status.OPEN

    settlements_held_back.set()
    assert wait_until_settled()
    [log] = UsageLog.objects.all()
    assert log.status == UsageLog.Status.SUCCESS and log.is_stream
    books_balance()


def test_an_answer_whose_client_left_before_it_was_written_is_not_charged():
    """relay.http writes a whole answer only to a client still there, and tells the call."""
    told = []
    sent = []

    async def after(written: bool) -> None:
        told.append(written)

    async def send(message) -> None:
        sent.append(message)

    async def scenario(gone: bool):
        watch = SimpleNamespace(gone=gone, finished=False)
        answer = front.Answer(send, {})
        await front._write_then_finish(answer, Response(200, b"{}", after=after), watch)

    asyncio.run(scenario(gone=True))
    assert (told, sent) == ([False], [])

    asyncio.run(scenario(gone=False))
    assert told == [False, True] and [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
    ]


def test_a_refusal_raised_by_an_endpoint_is_answered_in_its_format_and_logged_with_its_id(caplog):
    """E.g. the database away while an endpoint reads: a 503 in the caller's format, not a 500,
    and the refusal line carries the request's id."""
    from relay.errors import RelayError

    async def endpoint(request):
        raise RelayError(503, "The service is unavailable.", code="service_unavailable")

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/messages",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "query_string": b"",
    }
    with caplog.at_level("INFO", logger="relay.requests"):
        asyncio.run(front.serve(scope, receive, send, {"/v1/messages": endpoint}, endpoint))

    start = sent[0]
    assert start["status"] == 503
    body = sent[1]["body"]
    assert b'"type": "error"' in body or b'"type":"error"' in body  # Anthropic's shape
    request_id = dict(start["headers"])[b"x-request-id"].decode()
    [line] = [r for r in caplog.records if r.name == "relay.requests"]
    assert getattr(line, "request_id", request_id) == request_id and request_id in line.getMessage()
