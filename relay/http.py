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
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from django.conf import settings

from relay import errors
from relay.responses import Request, Response, StreamingResponse

logger = logging.getLogger(__name__)

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
    body_deadline = asyncio.get_running_loop().time() + settings.RELAY_BODY_TIMEOUT
    headers = {}
    for name, value in scope["headers"]:
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    client = scope.get("client")
    request = Request(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        peer=client[0] if client else None,
    )
    api = errors.api_for_path(request.path)
    if head_is_too_large(scope["headers"]):
        await write_and_close(send, errors.render(headers_too_large(), api=api))
        return
    limit = body_limit(headers)
    if declares_too_much(headers.get("content-length"), limit):
        await write_and_close(send, errors.render(body_too_large(limit), api=api))
        return
    if before_body is not None:
        try:
            early = await before_body(request)
        except Exception:
            logger.exception("unhandled error before the body of %s", request.path)
            early = errors.render(internal_error(), api=api)
        if early is not None:
            # A request without a body leaves nothing unread: its connection may stay open.
            await (write_and_close if has_body(headers) else write)(send, early)
            return
    try:
        async with asyncio.timeout_at(body_deadline):
            request.body = await read_body(receive, limit)
    except ClientGone:
        return
    except BodyTooLarge:
        await write_and_close(send, errors.render(body_too_large(limit), api=api))
        return
    except TimeoutError:
        await write_and_close(send, errors.render(body_too_slow(), api=api))
        return

    endpoint = routes.get(request.path.rstrip("/"), fallback)
    watch = Watch(receive)
    try:
        try:
            response = await endpoint(request)
        except Exception:  # a bug: the client still gets an answer in its API's format
            logger.exception("unhandled error in %s", request.path)
            response = errors.render(internal_error(), api=api)
        if isinstance(response, StreamingResponse):
            await stream(send, response, watch)
        else:
            watch.finished = True
            await write(send, response)
    except asyncio.CancelledError:
        if not watch.swallow():
            raise
    finally:
        watch.stop()


def _start(status: int, content_type: str, headers: dict[str, str]) -> dict:
    raw = [(b"content-type", content_type.encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http.response.start", "status": status, "headers": raw}


async def write(send, response: Response) -> None:
    start = _start(response.status, response.content_type, response.headers)
    start["headers"].append((b"content-length", str(len(response.body)).encode()))
    await send(start)
    await send({"type": "http.response.body", "body": response.body})


async def write_and_close(send, response: Response) -> None:
    """An answer given before the body was read whole: the connection closes after it, so
    the server neither drains the rest of the body nor waits for it."""
    response.headers["connection"] = "close"
    await write(send, response)


async def stream(send, response: StreamingResponse, watch: "Watch | None" = None) -> None:
    """Send a streaming response; the body iterator is closed however this ends."""
    iterating = False
    try:
        await send(_start(response.status, response.content_type, response.headers))
        iterating = True  # from the first step on, the iterator's own finally cleans up
        async for chunk in response.body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if watch is not None:
            watch.finished = True
        await send({"type": "http.response.body", "body": b""})
    finally:
        if iterating:
            await response.body.aclose()  # runs the iterator's finally if it is suspended
        else:
            await response.unsent()


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
        self._serving = asyncio.current_task()
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
