"""The relay's own ASGI front: /v1 calls without Django's request and response machinery.

Django's handler costs more per call than the rest of the relay together (bench/README.md):
a request object with lazy META, the URL resolver, signals, a response object rendered header
by header and a thread hop to close it. A relayed call needs none of that, so ``serve`` reads
the ASGI messages itself, hands a small ``Request`` to the endpoint ``ROUTES`` names and writes
the ``Response`` or ``StreamingResponse`` it returns. The site (admin, accounts) still goes
through Django's full stack (config.asgi).

A request is taken in this order, each step answering in the caller's format and none reading
more than it must:

1. the head: more than RELAY_MAX_HEADERS headers, or more than RELAY_MAX_HEADER_BYTES bytes of
   names and values, is a 431 (the server's protocol, config.server, bounds a head still
   arriving and the time it may take);
2. the declared length: over the body limit (RELAY_MAX_BODY_BYTES for multipart/form-data,
   RELAY_MAX_JSON_BYTES, or the smaller of the two, for anything else) is a 413, unread;
3. ``before_body``: whatever can be answered from the head alone (unknown path, wrong method,
   bad key, spent balance) is answered before a byte of the body is read, so a caller without
   a valid key cannot make the server hold an upload;
4. the body, counted as it comes (a chunked body declares no length), whole within
   RELAY_BODY_TIMEOUT seconds of the head, or a 408.

An answer sent before a body was read whole says ``Connection: close``: uvicorn then closes
the connection instead of draining (or waiting for) the rest. Then, as Django did, the client's
disconnect is watched while the endpoint runs, which cancels the endpoint (the relay settles or
releases the hold in its own shielded step, never relying on that cancellation; see
relay.proxy). The body is handed over as bytes; the endpoint parses it, once.

Around all of that, every request gets an id (``x-request-id``, the ``request_id`` of
Anthropic errors, ``current_request_id()`` for any code serving it) and the CORS headers a
browser client needs; a CORS preflight (``OPTIONS``) is answered right after step 1, before
any key check, since browsers send no key on it. Once a refused or failed call's answer is sent, one
INFO line on the ``relay.requests`` logger names it: request id, method and path, key id,
model, status and reason (the error's code). Never the key, the body or an upstream address.
"""

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from relay import errors
from relay.media import Upload
from relay.operations import client_format_of_path, takes_upload
from relay.responses import (
    END,
    Request,
    Response,
    StreamingResponse,
    new_request_id,
    request_id,
)
from relay.responses import current_request_id as current_request_id  # for code serving a call

logger = logging.getLogger(__name__)
requests_logger = logging.getLogger("relay.requests")

# CORS: the key is the credential (a header, never a cookie), so any origin may call by
# default; RELAY_CORS_ORIGINS narrows it to a comma-separated list.
CORS_METHODS = "GET, POST, OPTIONS"
# Allowed when a preflight names no headers; a preflight that names some gets them echoed.
CORS_HEADERS = (
    "authorization, x-api-key, x-goog-api-key, x-goog-api-client, content-type, "
    "anthropic-version, anthropic-beta, "
    "anthropic-dangerous-direct-browser-access, openai-beta, openai-organization, "
    "openai-project, x-stainless-arch, x-stainless-lang, x-stainless-os, "
    "x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-timeout, x-stainless-helper-method"
)
CORS_EXPOSED = "x-request-id, x-should-retry"
CORS_MAX_AGE = "86400"  # seconds a browser may keep a preflight's answer (browsers cap it)

