"""The relay's own ASGI front: /v1 calls without Django's request and response machinery.

Django's handler costs more per call than the rest of the relay together (bench/README.md):
a request object with lazy META, the URL resolver, signals, a response object rendered header
by header and a thread hop to close it. A relayed call needs none of that, so ``serve`` reads
the ASGI messages itself, hands a small ``Request`` to the endpoint ``ROUTES`` names and writes
the ``Response`` or ``StreamingResponse`` it returns. The site (admin, accounts) still goes
through Django's full stack (config.asgi).

Two things Django did that this keeps: the body limit (checked against Content-Length before
a byte is read, and counted for a chunked body), and watching for the client's disconnect while
the endpoint runs, which cancels the endpoint (the relay settles or releases the hold in its own
shielded step, never relying on that cancellation; see relay.proxy).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from django.conf import settings

from relay import errors
from relay.responses import Request, Response, StreamingResponse

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response | StreamingResponse]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived whole."""


class BodyTooLarge(Exception):
    pass


def internal_error() -> errors.RelayError:
    return errors.RelayError(
        500, "The server had an error while processing your request.", code="internal_error"
    )


def body_too_large() -> errors.RelayError:
    return errors.RelayError(
        413,
        f"Request body is larger than this server accepts ({settings.RELAY_MAX_BODY_BYTES} bytes).",
        code="request_too_large",
        retry=False,
    )


async def read_body(receive, declared: str | None) -> bytes:
    limit = settings.RELAY_MAX_BODY_BYTES
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            raise BodyTooLarge from None
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


async def serve(scope, receive, send, routes: dict[str, Endpoint], fallback: Endpoint) -> None:
    """Answer one ASGI HTTP request with the endpoint ``routes`` has for its path."""
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
    try:
        request.body = await read_body(receive, headers.get("content-length"))
    except ClientGone:
        return
    except BodyTooLarge:
        await write(send, errors.render(body_too_large(), api=api))
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
