"""The ASGI entry point: the site through Django's full stack, the relay through a bare handler.

``/v1`` (and later ``/v1beta``, ``/mj``) is the hot path: it runs through ``RelayHandler``, a
Django ASGI handler with no middleware (the site's middleware is sync-adapted and would cost a
thread hop per layer on every call). The body limit is enforced here, before Django reads a
byte, and the lifespan protocol closes the shared upstream HTTP clients on shutdown, which
Django alone has no hook for.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import close_old_connections, reset_queries  # noqa: E402

from config.logging import redact_access_logs  # noqa: E402
from relay import errors, upstream  # noqa: E402

RELAY_PREFIXES = ("/v1/", "/v1beta/")


class RelayHandler(ASGIHandler):
    """Django's ASGI handler for the relay paths, with an empty middleware chain."""

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)


def keep_connection_housekeeping_on_the_site() -> None:
    """Let Django's per-request connection receivers listen to the site's handler only.

    The relay hands each connection back right after its burst of queries (relay.database);
    for it, Django's request_started / request_finished receivers would only add two
    thread-sensitive hops (a new thread, in fact) to every call.
    """
    for signal, receiver in (
        (request_started, reset_queries),
        (request_started, close_old_connections),
        (request_finished, close_old_connections),
    ):
        signal.disconnect(receiver)
        signal.connect(receiver, sender=ASGIHandler)


keep_connection_housekeeping_on_the_site()
redact_access_logs()
site_application = ASGIStaticFilesHandler(ASGIHandler())
relay_application = RelayHandler()


async def send_error(send, path: str, error: errors.RelayError) -> None:
    response = errors.render(error, api=errors.api_for_path(path))
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [(k.lower().encode(), v.encode()) for k, v in response.items()],
        }
    )
    await send({"type": "http.response.body", "body": response.content})


def body_too_large() -> errors.RelayError:
    return errors.RelayError(
        413,
        f"Request body is larger than this server accepts ({settings.RELAY_MAX_BODY_BYTES} bytes).",
        code="request_too_large",
        retry=False,
    )


async def relay_with_body_limit(scope, receive, send) -> None:
    """Refuse a body over RELAY_MAX_BODY_BYTES before it is read, then hand over to Django."""
    limit = settings.RELAY_MAX_BODY_BYTES
    headers = dict(scope.get("headers") or [])
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            too_large = True
        if too_large:
            await send_error(send, scope["path"], body_too_large())
            return
        await relay_application(scope, receive, send)
        return

    # A chunked body has no declared length: count it as it arrives and stop at the limit.
    received = 0
    exceeded = False

    async def counting_receive():
        nonlocal received, exceeded
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                exceeded = True
                return {"type": "http.disconnect"}
        return message

    response_started = False

    async def watching_send(message):
        nonlocal response_started
        response_started = True
        await send(message)

    await relay_application(scope, counting_receive, watching_send)
    if exceeded and not response_started:
        await send_error(send, scope["path"], body_too_large())


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await upstream.close_clients()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"].startswith(RELAY_PREFIXES):
        await relay_with_body_limit(scope, receive, send)
    else:
        await site_application(scope, receive, send)
