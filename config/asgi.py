"""The ASGI entry point: the site through Django's full stack, the relay through its own front.

``/v1`` (and later ``/v1beta``, ``/mj``) is the hot path: relay.http serves it straight from
the ASGI messages, without Django's request handler, middleware or URL resolver. The lifespan
protocol closes the shared upstream HTTP clients on shutdown, which Django alone has no hook
for. ``/v1/realtime`` is a WebSocket, served by relay.realtime. ``/healthz`` and ``/readyz``
(config.health) are answered here too, before either.
"""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from config import health  # noqa: E402
from config.logging import redact_access_logs  # noqa: E402
from relay import http, ready_holds, realtime, upstream, views  # noqa: E402

# Matched without regard to case, and the bare prefixes too: a near miss (/V1/chat/completions,
# /v1) gets the relay's JSON 404 or 405, never the site's HTML page.
RELAY_ROOTS = ("/v1", "/v1beta")
RELAY_PREFIXES = tuple(root + "/" for root in RELAY_ROOTS)


redact_access_logs()
site_application = ASGIStaticFilesHandler(ASGIHandler())


def settle_the_heap() -> None:
    """Move everything start-up made (Django, the models, the relay's tables: some 170,000
    objects) out of the garbage collector's sight, where nothing of it will ever be garbage.

    Otherwise every full collection walks all of it, and the process stops for 100-130 ms,
    every few seconds under load: that was the relay's p99 at one connection (bench/README.md).
    Objects made later are collected as before.
    """
    gc.collect()
    gc.freeze()


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if settings.FREEZE_HEAP_AT_START:
                settle_the_heap()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await ready_holds.give_back_all()
            await upstream.close_clients()
            await send({"type": "lifespan.shutdown.complete"})
            return


def is_relay_path(path: str) -> bool:
    path = path.lower()
    return path.startswith(RELAY_PREFIXES) or path in RELAY_ROOTS


# The tolerant forms clients produce from a base URL one /v1 off: an OpenAI or Anthropic
# client pointed at .../v1 when its SDK adds /v1 itself (/v1/v1/messages), or an OpenAI client
# pointed at the bare host (/chat/completions). Only the relay's own paths are taken without
# /v1, so no page of the site is shadowed.
DOUBLED = "/v1/v1"
BARE_PATHS = frozenset(path[len("/v1") :] for path in views.ROUTES if path.startswith("/v1/"))
BARE_PREFIXES = tuple(
    prefix[len("/v1") :] for prefix in views.ROUTES.prefixes if prefix.startswith("/v1/")
)


def relay_path(path: str) -> str | None:
    """The path the relay serves a request under (tolerant forms made canonical), or None for
    a path of the site's."""
    if is_relay_path(path):
        while path[: len(DOUBLED) + 1].lower() in (DOUBLED, DOUBLED + "/"):
            path = path[len("/v1") :]
        return path
    if path.rstrip("/") in BARE_PATHS or path.startswith(BARE_PREFIXES):
        return "/v1" + path
    return None


def is_realtime_path(path: str) -> bool:
    """/v1/realtime, in any of the tolerant forms (/v1/v1/realtime, /realtime)."""
    if not path.lower().rstrip("/").endswith("/realtime"):  # every other call: one check
        return False
    canonical = relay_path(path) or "/v1" + path
    return canonical.rstrip("/").lower() == realtime.PATH


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"] in health.PATHS:
        await health.serve(scope, receive, send)
    elif scope["type"] in ("websocket", "http") and is_realtime_path(scope["path"]):
        # A WebSocket session; a plain HTTP request there is told to upgrade (426).
        serve = realtime.serve if scope["type"] == "websocket" else realtime.refuse_http
        await serve(scope, receive, send)
    elif scope["type"] == "http" and (path := relay_path(scope["path"])) is not None:
        if path != scope["path"]:
            scope = dict(scope, path=path, raw_path=path.encode())
        await http.serve(
            scope,
            receive,
            send,
            views.ROUTES,
            views.unknown_path,
            before_body=views.before_body,
        )
    else:
        await site_application(scope, receive, send)
