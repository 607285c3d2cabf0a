"""A scriptable mock upstream LLM provider for end-to-end tests of the relay.

`MockUpstream` serves the OpenAI API (chat completions, legacy completions, embeddings, models,
moderations, Jina's rerank, the Responses API with its stored responses) and the Anthropic
Messages API over real loopback HTTP, from an aiohttp server running in a background thread.
Tests point a relay channel at `MockUpstream.url`, queue behaviours with `script()` (errors,
delays, broken streams, ...) and then inspect what the relay sent (`requests`) and how each
stream ended (`events`).

Answers are deterministic: every content delta carries the behaviour's `text` ("hello " by
default), a non-stream answer is the concatenation of `chunks` deltas, and usage reports 11
prompt tokens plus one completion token per delta unless the behaviour overrides it. Like the
real APIs, the mock honours the request's `n` / `best_of` and its output limit (`max_tokens`,
`max_completion_tokens`); a request that asks for neither gets exactly the answers above.

It can also play a hostile or broken upstream: malformed bytes (`raw_stream`, `raw_body`), any
usage values, error bodies of any shape, and requests that are never answered (`hang`), with
`cancelled` and `open_requests` showing whether the client gave up on them.

The module has no Django imports so that it can also run on its own (see
tests/test_mock_upstream.py). Import the `mock_upstream` fixture into a conftest to use it.

PYTEST_DONT_REWRITE: this module holds no assertions, and the marker spares the "already
imported, cannot be rewritten" warning when it is both imported and loaded as a plugin.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import functools
import itertools
import json
import struct
import threading
import time
from collections import deque
from typing import Any, Self

import pytest
from aiohttp import web

from tests import mock_media

DEFAULT_KEY = "upstream-test-key"
PROMPT_TOKENS = 11
EMBEDDING_DIMENSIONS = 8
TOOL_ARGUMENTS = '{"city": "Paris"}'
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-5")

# How often a waiting handler looks whether its client has hung up (aiohttp does not cancel
# handlers on disconnect, so the mock watches the transport itself).
POLL_SECONDS = 0.01
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

# Where the recording middleware leaves the parsed JSON body for the endpoint handlers, and
# when the request arrived.
REQUEST_JSON = web.RequestKey("request_json", object)
REQUEST_STARTED = web.RequestKey("request_started", float)

BEHAVIOUR_KEYS = frozenset(
    {
        "status",
        "error",
        "delay",
        "chunks",
        "chunk_delay",
        "cut_after",
        "drop",
        "usage",
        "text",
        "no_usage",
        "set_cookie",
        "long",
        "raw_stream",
        "raw_body",
        "service_tier",
        "hang",
        "hang_after_headers",
        "error_message",
        "error_body",
        "images",  # tests/mock_media: images answered, audio length reported
        "seconds",
    }
)

# (type, code) of the OpenAI error body for a status; other 4xx fall back to
# invalid_request_error and 5xx to server_error, as the real API does.
OPENAI_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}

ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_error_body(status: int, message: str, **overrides: Any) -> dict:
    """An OpenAI-format error body for `status`; `overrides` replace fields of the error."""
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    error_type, code = OPENAI_ERRORS.get(status, (default_type, None))
    error = {"message": message, "type": error_type, "param": None, "code": code}
    error.update(overrides)
    return {"error": error}


def anthropic_error_body(status: int, message: str, request_id: str, **overrides: Any) -> dict:
    """An Anthropic-format error body for `status`; `overrides` replace fields of the error."""
    default_type = "api_error" if status >= 500 else "invalid_request_error"
    error = {"type": ANTHROPIC_ERRORS.get(status, default_type), "message": message}
    error.update(overrides)
    return {"type": "error", "error": error, "request_id": request_id}


GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def gemini_error_body(status: int, message: str, **overrides: Any) -> dict:
    """A Gemini-format error body for `status`; `overrides` replace fields of the error."""
    default = "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"
    error = {"code": status, "message": message, "status": GEMINI_STATUSES.get(status, default)}
    error.update(overrides)
    return {"error": error}


def gemini_tool(body: dict) -> str | None:
    """The function to call when the last turn is the user's and mentions the weather (as
    `requested_tool` does for the other formats), or None."""
    tools = body.get("tools") or []
    contents = body.get("contents") or []
    if not tools or not contents or not isinstance(contents[-1], dict):
        return None
    last = contents[-1]
    text = " ".join(
        part.get("text", "") for part in last.get("parts") or [] if isinstance(part, dict)
    )
    if last.get("role", "user") != "user" or "weather" not in text.lower():
        return None
    declarations = tools[0].get("functionDeclarations") or tools[0].get("function_declarations")
    return declarations[0]["name"] if declarations else None


def split_evenly(text: str, parts: int) -> list[str]:
    """Split `text` into exactly `parts` consecutive pieces (trailing ones may be empty)."""
    size, extra = divmod(len(text), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(parts)]


def _message_text(content: Any) -> str:
    """Plain text of a message's content, given as a string or as a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def requested_tool(body: dict, provider: str) -> str | None:
    """Name of the tool to call, or None when the answer should be plain text.

    The mock calls the first tool when the conversation ends with a user message mentioning
    "weather". Requiring the *last* message to be that user message means that once the client
    sends the tool result back (an OpenAI "tool" message, or an Anthropic user message made only
    of tool_result blocks), the mock answers with text instead of calling the tool forever.
    """
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    if not tools or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user" or "weather" not in _message_text(last.get("content")).lower():
        return None
    first = tools[0]
    return first.get("function", {}).get("name") if provider == "openai" else first.get("name")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def output_plan(body: dict, behaviour: dict, provider: str) -> tuple[int, int]:
    """(deltas the behaviour would produce, deltas produced under the request's output limit).

    One delta is one completion token. The limit is the smallest integer among OpenAI's
    `max_tokens` and `max_completion_tokens` (Anthropic: `max_tokens`); only a limit below the
    planned deltas changes anything, so requests with a larger limit or none are answered as
    before.
    """
    planned = behaviour.get("chunks", behaviour.get("long", 3))
    names = ("max_tokens",) if provider == "anthropic" else ("max_tokens", "max_completion_tokens")
    limits = [body[name] for name in names if _is_count(body.get(name))]
    if limits and min(limits) < planned:
        return planned, max(min(limits), 0)
    return planned, planned