Endpoint = Callable[[Request], Awaitable[Response | StreamingResponse]]
BeforeBody = Callable[[Request], Awaitable[Response | None]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived whole."""


class BodyTooLarge(Exception):
    pass


def internal_error() -> errors.RelayError:
    return errors.RelayError(
        500, "The server had an error while processing your request.", code="internal_error"
    )


def headers_too_large() -> errors.RelayError:
    return errors.RelayError(
        431,
        f"Request headers are too large: at most {settings.RELAY_MAX_HEADERS} headers and "
        f"{settings.RELAY_MAX_HEADER_BYTES} bytes of names and values.",
        code="request_header_fields_too_large",
        error_type="invalid_request_error",
        retry=False,
    )


def body_too_large(limit: int) -> errors.RelayError:
    return errors.RelayError(
        413,
        f"Request body is larger than this server accepts ({limit} bytes).",
        code="request_too_large",
        retry=False,
    )


def body_too_slow() -> errors.RelayError:
    return errors.RelayError(
        408,
        f"The whole request body must arrive within {settings.RELAY_BODY_TIMEOUT:g} s of its "
        "headers; it did not.",
        code="request_timeout",
        error_type="invalid_request_error",
    )


def head_is_too_large(raw_headers) -> bool:
    if len(raw_headers) > settings.RELAY_MAX_HEADERS:
        return True
    size = sum(len(name) + len(value) for name, value in raw_headers)
    return size > settings.RELAY_MAX_HEADER_BYTES


def body_limit(headers: dict[str, str]) -> int:
    """Multipart uploads (audio, files) may be large; a JSON document much less."""
    content_type = headers.get("content-type", "").lstrip().lower()
    if content_type.startswith("multipart/form-data"):
        return settings.RELAY_MAX_BODY_BYTES
    return min(settings.RELAY_MAX_JSON_BYTES, settings.RELAY_MAX_BODY_BYTES)


def has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def declares_too_much(declared: str | None, limit: int) -> bool:
    if declared is None:
        return False
    try:
        return int(declared) > limit
    except ValueError:
        return True


async def read_body(receive, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it passes ``limit`` bytes."""
    chunks = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:  # a chunked body declares no length: count it as it comes
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# A multipart upload (relay.media) is kept in memory up to this size, in a temporary file
# beyond it: a 50 MB upload costs the process this much memory, not 50 MB.
UPLOAD_MEMORY_BYTES = 1024 * 1024


async def spool_body(receive, limit: int, content_type: str) -> Upload:
    """The whole body spooled to a temporary file (``read_body``'s limit and errors)."""
    spooled = tempfile.SpooledTemporaryFile(max_size=UPLOAD_MEMORY_BYTES)
    received = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise BodyTooLarge
            spooled.write(chunk)  # memory, or the page cache: no wait worth a thread
            if not message.get("more_body"):
                return Upload(spooled, received, content_type)
    except BaseException:
        spooled.close()
        raise


async def serve(
    scope,
    receive,
    send,
    routes: dict[str, Endpoint],
    fallback: Endpoint,
    before_body: BeforeBody | None = None,
) -> None:
    """Answer one ASGI HTTP request with the endpoint ``routes`` has for its path.

    ``before_body``, if given, sees the request once its head is in: a ``Response`` it returns
    is sent and the body is never read.
    """
    headers = {}
    for name, value in scope["headers"]:
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    client = scope.get("client")
    request = Request(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        peer=client[0] if client else None,
        query=scope.get("query_string", b"").decode("latin-1"),
    )
    this_request = new_request_id()
    bound = request_id.set(this_request)
    answer = Answer(send, {"x-request-id": this_request, **cors_headers(headers.get("origin"))})
    try:
        await _serve(request, scope, receive, answer, routes, fallback, before_body)
    finally:
        if answer.refused:  # logged while the request id is still this request's
            log_refusal(request, this_request, answer)
        request_id.reset(bound)


async def _serve(request, scope, receive, answer, routes, fallback, before_body) -> None:
    body_deadline = asyncio.get_running_loop().time() + settings.RELAY_BODY_TIMEOUT
    headers = request.headers
    api = client_format_of_path(request.path)
    if head_is_too_large(scope["headers"]):
        await answer.write_and_close(errors.render(headers_too_large(), api=api))
        return
    if request.method == "OPTIONS":  # a CORS preflight: no key, no body wanted
        await (answer.write_and_close if has_body(headers) else answer.write)(preflight(headers))
        return
    limit = body_limit(headers)
    if declares_too_much(headers.get("content-length"), limit):
        await answer.write_and_close(errors.render(body_too_large(limit), api=api))
        return
    if before_body is not None:
        try:
            early = await before_body(request)
        except errors.RelayError as error:  # e.g. the database away while the key is looked up
            early = errors.render(error, api=api)
        except Exception:
            logger.exception("unhandled error before the body of %s", request.path)
            early = errors.render(internal_error(), api=api)
        if early is not None:
            # A request without a body leaves nothing unread: its connection may stay open.
            await (answer.write_and_close if has_body(headers) else answer.write)(early)
            return
    try:
        async with asyncio.timeout_at(body_deadline):
            if takes_upload(request.path):
                content_type = headers.get("content-type", "")
                request.upload = await spool_body(receive, limit, content_type)
            else:
                request.body = await read_body(receive, limit)
    except ClientGone:
        return
    except BodyTooLarge:
        await answer.write_and_close(errors.render(body_too_large(limit), api=api))
        return
    except TimeoutError:
        await answer.write_and_close(errors.render(body_too_slow(), api=api))
        return

    endpoint = routes.get(request.path.rstrip("/"), fallback)
    watch = Watch(receive)
    try:
        try:
            response = await endpoint(request)
        except errors.RelayError as error:  # a refusal raised where it was met (the database away)
            response = errors.render(error, api=api)
        except Exception:  # a bug: the client still gets an answer in its API's format
            logger.exception("unhandled error in %s", request.path)
            response = errors.render(internal_error(), api=api)
        if isinstance(response, StreamingResponse):
            await answer.stream(response, watch)
        else:
            await _write_then_finish(answer, response, watch)
    except asyncio.CancelledError:
        if not watch.swallow():
            raise
    finally:
        watch.stop()
        if request.upload is not None:
            request.upload.close()


async def _write_then_finish(answer: "Answer", response: Response, watch: "Watch") -> None:
    """Write a whole answer, then run its ``after`` step with whether it was written, however
    this ends (a client that left before the write cancels this task)."""
    written = False
    try:
        if not watch.gone:
            watch.finished = True
            await answer.write(response)
            written = True
    finally:
        if response.after is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(response.after(written))


class Answer:
    """Sends one request's answer with the headers every /v1 answer carries (its id, CORS),
    and keeps what the refusal log needs: the status and reason sent."""

    def __init__(self, send, headers: dict[str, str]):
        self._send = send
        self.headers = headers
        self.status: int | None = None
        self.reason: str | None = None

    @property
    def refused(self) -> bool:
        """A refusal or failure was sent: a status of 400 or more, or a stream that ended
        with an error event."""
        return self.status is not None and (self.status >= 400 or self.reason is not None)

    async def write(self, response: Response) -> None:
        self.status, self.reason = response.status, response.reason
        await write(self._send, response, self.headers)

    async def write_and_close(self, response: Response) -> None:
        self.status, self.reason = response.status, response.reason
        await write_and_close(self._send, response, self.headers)

    async def stream(self, response: StreamingResponse, watch: "Watch") -> None:
        last = await stream(self._send, response, watch, self.headers)
        # Only a stream whose end was sent counts: a client that left was refused nothing.
        if watch.finished:
            self.status, self.reason = response.status, stream_error_reason(last)


def _start(
    status: int, content_type: str, headers: dict[str, str], extra: dict[str, str] | None
) -> dict:
    raw = [(b"content-type", content_type.encode())] if content_type else []
    raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    if extra:
        raw += [(name.encode(), value.encode()) for name, value in extra.items()]
    return {"type": "http.response.start", "status": status, "headers": raw}


async def write(send, response: Response, extra: dict[str, str] | None = None) -> None:
    """Send a whole response, with ``extra`` headers besides its own."""
    start = _start(response.status, response.content_type, response.headers, extra)
    if response.status != 204:  # a 204 has no body, and says no length (RFC 9110)
        start["headers"].append((b"content-length", str(len(response.body)).encode()))
    await send(start)
    await send({"type": "http.response.body", "body": response.body})


async def write_and_close(send, response: Response, extra: dict[str, str] | None = None) -> None:
    """An answer given before the body was read whole: the connection closes after it, so
    the server neither drains the rest of the body nor waits for it."""
    response.headers["connection"] = "close"
    await write(send, response, extra)


async def stream(
    send,
    response: StreamingResponse,
    watch: "Watch | None" = None,
    extra: dict[str, str] | None = None,
) -> bytes | None:
    """Send a streaming response; the body iterator is closed however this ends. Returns the
    last chunk sent (where a stream's error event would be)."""
    iterating = ended = False
    last = None
    try:
        await send(_start(response.status, response.content_type, response.headers, extra))
        iterating = True  # from the first step on, the iterator's own finally cleans up
        async for chunk in response.body:
            if chunk is not END:
                last = chunk
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            elif not ended:  # the client has the whole answer; the rest is bookkeeping
                ended = True
                if watch is not None:
                    watch.finished = True
                await send({"type": "http.response.body", "body": b""})
        if not ended:
            if watch is not None:
                watch.finished = True
            await send({"type": "http.response.body", "body": b""})
        return last
    finally:
        if iterating:
            await response.body.aclose()  # runs the iterator's finally if it is suspended
        else:
            await response.unsent()


# --- CORS ----------------------------------------------------------------------------------

_origins: frozenset[str] | None = None


def allowed_origins() -> frozenset[str]:
    """RELAY_CORS_ORIGINS as a set ("*" for any), read once (and again when a test changes it)."""
    global _origins
    if _origins is None:
        setting = settings.RELAY_CORS_ORIGINS
        listed = setting.split(",") if isinstance(setting, str) else setting
        _origins = frozenset(origin.strip().rstrip("/") for origin in listed if origin.strip())
    return _origins


@receiver(setting_changed)
def _forget_origins(*, setting: str, **_) -> None:
    global _origins
    if setting == "RELAY_CORS_ORIGINS":
        _origins = None


def cors_headers(origin: str | None) -> dict[str, str]:
    """What every /v1 answer says to a browser: who may read it, and which headers."""
    allowed = allowed_origins()
    if "*" in allowed:
        return {"access-control-allow-origin": "*", "access-control-expose-headers": CORS_EXPOSED}
    # The answer depends on the Origin asked from: caches must keep one per origin.
    if origin is None or origin not in allowed:
        return {"vary": "origin"}
    return {
        "access-control-allow-origin": origin,
        "access-control-expose-headers": CORS_EXPOSED,
        "vary": "origin",
    }


def preflight(headers: dict[str, str]) -> Response:
    """The answer to a CORS preflight: the methods, and the headers it asked to send (an
    origin that is not allowed gets no Access-Control-Allow-Origin from ``cors_headers``)."""
    asked = headers.get("access-control-request-headers", "").strip()
    return Response(
        204,
        b"",
        headers={
            "access-control-allow-methods": CORS_METHODS,
            "access-control-allow-headers": asked or CORS_HEADERS,
            "access-control-max-age": CORS_MAX_AGE,
        },
        content_type="",
    )


# --- The refusal log -----------------------------------------------------------------------

STREAM_ERROR_STARTS = (b"event: error\n", b'data: {"error"')


def stream_error_reason(last: bytes | None) -> str | None:
    """The code (or type) of the error event a stream ended with, or None if it did not.

    Only the last chunk is looked at, once: an error event is always a broken stream's last
    (relay.proxy), in either format's framing. ``"stream_error"`` if its data cannot be read.
    """
    if not last:
        return None
    start = max(last.rfind(marker) for marker in STREAM_ERROR_STARTS)
    if start < 0:
        return None
    data = last[start:].partition(b"data: ")[2].partition(b"\n")[0]
    try:
        error = json.loads(data)["error"]
        reason = error.get("code") or error.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        reason = None
    return reason if isinstance(reason, str) else "stream_error"


def loggable(text: str | None, limit: int) -> str:
    """``text`` safe for one log line: printable ASCII without spaces (others become ``_``),
    at most ``limit`` characters."""
    if not text:
        return "-"
    text = text[:limit]
    if not (text.isascii() and text.isprintable() and " " not in text):
        text = "".join(c if c.isascii() and c.isprintable() and c != " " else "_" for c in text)
    return text


def log_refusal(request: Request, this_request: str, answer: Answer) -> None:
    """One INFO line for a refused or failed call, after its answer was sent."""
    requests_logger.info(
        "%s %s %s key=%s model=%s status=%s reason=%s",
        this_request,
        loggable(request.method, 16),
        loggable(request.path, 200),
        request.key.id if request.key is not None else "-",
        loggable(request.model, 100),
        answer.status,
        loggable(answer.reason, 64),
    )


class Watch:
    """Cancels the task serving a request when its client disconnects.

    After the body, ``receive()`` has nothing more to say until the connection closes (or the
    response completes), so one task waiting on it is the whole watch. The endpoint sees the
    disconnect as a ``CancelledError``; ``swallow`` tells ``serve`` whether that cancellation
    was this watch's doing (then the request simply ends) or someone else's (server shutdown).
    """

    def __init__(self, receive):
        self.finished = False  # the last byte is on its way: a disconnect no longer matters
        self.gone = False
        self._receive = receive
        serving = asyncio.current_task()
        if serving is None:
            raise RuntimeError("a Watch is made by the task that serves the request")
        self._serving = serving
        self._task = asyncio.ensure_future(self._wait())

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self.finished:
            self.gone = True
            self._serving.cancel()

    def swallow(self) -> bool:
        return self.gone and self._serving.uncancel() == 0

    def stop(self) -> None:
        self._task.cancel()
