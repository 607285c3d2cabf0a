"""The /v1 front spends nothing on a request it will refuse, and nothing unbounded on any.

Measured by an attacker: stalled unauthenticated 60 MB uploads were buffered (111 MB -> 796 MB
for twelve), a 1 MB header and 100,000 headers were accepted, and 300 half-sent heads stayed
open. Now the key is checked once the head is in and before a byte of the body is read; bodies
have a limit by content type and a deadline; heads have a count, a size and a deadline, the
last two enforced by the server's protocol (config.server) while the head still arrives.

Every test talks raw HTTP over loopback to uvicorn serving the real app, with both parsers
config.server guards (httptools, what production runs, and h11), so each test decides exactly
what is sent and when.
"""

import json
import socket
import time
from urllib.parse import urlsplit

import h11
import httpx
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from accounts.models import ApiKey
from accounts.services import create_api_key
from billing import services as billing
from billing.models import Hold, UsageLog
from config import server
from relay import admission, calls
from relay.errors import RelayError
from tests.conftest import ServerThread, eventually

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]
PROTOCOLS = {
    "httptools": "config.server:GuardedHttpToolsProtocol",
    "h11": "config.server:GuardedH11Protocol",
}
SIXTY_MB = 60 * 1024 * 1024
MULTIPART = "multipart/form-data; boundary=sluice-test-boundary"
# Per API: the path, a valid body, and how its clients send the key.
APIS = {
    "openai": ("/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO}, "Authorization"),
    "anthropic": (
        "/v1/messages",
        {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": HELLO},
        "x-api-key",
    ),
}


@pytest.fixture(scope="module")
def servers():
    """One relay per guarded protocol, for this module."""
    running = {name: ServerThread(http=protocol).start() for name, protocol in PROTOCOLS.items()}
    yield running
    for thread in running.values():
        thread.stop()


@pytest.fixture(params=list(PROTOCOLS))
def server_url(request, servers, transactional_db):
    """Base URL of a relay served by one of the guarded protocols; at teardown, waits for the
    calls left in flight (as conftest's relay_url does)."""
    yield servers[request.param].url
    eventually(lambda: calls.calls_in_flight() == 0, timeout=15)


# --- Raw HTTP --------------------------------------------------------------------------------


def key_header(api: str, key: str) -> tuple[str, str]:
    name = APIS[api][2]
    return (name, f"Bearer {key}" if name == "Authorization" else key)


def head(path: str, headers, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect(url: str, timeout: float = 10) -> socket.socket:
    """A connection whose reads give up after ``timeout`` seconds (the test then fails)."""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port))
    sock.settimeout(timeout)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, bytes] | None:
    """The response on ``sock``: (status, headers, body); None if the server closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (a read times out otherwise)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def send_all(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False if the server closed the connection meanwhile."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def openai_error(response, status: int) -> dict:
    code, headers, body = response
    assert code == status, body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def api_error(response, api: str, status: int) -> dict:
    """The error object in the API's own shape (Anthropic's carries no code)."""
    if api == "openai":
        return openai_error(response, status)
    code, headers, body = response
    assert code == status, body
    data = json.loads(body)
    assert data["type"] == "error" and data["request_id"], data
    return data["error"]


def nothing_held() -> bool:
    return not Hold.objects.exists() and not UsageLog.objects.exists()


# --- The key before the body -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, length",
    [(MULTIPART, SIXTY_MB), ("application/json", 15 * 1024 * 1024)],
    ids=["multipart-60MB", "json-15MB"],
)
def test_an_upload_without_a_key_is_refused_before_its_body_arrives(
    server_url, content_type, length
):
    sock = connect(server_url, timeout=5)
    with sock:
        sock.sendall(
            head(
                "/v1/chat/completions",
                [("Content-Type", content_type), ("Content-Length", length)],
            )
        )
        # Not a byte of the body is sent: the answer cannot wait for it.
        error = openai_error(read_response(sock), 401)
        assert error["code"] == "invalid_api_key"
        assert closed_by_server(sock)


@pytest.mark.parametrize("api", list(APIS))
def test_a_disabled_keys_upload_is_refused_before_its_body_arrives(server_url, alice, api):
    api_key, key = create_api_key(user=alice)
    ApiKey.objects.filter(id=api_key.id).update(status=ApiKey.Status.DISABLED)
    sock = connect(server_url, timeout=5)
    with sock:
        sock.sendall(
            head(
                APIS[api][0],
                [key_header(api, key), ("Content-Type", MULTIPART), ("Content-Length", SIXTY_MB)],
            )
        )
        response = read_response(sock)
        error = api_error(response, api, 403)
        if api == "openai":
            assert error["code"] == "key_disabled"
        else:
            assert error["type"] == "permission_error"
        assert response[1]["connection"] == "close"
        assert closed_by_server(sock)
    assert nothing_held()


@pytest.mark.parametrize("api", list(APIS))
def test_a_spent_balance_hook_in_admission_refuses_before_the_body(
    server_url, alice, alice_key, monkeypatch, api
):
    seen = []

    async def refuse_before_body(request):
        seen.append((request.key.id, request.key.user_id, request.client_ip))
        return RelayError(429, "Your account balance is spent.", code="insufficient_quota")

    monkeypatch.setattr(admission, "refuse_before_body", refuse_before_body)
    sock = connect(server_url, timeout=5)
    with sock:
        sock.sendall(
            head(
                APIS[api][0],
                [
                    key_header(api, alice_key),
                    ("Content-Type", "application/json"),
                    ("Content-Length", 1024 * 1024),
                ],
            )
        )
        response = read_response(sock)
    # The key was checked and kept on the request, with the caller's address, for admission.
    key = ApiKey.objects.get(user=alice)
    assert seen == [(key.id, alice.id, "127.0.0.1")]
    if api == "openai":
        assert openai_error(response, 429)["code"] == "insufficient_quota"
    else:
        assert api_error(response, api, 402)["type"] == "billing_error"


def test_a_spent_balance_is_refused_before_a_large_body_is_read(
    server_url, alice, alice_key, openai_channel
):
    billing.grant(user=alice, amount=-alice.quota, note="spent")
    sock = connect(server_url, timeout=5)
    with sock:
        sock.sendall(
            head(
                "/v1/chat/completions",
                [
                    key_header("openai", alice_key),
                    ("Content-Type", "application/json"),
                    ("Content-Length", 15 * 1024 * 1024),
                ],
            )
        )
        # Not a byte of the body is sent: the balance is checked from the headers.
        assert openai_error(read_response(sock), 429)["code"] == "insufficient_quota"
    assert nothing_held()


def test_after_a_refusal_for_a_spent_balance_even_small_bodies_are_refused_unread(
    server_url, alice, alice_key, openai_channel
):
    billing.grant(user=alice, amount=-alice.quota, note="spent")
    body = json.dumps(APIS["openai"][1]).encode()
    first = httpx.post(
        f"{server_url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {alice_key}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert first.status_code == 429
    sock = connect(server_url, timeout=5)
    with sock:
        sock.sendall(
            head(
                "/v1/chat/completions",
                [
                    key_header("openai", alice_key),
                    ("Content-Type", "application/json"),
                    ("Content-Length", len(body)),
                ],
            )
        )
        assert openai_error(read_response(sock), 429)["code"] == "insufficient_quota"
    assert nothing_held()


def test_a_valid_key_still_gets_its_answer(server_url, alice_key, openai_channel):
    answer = httpx.post(
        f"{server_url}/v1/chat/completions",
        json=APIS["openai"][1],
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


# --- Body limits by content type --------------------------------------------------------------


def post(url: str, key: str, content, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        timeout=10,
    )


def in_pieces(data: bytes, size: int = 700):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def json_body(size: int) -> bytes:
    body = {**APIS["openai"][1], "messages": [{"role": "user", "content": "x" * size}]}
    return json.dumps(body).encode()


def multipart_body(size: int) -> bytes:
    return (
        b"--sluice-test-boundary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + b"\0" * size
        + b"\r\n--sluice-test-boundary--\r\n"
    )


def test_a_json_body_over_the_json_limit_is_refused_with_413(
    server_url, alice_key, openai_channel, settings, mock_upstream
):
    settings.RELAY_MAX_JSON_BYTES = 2_000
    data = json_body(5_000)
    # With a Content-Length it is refused unread; a chunked body is counted as it arrives.
    for content in (data, in_pieces(data)):
        response = post(server_url, alice_key, content, "application/json")
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "request_too_large" and "2000 bytes" in error["message"]
    assert mock_upstream.requests == []
    assert nothing_held()


def test_a_multipart_body_between_the_two_limits_is_not_refused_for_size(
    server_url, alice_key, settings
):
    settings.RELAY_MAX_JSON_BYTES = 2_000
    settings.RELAY_MAX_BODY_BYTES = 10_000
    for content in (multipart_body(5_000), in_pieces(multipart_body(5_000))):
        response = post(server_url, alice_key, content, MULTIPART)
        assert response.status_code != 413, response.text


def test_a_multipart_body_over_the_multipart_limit_is_refused_with_413(
    server_url, alice_key, settings
):
    settings.RELAY_MAX_JSON_BYTES = 2_000
    settings.RELAY_MAX_BODY_BYTES = 10_000
    for content in (multipart_body(20_000), in_pieces(multipart_body(20_000))):
        response = post(server_url, alice_key, content, MULTIPART)
        assert response.status_code == 413, response.text
        assert "10000 bytes" in response.json()["error"]["message"]


# --- Body deadline ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", list(APIS))
def test_a_body_that_stalls_is_answered_408_after_the_body_timeout(
    server_url, alice_key, settings, api
):
    settings.RELAY_BODY_TIMEOUT = 1
    sock = connect(server_url, timeout=10)
    with sock:
        sock.sendall(
            head(
                APIS[api][0],
                [
                    key_header(api, alice_key),
                    ("Content-Type", "application/json"),
                    ("Content-Length", 1_000),
                ],
            )
            + b'{"model": "gpt-4o", '
        )
        response = read_response(sock)
        error = api_error(response, api, 408)
        assert error["type"] == "invalid_request_error"
        if api == "openai":
            assert error["code"] == "request_timeout"
        assert "within 1 s" in error["message"]
        assert closed_by_server(sock)
    assert nothing_held()


# --- Heads: count, size, deadline -------------------------------------------------------------


def fillers(count: int) -> list[tuple[str, str]]:
    return [(f"X-Filler-{number}", "1") for number in range(count)]


def call_with_headers(url: str, api: str, key: str, extra) -> tuple[int, dict, bytes] | None:
    """A valid call carrying ``extra`` headers; the response, or None if the server closed."""
    payload = json.dumps(APIS[api][1]).encode()
    headers = [
        key_header(api, key),
        ("Content-Type", "application/json"),
        ("Content-Length", len(payload)),
        *extra,
    ]
    sock = connect(url)
    with sock:
        if not send_all(sock, head(APIS[api][0], headers) + payload):
            return None
        return read_response(sock)


@pytest.mark.parametrize("api", list(APIS))
def test_one_header_more_than_the_limit_is_answered_431_in_the_callers_format(
    server_url, alice_key, openai_channel, anthropic_channel, settings, api
):
    # Host, the key, Content-Type and Content-Length are four of them.
    at_limit = fillers(settings.RELAY_MAX_HEADERS - 4)
    assert call_with_headers(server_url, api, alice_key, at_limit)[0] == 200

    over = fillers(settings.RELAY_MAX_HEADERS - 3)
    response = call_with_headers(server_url, api, alice_key, over)
    error = api_error(response, api, 431)
    assert error["type"] == "invalid_request_error"
    if api == "openai":
        assert error["code"] == "request_header_fields_too_large"


def test_names_and_values_one_byte_over_the_limit_are_answered_431(
    server_url, alice_key, openai_channel, settings
):
    payload_length = len(json.dumps(APIS["openai"][1]))
    counted = [
        ("host", "127.0.0.1"),
        ("authorization", f"Bearer {alice_key}"),
        ("content-type", "application/json"),
        ("content-length", str(payload_length)),
    ]
    used = sum(len(name) + len(value) for name, value in counted) + len("x-padding")
    room = settings.RELAY_MAX_HEADER_BYTES - used

    at_limit = call_with_headers(server_url, "openai", alice_key, [("X-Padding", "p" * room)])
    assert at_limit[0] == 200, at_limit
    over = call_with_headers(server_url, "openai", alice_key, [("X-Padding", "p" * (room + 1))])
    assert openai_error(over, 431)["code"] == "request_header_fields_too_large"


@pytest.mark.parametrize(
    "extra",
    [
        [("X-Big", "b" * 40 * 1024)],
        [("X-Big", "b" * 1024 * 1024)],
        fillers(100_000),
    ],
    ids=["one-40KB-header", "one-1MB-header", "100000-headers"],
)
def test_an_oversized_head_is_refused_with_431_or_a_closed_connection(
    server_url, alice_key, openai_channel, extra
):
    response = call_with_headers(server_url, "openai", alice_key, extra)
    assert response is None or response[0] == 431, response


def test_a_head_still_arriving_past_the_size_cap_is_refused_before_it_ends(server_url):
    # Never finished: without the protocol's cap, the server would buffer it for ever.
    sock = connect(server_url)
    with sock:
        sent = send_all(sock, b"POST /v1/chat/completions HTTP/1.1\r\nX-Big: " + b"b" * 300_000)
        response = read_response(sock) if sent else None
        assert response is None or response[0] == 431, response
        assert closed_by_server(sock)


def test_a_half_sent_head_is_closed_after_the_header_timeout(server_url, settings):
    settings.RELAY_HEADER_TIMEOUT = 0.5
    sock = connect(server_url)
    with sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        assert closed_by_server(sock)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server_url, settings):
    settings.RELAY_HEADER_TIMEOUT = 0.5
    with connect(server_url) as sock:
        assert closed_by_server(sock)


def test_a_head_dribbled_a_byte_at_a_time_is_closed_at_the_deadline(server_url, settings):
    settings.RELAY_HEADER_TIMEOUT = 0.5
    sock = connect(server_url)
    with sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        # Each byte would restart an idle timer; the deadline counts from the connection.
        for _ in range(30):
            if not send_all(sock, b"a"):
                break
            time.sleep(0.1)
        assert closed_by_server(sock)


def test_the_next_head_on_a_kept_alive_connection_has_its_own_deadline(
    server_url, alice_key, settings
):
    settings.RELAY_HEADER_TIMEOUT = 1
    sock = connect(server_url)
    with sock:
        # A first request that outlives the header timeout (its body comes late) is served...
        sock.sendall(
            head(
                "/v1/chat/completions",
                [
                    ("Authorization", f"Bearer {alice_key}"),
                    ("Content-Type", "application/json"),
                    ("Content-Length", 2),
                ],
            )
        )
        time.sleep(1.5)
        sock.sendall(b"{}")
        status, headers, _ = read_response(sock)
        assert status == 400 and headers.get("connection") != "close"
        # ...and the deadline starts again from its answer: a half-sent second head is closed.
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        assert closed_by_server(sock)


def test_the_uvicorn_internals_the_guard_relies_on_are_still_there():
    """config.server subclasses uvicorn's protocols; pin what it assumes of them."""
    for protocol in (HttpToolsProtocol, H11Protocol):
        assert callable(protocol.on_response_complete)
        assert callable(protocol.connection_made) and callable(protocol.connection_lost)
    assert callable(HttpToolsProtocol.on_message_begin)
    assert callable(HttpToolsProtocol.on_headers_complete)
    assert h11.Connection(h11.SERVER).trailing_data == (b"", False)
    for guarded in (server.GuardedHttpToolsProtocol, server.GuardedH11Protocol):
        assert guarded.__mro__[1] is server.HeadGuard