def choice_count(body: dict, name: str) -> int:
    """The request's `n` (or `best_of`) when it is an integer above 1, else 1."""
    value = body.get(name)
    return value if _is_count(value) and value > 1 else 1


def tool_argument_pieces(planned: int, produced: int) -> list[str]:
    """TOOL_ARGUMENTS split over the planned deltas, keeping the ones produced."""
    return split_evenly(TOOL_ARGUMENTS, max(planned, 1))[:produced]


def openai_usage(completion_tokens: int, override: Any, details: bool = True) -> Any:
    """OpenAI usage; `override` replaces fields, total_tokens follows unless overridden too.

    Override values pass through untouched, whatever their type; total_tokens is added only
    when both counts are numbers. An override that is not a dict replaces the whole usage.
    """
    if not isinstance(override, dict):
        return override
    usage: dict[str, Any] = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion_tokens}
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0}
    usage.update(override)
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if "total_tokens" not in usage and _is_number(prompt) and _is_number(completion):
        usage["total_tokens"] = prompt + completion
    return usage


def anthropic_usage(output_tokens: int, override: Any, service_tier: Any = None) -> Any:
    """Anthropic usage (cache tokens are separate from input_tokens); `override` replaces fields.

    Override values pass through untouched; an override that is not a dict replaces the whole
    usage. Anthropic reports the service tier inside usage.
    """
    if not isinstance(override, dict):
        return override
    usage = {
        "input_tokens": PROMPT_TOKENS,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if service_tier is not None:
        usage["service_tier"] = service_tier
    usage.update(override)
    return usage


def embedding_vector(index: int) -> list[float]:
    """A deterministic vector; multiples of 1/8 survive the float32 base64 round trip exactly."""
    return [(index + j) / 8 for j in range(EMBEDDING_DIMENSIONS)]


def sse_data(payload: Any) -> bytes:
    """An OpenAI-style SSE frame (data line only)."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def sse_event(payload: dict) -> bytes:
    """An Anthropic-style SSE frame: the event name repeats the payload's type."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


class MockUpstream:
    """A mock OpenAI + Anthropic upstream on 127.0.0.1, served from a background thread.

    Each API request (after the key check and request validation) consumes the next scripted
    behaviour, or the default success behaviour when the script is empty. Behaviour keys:

    - ``status``: answer this HTTP error status with a provider-format error body;
      ``error`` (dict) overrides fields of that error, e.g. OpenAI's out-of-credit 429 is
      ``{"status": 429, "error": {"type": "insufficient_quota", "code": "insufficient_quota"}}``;
      ``error_message`` is the error's message text (anything: a key, a URL, ...);
      ``error_body`` is sent instead as the exact JSON body, any JSON value
      (``{"error": "boom"}``, ``{"error": {"message": {"nested": 1}}}``, ``None``).
    - ``delay``: seconds to wait before answering at all.
    - ``drop``: close the connection without any response.
    - ``hang``: accept the request and never answer, until the client closes the connection;
      ``hang_after_headers``: send 200 and SSE headers, then nothing. `reset()` closes any
      request still hanging, so one test's leftovers cannot reach the next.
    - ``chunks`` (or ``long``): number of content deltas, one completion token each (default
      3); ``text``: what each delta carries (default "hello "). A request's ``n`` (and, for
      completions, ``best_of``) gives ``n`` choices, each with the whole text (a stream sends
      every choice's chunk at each step); the request's output limit (OpenAI ``max_tokens`` /
      ``max_completion_tokens``, Anthropic ``max_tokens``), when smaller, cuts each choice to
      that many deltas and ends it with finish_reason "length" / stop_reason "max_tokens".
    - ``usage``: provider-native usage fields to report instead, passed through untouched
      whatever their values (negative, huge, strings, nested details); a non-dict replaces the
      whole usage. Without it, completion tokens are deltas per choice x max(n, best_of). In an
      Anthropic stream, message_start carries the whole usage and message_delta the output
      count plus every overridden field (cumulative, as the real API sends them).
    - ``service_tier``: reported in the answer (OpenAI: top level of the answer and of every
      chunk; Anthropic: inside usage).
    - ``chunk_delay``: seconds between stream deltas (default 0).
    - ``cut_after``: in a stream, close the TCP connection after this many deltas (at most
      ``chunks``), before the finishing frames, so the client sees a broken stream.
    - ``raw_stream``: a list of byte strings sent as exactly that body (200,
      text/event-stream), one write each, paced by ``chunk_delay`` and cuttable by
      ``cut_after``; ``raw_body``: bytes sent as exactly that 200 JSON body. A behaviour with
      both answers a streaming request with ``raw_stream`` and any other with ``raw_body``;
      with one, every request gets that one.

    Besides `requests` (every request, with its JSON body) and `events` (how each stream
    ended), `cancelled` lists every request whose client hung up before the mock had finished
    answering it (during a delay, a hang or a stream), as ``{"path", "at", "after"}`` with
    `time.monotonic()` at the moment it noticed and the seconds since the request arrived;
    `open_requests` counts the requests being answered right now.
    """

    def __init__(self, keys: set[str] | frozenset[str] = frozenset({DEFAULT_KEY})) -> None:
        self.keys = set(keys)
        self.requests: list[dict] = []
        self.events: list[dict] = []
        self.auth_failures: list[dict] = []
        self.cancelled: list[dict] = []
        self.open_requests = 0
        self.stored_responses: dict[str, dict] = {}  # Responses API answers kept, by id
        self.uploads: list[dict] = []  # multipart forms received (tests/mock_media.read_form)
        self._generation = 0  # moved by reset(), which ends requests still hanging
        self._script: deque[dict] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind a free loopback port and serve from a daemon thread with its own event loop."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mock-upstream", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Shut the server down and end its thread."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = self._runner = self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL without a path; clients append "/v1/chat/completions" and the like."""
        if self._port is None:
            raise RuntimeError("MockUpstream is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    async def _serve(self) -> None:
        app = web.Application(
            middlewares=[self._record_request],
            # Base64 images make large bodies; the real APIs take tens of MB.
            client_max_size=100 * 1024 * 1024,
        )
        app.router.add_post("/v1/chat/completions", self._endpoint("openai", self._chat))
        app.router.add_post("/v1/completions", self._endpoint("openai", self._completions))
        app.router.add_post("/v1/embeddings", self._endpoint("openai", self._embeddings))
        app.router.add_get("/v1/models", self._endpoint("openai", self._models))
        app.router.add_post("/v1/messages", self._endpoint("anthropic", self._messages))
        # Gemini: /v1beta/models/{model}:generateContent and :streamGenerateContent
        app.router.add_post("/v1beta/models/{target}", self._endpoint("gemini", self._gemini))
        app.router.add_post("/v1/responses", self._endpoint("openai", self._responses))
        for path, answer in (
            ("/v1/images/generations", mock_media.images),
            ("/v1/images/edits", mock_media.images),
            ("/v1/images/variations", mock_media.images),
            ("/v1/audio/speech", mock_media.speech),
            ("/v1/audio/transcriptions", mock_media.transcription),
            ("/v1/audio/translations", mock_media.transcription),
        ):
            app.router.add_post(path, self._endpoint("openai", functools.partial(answer, self)))
        app.router.add_post("/v1/moderations", self._endpoint("openai", self._moderations))
        app.router.add_post("/v1/rerank", self._endpoint("openai", self._rerank))
        app.router.add_get("/v1/responses/{id}", self._endpoint("openai", self._stored_response))
        app.router.add_delete("/v1/responses/{id}", self._endpoint("openai", self._stored_response))
        app.router.add_post(
            "/v1/responses/{id}/cancel", self._endpoint("openai", self._stored_response)
        )
        # A short shutdown timeout: a test may stop the server while a slow stream is running.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    # -- scripting and inspection --------------------------------------------------------------

    def script(self, *behaviours: dict) -> Self:
        """Queue behaviours, consumed one per API request in order (see the class docstring)."""
        for behaviour in behaviours:
            unknown = set(behaviour) - BEHAVIOUR_KEYS
            if unknown:
                raise ValueError(f"unknown behaviour keys: {sorted(unknown)}")
            if {"error_message", "error_body"} & set(behaviour) and "status" not in behaviour:
                raise ValueError("error_message and error_body need a status")
            raw_stream = behaviour.get("raw_stream", [])
            if not isinstance(raw_stream, list | tuple) or not all(
                isinstance(piece, bytes) for piece in raw_stream
            ):
                raise ValueError("raw_stream must be a list of bytes")
            if not isinstance(behaviour.get("raw_body", b""), bytes):
                raise ValueError("raw_body must be bytes")
        with self._lock:
            self._script.extend(behaviours)
        return self

    def reset(self) -> None:
        """Forget recorded requests, events, cancellations and auth failures, empty the script
        and close the connection of any request still hanging."""
        with self._lock:
            self.requests.clear()
            self.events.clear()
            self.auth_failures.clear()
            self.cancelled.clear()
            self.stored_responses.clear()
            self.uploads.clear()
            self._script.clear()
            self._generation += 1

    def wait_for_events(self, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """Wait until `count` stream outcomes are recorded and return them all.

        A stream's outcome is recorded by the server thread when it notices the end, which can
        be slightly after the client saw it (e.g. the next write after a client disconnect).
        """
        return self._wait_for(self.events, "stream events", count, timeout)

    def wait_for_cancelled(self, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """Wait until `count` requests are recorded as given up by their client; return them all.

        The server thread notices a hang-up within POLL_SECONDS while waiting, or at its next
        write while streaming.
        """
        return self._wait_for(self.cancelled, "cancelled requests", count, timeout)

    @staticmethod
    def _wait_for(records: list[dict], what: str, count: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(records) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(records)} {what} after {timeout}s")
            time.sleep(0.01)
        return list(records)

    def _next_behaviour(self) -> dict:
        with self._lock:
            return self._script.popleft() if self._script else {}

    # -- request plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _record_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record every request, including ones to unknown paths, and count it while open."""
        request[REQUEST_STARTED] = time.monotonic()
        with self._lock:
            self.open_requests += 1
        try:
            try:
                # A form (an upload) is read as a stream by its endpoint (tests/mock_media).
                form = request.content_type == "multipart/form-data"
                body = await request.json() if request.body_exists and not form else None
            except ValueError:
                body = None
            request[REQUEST_JSON] = body
            entry = {
                "method": request.method,
                "path": request.path,
                "headers": {name.lower(): value for name, value in request.headers.items()},
                "json": body,
                "query": dict(request.query),
            }
            with self._lock:
                self.requests.append(entry)
            return await handler(request)
        finally:
            with self._lock:
                self.open_requests -= 1

    def _endpoint(self, provider: str, answer: Any) -> Any:
        """Wrap an answer function with key check, validation and the scripted behaviour."""

        async def handler(request: web.Request) -> web.StreamResponse:
            body = request[REQUEST_JSON] if isinstance(request[REQUEST_JSON], dict) else {}
            key = self._presented_key(request, provider)
            if key not in self.keys:
                with self._lock:
                    self.auth_failures.append({"path": request.path, "key": key})
                message = (
                    "Incorrect API key provided." if provider == "openai" else "invalid x-api-key"
                )
                return self._error(provider, 401, message)
            if provider == "anthropic" and "max_tokens" not in body:
                return self._error(provider, 400, "max_tokens: Field required")

            behaviour = self._next_behaviour()
            # Taken now: a test may call reset() as soon as hang_after_headers' headers arrive.
            generation = self._generation
            if behaviour.get("delay"):
                if not await self._wait_while_connected(request, behaviour["delay"]):
                    self._record_cancelled(request)
                    return web.Response()  # dropped quietly, as after "drop" below
            if behaviour.get("drop"):
                self._close_connection(request)
                # aiohttp notices the closed transport when writing this and drops it quietly.
                return web.Response()
            if behaviour.get("hang"):
                return await self._hang(request, web.Response(), generation)
            if behaviour.get("hang_after_headers"):
                response = web.StreamResponse(headers=SSE_HEADERS)
                await response.prepare(request)  # a StreamResponse sends its headers at once
                return await self._hang(request, response, generation)
            if "status" in behaviour:
                status = behaviour["status"]
                if "error_body" in behaviour:
                    return self._raw_error(provider, status, behaviour["error_body"])
                return self._error(
                    provider,
                    status,
                    behaviour.get("error_message", f"Mock upstream scripted error {status}."),
                    behaviour.get("error", {}),
                )
            if "raw_stream" in behaviour and (body.get("stream") or "raw_body" not in behaviour):
                return await self._stream(request, behaviour, [], list(behaviour["raw_stream"]), [])
            if "raw_body" in behaviour:
                return web.Response(body=behaviour["raw_body"], content_type="application/json")
            return await answer(request, body, behaviour)

        return handler

    @staticmethod
    def _presented_key(request: web.Request, provider: str) -> str | None:
        """The API key the client sent, from the header its provider uses.

        Anthropic documents `x-api-key`, but the installed anthropic SDK (2.x) sends the key as
        `Authorization: Bearer`, so /v1/messages accepts either; `requests` shows which came.
        """
        if provider == "anthropic" and "x-api-key" in request.headers:
            return request.headers["x-api-key"]
        if provider == "gemini":  # x-goog-api-key, or ?key= in the URL
            return request.headers.get("x-goog-api-key") or request.query.get("key")
        header = request.headers.get("Authorization", "")
        return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None

    def _error(
        self, provider: str, status: int, message: str, overrides: dict | None = None
    ) -> web.Response:
        overrides = dict(overrides or {})
        message = overrides.pop("message", message)
        if provider == "openai":
            return web.json_response(openai_error_body(status, message, **overrides), status=status)
        if provider == "gemini":
            return web.json_response(gemini_error_body(status, message, **overrides), status=status)
        request_id = f"req_mock{next(self._ids)}"
        body = anthropic_error_body(status, message, request_id, **overrides)
        return web.json_response(body, status=status, headers={"request-id": request_id})

    def _raw_error(self, provider: str, status: int, body: Any) -> web.Response:
        headers = {} if provider == "openai" else {"request-id": f"req_mock{next(self._ids)}"}
        return web.Response(
            text=json.dumps(body), status=status, content_type="application/json", headers=headers
        )

    @staticmethod
    def _client_gone(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def _wait_while_connected(self, request: web.Request, seconds: float) -> bool:
        """Sleep `seconds`, waking early if the client hangs up; False when it did."""
        deadline = time.monotonic() + seconds
        while not self._client_gone(request):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(remaining, POLL_SECONDS))
        return False

    async def _hang(
        self, request: web.Request, response: web.StreamResponse, generation: int
    ) -> web.StreamResponse:
        """Answer nothing more until the client hangs up (recorded) or `reset()` moves
        `_generation` past `generation`."""
        while not self._client_gone(request):
            if self._generation != generation:
                self._close_connection(request)
                return response
            await asyncio.sleep(POLL_SECONDS)
        self._record_cancelled(request)
        return response

    def _record_cancelled(self, request: web.Request) -> None:
        now = time.monotonic()
        entry = {"path": request.path, "at": now, "after": now - request[REQUEST_STARTED]}
        with self._lock:
            self.cancelled.append(entry)

    @staticmethod
    def _close_connection(request: web.Request) -> None:
        # close() (not abort()) flushes what was already written, so the client receives the
        # deltas sent so far and then sees the connection end mid-response.
        if request.transport is not None:
            request.transport.close()

    async def _stream(
        self,
        request: web.Request,
        behaviour: dict,
        head: list[bytes],
        deltas: list[bytes],
        tail: list[bytes],
    ) -> web.StreamResponse:
        """Send SSE frames: `head`, then `deltas` (paced and cuttable), then `tail`.

        Records the outcome in `events`, and a client that hung up in `cancelled`. A client
        disconnect surfaces as ConnectionResetError on the next write (aiohttp does not cancel
        handlers by default) or is seen during `chunk_delay`, or as CancelledError if the
        handler is cancelled, e.g. on server shutdown.
        """
        resp = web.StreamResponse(headers=SSE_HEADERS)
        cut_after = behaviour.get("cut_after")
        chunk_delay = behaviour.get("chunk_delay", 0)
        sent = 0
        completed = client_gone = False
        try:
            await resp.prepare(request)
            for frame in head:
                await resp.write(frame)
            for frame in deltas[:cut_after]:
                if sent and chunk_delay:
                    if not await self._wait_while_connected(request, chunk_delay):
                        raise ConnectionResetError("the client hung up during chunk_delay")
                await resp.write(frame)
                sent += 1
            if cut_after is not None and cut_after <= len(deltas):
                self._close_connection(request)
                return resp
            for frame in tail:
                await resp.write(frame)
            await resp.write_eof()
            completed = True
        except ConnectionError:  # reset, or "Connection lost" while a write waited to drain
            client_gone = True
            self._record_cancelled(request)
        except asyncio.CancelledError:
            client_gone = True
            raise
        finally:
            event = {
                "path": request.path,
                "completed": completed,
                "client_gone": client_gone,
                "deltas_sent": sent,
            }
            with self._lock:
                self.events.append(event)
        return resp

    # -- OpenAI ----------------------------------------------------------------------------------

    async def _chat(self, request: web.Request, body: dict, behaviour: dict) -> web.StreamResponse:
        planned, produced = output_plan(body, behaviour, "openai")
        choices = choice_count(body, "n")
        text = behaviour.get("text", "hello ")
        tool = requested_tool(body, "openai")
        usage = openai_usage(produced * choices, behaviour.get("usage", {}))
        if produced < planned:
            finish_reason = "length"
        else:
            finish_reason = "tool_calls" if tool else "stop"
        base = {
            "id": f"chatcmpl-mock{next(self._ids)}",
            "created": int(time.time()),
            "model": body.get("model", "mock-model"),
        }
        if "service_tier" in behaviour:
            base["service_tier"] = behaviour["service_tier"]
        pieces = tool_argument_pieces(planned, produced) if tool else []

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text * produced}
            if tool:
                message["content"] = None
                message["tool_calls"] = [
                    {
                        "id": "call_mock1",
                        "type": "function",
                        "function": {"name": tool, "arguments": "".join(pieces)},
                    }
                ]
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": index,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                    for index in range(choices)
                ],
                "usage": usage,
            }
            if behaviour.get("no_usage"):  # an OpenAI-compatible upstream that reports none
                del answer["usage"]
            response = web.json_response(answer)
            if behaviour.get("set_cookie"):  # e.g. a CDN's session cookie in front of the API
                response.set_cookie("session", behaviour["set_cookie"])
            return response

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        include_usage = include_usage and not behaviour.get("no_usage")

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            """One frame per choice, sent together: one step of every choice."""
            frames = []
            for index in range(choices):
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                payload = {**base, "object": "chat.completion.chunk", "choices": [choice]}
                if include_usage:
                    # The real API sends "usage": null on every chunk but the last in this mode.
                    payload["usage"] = None
                frames.append(sse_data(payload))
            return b"".join(frames)

        if tool:
            opening = {
                "index": 0,
                "id": "call_mock1",
                "type": "function",
                "function": {"name": tool, "arguments": ""},
            }
            head = [chunk({"role": "assistant", "content": None, "tool_calls": [opening]})]
            deltas = [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in pieces
            ]
        else:
            head = [chunk({"role": "assistant", "content": ""})]
            deltas = [chunk({"content": text}) for _ in range(produced)]
        tail = [chunk({}, finish_reason)]
        if include_usage:
            tail.append(
                sse_data({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            )
        tail.append(sse_data("[DONE]"))
        return await self._stream(request, behaviour, head, deltas, tail)

    async def _completions(
        self, request: web.Request, body: dict, behaviour: dict
    ) -> web.StreamResponse:
        planned, produced = output_plan(body, behaviour, "openai")
        choices = choice_count(body, "n")
        # best_of candidates are generated (and billed) upstream; only n come back.
        generated = max(choices, choice_count(body, "best_of"))
        text = behaviour.get("text", "hello ")
        usage = openai_usage(produced * generated, behaviour.get("usage", {}), details=False)
        finish_reason = "length" if produced < planned else "stop"
        base = {
            "id": f"cmpl-mock{next(self._ids)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "mock-model"),
        }
        if "service_tier" in behaviour:
            base["service_tier"] = behaviour["service_tier"]

        def choice(piece: str, finish: str | None, index: int) -> dict:
            return {"text": piece, "index": index, "logprobs": None, "finish_reason": finish}

        if not body.get("stream"):
            answers = [choice(text * produced, finish_reason, index) for index in range(choices)]
            return web.json_response({**base, "choices": answers, "usage": usage})

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(piece: str, finish: str | None = None) -> bytes:
            frames = []
            for index in range(choices):
                payload = {**base, "choices": [choice(piece, finish, index)]}
                if include_usage:
                    payload["usage"] = None
                frames.append(sse_data(payload))
            return b"".join(frames)

        deltas = [chunk(text) for _ in range(produced)]
        tail = [chunk("", finish_reason)]
        if include_usage:
            tail.append(sse_data({**base, "choices": [], "usage": usage}))
        tail.append(sse_data("[DONE]"))
        return await self._stream(request, behaviour, [], deltas, tail)

    async def _embeddings(self, request: web.Request, body: dict, behaviour: dict) -> web.Response:
        raw = body.get("input", "")
        # One input is a string or a token array; a batch is a list of those.
        single = isinstance(raw, str) or (
            isinstance(raw, list) and all(isinstance(item, int) for item in raw)
        )
        inputs = [raw] if single else list(raw)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index in range(len(inputs)):
            vector: Any = embedding_vector(index)
            if as_base64:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                vector = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": vector})
        usage = {"prompt_tokens": PROMPT_TOKENS, **behaviour.get("usage", {})}
        usage.setdefault("total_tokens", usage["prompt_tokens"])
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "mock-embedding"),
                "usage": usage,
            }
        )

    async def _models(self, request: web.Request, body: dict, behaviour: dict) -> web.Response:
        models = [
            {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "mock"}
            for model_id in MODEL_IDS
        ]
        return web.json_response({"object": "list", "data": models})

    # -- Anthropic -------------------------------------------------------------------------------

    async def _messages(
        self, request: web.Request, body: dict, behaviour: dict
    ) -> web.StreamResponse:
        planned, produced = output_plan(body, behaviour, "anthropic")
        text = behaviour.get("text", "hello ")
        tool = requested_tool(body, "anthropic")
        override = behaviour.get("usage", {})
        usage = anthropic_usage(produced, override, behaviour.get("service_tier"))
        if produced < planned:
            stop_reason = "max_tokens"
        else:
            stop_reason = "tool_use" if tool else "end_turn"
        message = {
            "id": f"msg_mock{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "mock-model"),
        }

        if not body.get("stream"):
            if tool:
                block = {
                    "type": "tool_use",
                    "id": "toolu_mock1",
                    "name": tool,
                    # Arguments cut by the limit are not JSON; the block then holds none.
                    "input": json.loads(TOOL_ARGUMENTS) if produced == planned else {},
                }
            else:
                block = {"type": "text", "text": text * produced}
            return web.json_response(
                {
                    **message,
                    "content": [block],
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )

        if isinstance(usage, dict):
            start_usage = {**usage, "output_tokens": 1}
            # message_delta counts are cumulative: the output count, and any overridden field.
            delta_usage = {"output_tokens": usage["output_tokens"]}
            delta_usage.update({name: usage[name] for name in override})
        else:
            start_usage = delta_usage = usage
        if tool:
            opening = {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {}}
            pieces = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in tool_argument_pieces(planned, produced)
            ]
        else:
            opening = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": text} for _ in range(produced)]
        head = [
            sse_event(
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                }
            ),
            sse_event({"type": "content_block_start", "index": 0, "content_block": opening}),
            sse_event({"type": "ping"}),
        ]
        deltas = [
            sse_event({"type": "content_block_delta", "index": 0, "delta": piece})
            for piece in pieces
        ]
        tail = [
            sse_event({"type": "content_block_stop", "index": 0}),
            sse_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": delta_usage,
                }
            ),
            sse_event({"type": "message_stop"}),
        ]
        return await self._stream(request, behaviour, head, deltas, tail)

    # -- OpenAI Responses ------------------------------------------------------------------------

    async def _responses(
        self, request: web.Request, body: dict, behaviour: dict
    ) -> web.StreamResponse:
        """The Responses API: the output limit is ``max_output_tokens``; a user message about
        the weather, with tools, is answered by a call of the first tool. Answers made with
        ``store`` left on are kept for ``GET /v1/responses/{id}``."""
        planned = behaviour.get("chunks", behaviour.get("long", 3))
        limit = body.get("max_output_tokens")
        produced = min(planned, limit) if _is_count(limit) else planned
        text = behaviour.get("text", "hello ")
        tool = responses_tool(body)
        override = behaviour.get("usage", {})
        usage: Any = override
        if isinstance(override, dict):
            usage = {
                "input_tokens": PROMPT_TOKENS,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": produced,
                "output_tokens_details": {"reasoning_tokens": 0},
                **override,
            }
            if _is_number(usage.get("input_tokens")) and _is_number(usage.get("output_tokens")):
                usage.setdefault("total_tokens", usage["input_tokens"] + usage["output_tokens"])
        number = next(self._ids)
        status = "incomplete" if produced < planned else "completed"
        if tool:
            pieces = tool_argument_pieces(planned, produced)
            item: dict[str, Any] = {
                "type": "function_call",
                "id": f"fc_mock{number}",
                "call_id": "call_mock1",
                "name": tool,
                "arguments": "".join(pieces),
                "status": "completed",
            }
        else:
            pieces = [text] * produced
            item = {
                "type": "message",
                "id": f"msg_mock{number}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text * produced, "annotations": []}],
            }
        response = {
            "id": f"resp_mock{number}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None if produced == planned else {"reason": "max_output_tokens"},
            "instructions": body.get("instructions"),
            "max_output_tokens": limit,
            "model": body.get("model", "mock-model"),
            "output": [item],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "usage": usage,
        }
        if response["store"]:
            self.stored_responses[response["id"]] = response
        if not body.get("stream"):
            return web.json_response(response)

        def event(kind: str, **fields: Any) -> tuple[str, dict]:
            return kind, fields

        sequence = itertools.count()

        def frames(events: list[tuple[str, dict]]) -> list[bytes]:
            """The events framed, numbered in the order they are sent (as the real API)."""
            framed = []
            for kind, fields in events:
                payload = {"type": kind, "sequence_number": next(sequence), **fields}
                framed.append(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())
            return framed

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        where = {"item_id": item["id"], "output_index": 0}
        if tool:
            opening = {**item, "arguments": "", "status": "in_progress"}
            deltas = [
                event("response.function_call_arguments.delta", **where, delta=piece)
                for piece in pieces
            ]
            closing = [
                event(
                    "response.function_call_arguments.done",
                    **where,
                    name=tool,
                    arguments=item["arguments"],
                )
            ]
            parts = []
        else:
            opening = {**item, "content": [], "status": "in_progress"}
            empty = {"type": "output_text", "text": "", "annotations": []}
            parts = [event("response.content_part.added", **where, content_index=0, part=empty)]
            deltas = [
                event(
                    "response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[]
                )
                for piece in pieces
            ]
            whole = item["content"][0]
            closing = [
                event(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=whole["text"],
                    logprobs=[],
                ),
                event("response.content_part.done", **where, content_index=0, part=whole),
            ]
        head = [
            event("response.created", response=started),
            event("response.in_progress", response=started),
            event("response.output_item.added", output_index=0, item=opening),
            *parts,
        ]
        final = "response.completed" if status == "completed" else "response.incomplete"
        tail = [
            *closing,
            event("response.output_item.done", output_index=0, item=item),
            event(final, response=response),
        ]
        head, deltas, tail = frames(head), frames(deltas), frames(tail)
        return await self._stream(request, behaviour, head, deltas, tail)

    async def _stored_response(
        self, request: web.Request, body: dict, behaviour: dict
    ) -> web.Response:
        """A stored response read back, deleted, or (not being a background one) refused a
        cancel, as the real API does."""
        response = self.stored_responses.get(request.match_info["id"])
        if response is None:
            message = f"Response with id '{request.match_info['id']}' not found."
            return self._error("openai", 404, message)
        if request.path.endswith("/cancel"):
            return self._error("openai", 400, "Only background responses can be cancelled.")
        if request.method == "DELETE":
            del self.stored_responses[response["id"]]
            return web.json_response({"id": response["id"], "object": "response", "deleted": True})
        return web.json_response(response)

    # -- Moderations and rerank --------------------------------------------------------------------

    async def _moderations(self, request: web.Request, body: dict, behaviour: dict) -> web.Response:
        """One result per input (a string, strings, or typed parts judged together); an input
        that mentions "kill" is flagged for violence. No usage, as the real API."""
        raw = body.get("input", "")
        if isinstance(raw, list) and raw and all(isinstance(part, dict) for part in raw):
            inputs = [" ".join(part.get("text", "") for part in raw)]
        else:
            inputs = [raw] if isinstance(raw, str) else [str(item) for item in raw]
        results = []
        for text in inputs:
            violent = "kill" in text.lower()
            categories = {name: False for name in MODERATION_CATEGORIES}
            categories["violence"] = violent
            results.append(
                {
                    "flagged": violent,
                    "categories": categories,
                    "category_scores": {
                        name: (0.9 if flagged else 0.001) for name, flagged in categories.items()
                    },
                    "category_applied_input_types": {
                        name: ["text"] for name in MODERATION_CATEGORIES
                    },
                }
            )
        return web.json_response(
            {
                "id": f"modr-mock{next(self._ids)}",
                "model": body.get("model", "omni-moderation-latest"),
                "results": results,
            }
        )

    async def _rerank(self, request: web.Request, body: dict, behaviour: dict) -> web.Response:
        """Jina's shape: results by relevance (the earlier document scores higher), ``top_n``
        of them, documents echoed unless ``return_documents`` is false, and
        ``usage.total_tokens`` (PROMPT_TOKENS per document unless overridden). With
        ``no_usage``, Cohere's shape: no usage, ``meta.billed_units.search_units`` instead."""
        documents = body.get("documents") or []
        top_n = body.get("top_n")
        count = min(top_n, len(documents)) if _is_count(top_n) else len(documents)
        results = []
        for index in range(count):
            result: dict[str, Any] = {"index": index, "relevance_score": 1 / (index + 1)}
            if body.get("return_documents", True):
                document = documents[index]
                result["document"] = {"text": document} if isinstance(document, str) else document
            results.append(result)
        answer: dict[str, Any] = {"model": body.get("model", "mock-reranker"), "results": results}
        if behaviour.get("no_usage"):
            answer["id"] = f"rerank-mock{next(self._ids)}"
            answer["meta"] = {"billed_units": {"search_units": 1}}
        else:
            usage = behaviour.get("usage", {})
            answer["usage"] = (
                {"total_tokens": PROMPT_TOKENS * len(documents), **usage}
                if isinstance(usage, dict)
                else usage
            )
        return web.json_response(answer)

    # -- Gemini ----------------------------------------------------------------------------------

    async def _gemini(
        self, request: web.Request, body: dict, behaviour: dict
    ) -> web.StreamResponse:
        """generateContent and streamGenerateContent (SSE with ?alt=sse, else one JSON array).

        The output limit is generationConfig.maxOutputTokens, the number of candidates its
        candidateCount; usage is usageMetadata (11 prompt tokens, one candidate token per
        delta), every stream chunk carrying the counts so far and the last one the whole."""
        model, _, method = request.match_info["target"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return self._error("gemini", 404, f"Method {method!r} is not found.")
        config = body.get("generationConfig") or {}
        planned = behaviour.get("chunks", behaviour.get("long", 3))
        limit = config.get("maxOutputTokens")
        produced = min(planned, limit) if _is_count(limit) and limit < planned else planned
        count = config.get("candidateCount")
        choices = count if _is_count(count) and count > 1 else 1
        text = behaviour.get("text", "hello ")
        tool = gemini_tool(body)
        finish = "MAX_TOKENS" if produced < planned else "STOP"
        override = behaviour.get("usage", {})

        def usage(candidates: int) -> Any:
            if not isinstance(override, dict):
                return override
            figures: dict[str, Any] = {
                "promptTokenCount": PROMPT_TOKENS,
                "candidatesTokenCount": candidates,
            }
            figures.update(override)
            parts = [figures.get(name) for name in ("promptTokenCount", "candidatesTokenCount")]
            parts.append(figures.get("thoughtsTokenCount", 0))
            if "totalTokenCount" not in figures and all(_is_number(p) for p in parts):
                figures["totalTokenCount"] = sum(parts)
            return figures

        base = {"modelVersion": model, "responseId": f"mock{next(self._ids)}"}

        def candidates(parts: list[dict], finish_reason: str | None) -> list[dict]:
            made = []
            for index in range(choices):
                candidate: dict[str, Any] = {
                    "content": {"role": "model", "parts": parts},
                    "index": index,
                }
                if finish_reason:
                    candidate["finishReason"] = finish_reason
                made.append(candidate)
            return made

        call_part = {"functionCall": {"name": tool, "args": json.loads(TOOL_ARGUMENTS)}}
        if method == "generateContent":
            parts = [call_part] if tool else [{"text": text * produced}]
            answer: dict[str, Any] = {
                "candidates": candidates(parts, finish),
                "usageMetadata": usage(produced * choices),
                **base,
            }
            if behaviour.get("no_usage"):
                del answer["usageMetadata"]
            return web.json_response(answer)

        sse = request.query.get("alt") == "sse"
        chunks: list[dict] = []
        if tool:
            chunks.append({"candidates": candidates([call_part], None)})
        else:
            chunks.extend(
                {"candidates": candidates([{"text": text}], None)} for _ in range(produced)
            )
        for number, chunk in enumerate(chunks, start=1):
            chunk["usageMetadata"] = {
                "promptTokenCount": PROMPT_TOKENS,
                "candidatesTokenCount": number * choices,
                "totalTokenCount": PROMPT_TOKENS + number * choices,
            }
            chunk.update(base)
        last: dict[str, Any] = {"candidates": candidates([{"text": ""}], finish), **base}
        if not behaviour.get("no_usage"):
            last["usageMetadata"] = usage(produced * choices)

        def frame(chunk: dict, first: bool) -> bytes:
            if sse:
                return f"data: {json.dumps(chunk)}\r\n\r\n".encode()
            return (b"[" if first else b",\r\n") + json.dumps(chunk).encode()

        deltas = [frame(chunk, index == 0) for index, chunk in enumerate(chunks)]
        tail = [frame(last, not chunks)] + ([] if sse else [b"]"])
        return await self._stream(request, behaviour, [], deltas, tail)


def responses_tool(body: dict) -> str | None:
    """The first tool's name when the input ends with a user message about the weather."""
    tools = body.get("tools") or []
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not tools or not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return None
    last = items[-1]
    if last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    if "weather" not in str(content).lower():
        return None
    return tools[0].get("name")


_shared: MockUpstream | None = None


def shared_mock_upstream() -> MockUpstream:
    """The session-wide server, started on first use and stopped when the interpreter exits."""
    global _shared
    if _shared is None:
        _shared = MockUpstream().start()
        atexit.register(_shared.stop)
    return _shared


@pytest.fixture
def mock_upstream() -> MockUpstream:
    """The shared `MockUpstream`, reset so each test starts with no script and no records.

    It needs no other fixture, so a conftest only has to import this name.
    """
    server = shared_mock_upstream()
    server.reset()
    return server
