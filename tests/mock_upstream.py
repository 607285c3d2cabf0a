"""A scriptable mock upstream LLM provider for end-to-end tests of the relay.

`MockUpstream` serves the OpenAI API (chat completions, legacy completions, embeddings, models)
and the Anthropic Messages API over real loopback HTTP, from an aiohttp server running in a
background thread. Tests point a relay channel at `MockUpstream.url`, queue behaviours with
`script()` (errors, delays, broken streams, ...) and then inspect what the relay sent
(`requests`) and how each stream ended (`events`).

Answers are deterministic: every content delta carries the behaviour's `text` ("hello " by
default), a non-stream answer is the concatenation of `chunks` deltas, and usage reports 11
prompt tokens plus one completion token per delta unless the behaviour overrides it.

The module has no Django imports so that it can also run on its own (see
tests/test_mock_upstream.py). Import the `mock_upstream` fixture into a conftest to use it.

PYTEST_DONT_REWRITE: this module holds no assertions, and the marker spares the "already
imported, cannot be rewritten" warning when it is both imported and loaded as a plugin.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import itertools
import json
import struct
import threading
import time
from collections import deque
from typing import Any, Self

import pytest
from aiohttp import web

DEFAULT_KEY = "upstream-test-key"
PROMPT_TOKENS = 11
EMBEDDING_DIMENSIONS = 8
TOOL_ARGUMENTS = '{"city": "Paris"}'
MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-5")

# Where the recording middleware leaves the parsed JSON body for the endpoint handlers.
REQUEST_JSON = web.RequestKey("request_json", object)

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


def openai_usage(completion_tokens: int, override: dict, details: bool = True) -> dict:
    """OpenAI usage; `override` replaces fields, total_tokens follows unless overridden too."""
    usage: dict[str, Any] = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion_tokens}
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0}
    usage.update(override)
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
    return usage


def anthropic_usage(output_tokens: int, override: dict) -> dict:
    """Anthropic usage (cache tokens are separate from input_tokens); `override` replaces fields."""
    usage = {
        "input_tokens": PROMPT_TOKENS,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
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
      ``{"status": 429, "error": {"type": "insufficient_quota", "code": "insufficient_quota"}}``.
    - ``delay``: seconds to wait before answering at all.
    - ``drop``: close the connection without any response.
    - ``chunks``: number of content deltas (default 3); ``text``: what each delta carries
      (default "hello "); ``usage``: provider-native usage fields to report instead.
    - ``chunk_delay``: seconds between stream deltas (default 0).
    - ``cut_after``: in a stream, close the TCP connection after this many deltas (at most
      ``chunks``), before the finishing frames, so the client sees a broken stream.
    """

    def __init__(self, keys: set[str] | frozenset[str] = frozenset({DEFAULT_KEY})) -> None:
        self.keys = set(keys)
        self.requests: list[dict] = []
        self.events: list[dict] = []
        self.auth_failures: list[dict] = []
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
        with self._lock:
            self._script.extend(behaviours)
        return self

    def reset(self) -> None:
        """Forget recorded requests, events and auth failures, and empty the script."""
        with self._lock:
            self.requests.clear()
            self.events.clear()
            self.auth_failures.clear()
            self._script.clear()

    def wait_for_events(self, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """Wait until `count` stream outcomes are recorded and return them all.

        A stream's outcome is recorded by the server thread when it notices the end, which can
        be slightly after the client saw it (e.g. the next write after a client disconnect).
        """
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.events)} stream events after {timeout}s")
            time.sleep(0.01)
        return list(self.events)

    def _next_behaviour(self) -> dict:
        with self._lock:
            return self._script.popleft() if self._script else {}

    # -- request plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _record_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record every request, including ones to unknown paths, before handling it."""
        try:
            body = await request.json() if request.body_exists else None
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
            if behaviour.get("delay"):
                await asyncio.sleep(behaviour["delay"])
            if behaviour.get("drop"):
                self._close_connection(request)
                # aiohttp notices the closed transport when writing this and drops it quietly.
                return web.Response()
            if "status" in behaviour:
                return self._error(
                    provider,
                    behaviour["status"],
                    f"Mock upstream scripted error {behaviour['status']}.",
                    behaviour.get("error", {}),
                )
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
        header = request.headers.get("Authorization", "")
        return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None

    def _error(
        self, provider: str, status: int, message: str, overrides: dict | None = None
    ) -> web.Response:
        overrides = dict(overrides or {})
        message = overrides.pop("message", message)
        if provider == "openai":
            return web.json_response(openai_error_body(status, message, **overrides), status=status)
        request_id = f"req_mock{next(self._ids)}"
        body = anthropic_error_body(status, message, request_id, **overrides)
        return web.json_response(body, status=status, headers={"request-id": request_id})

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

        Records the outcome in `events`. A client disconnect surfaces as ConnectionResetError
        on the next write (aiohttp does not cancel handlers by default), or as CancelledError
        if the handler is cancelled, e.g. on server shutdown.
        """
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
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
                    await asyncio.sleep(chunk_delay)
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
        chunks = behaviour.get("chunks", 3)
        text = behaviour.get("text", "hello ")
        tool = requested_tool(body, "openai")
        usage = openai_usage(chunks, behaviour.get("usage", {}))
        finish_reason = "tool_calls" if tool else "stop"
        base = {
            "id": f"chatcmpl-mock{next(self._ids)}",
            "created": int(time.time()),
            "model": body.get("model", "mock-model"),
        }

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text * chunks}
            if tool:
                message["content"] = None
                message["tool_calls"] = [
                    {
                        "id": "call_mock1",
                        "type": "function",
                        "function": {"name": tool, "arguments": TOOL_ARGUMENTS},
                    }
                ]
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            answer = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            if behaviour.get("no_usage"):  # an OpenAI-compatible upstream that reports none
                del answer["usage"]
            response = web.json_response(answer)
            if behaviour.get("set_cookie"):  # e.g. a CDN's session cookie in front of the API
                response.set_cookie("session", behaviour["set_cookie"])
            return response

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        include_usage = include_usage and not behaviour.get("no_usage")

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            payload = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            if include_usage:
                # The real API sends "usage": null on every chunk but the last in this mode.
                payload["usage"] = None
            return sse_data(payload)

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
                for piece in split_evenly(TOOL_ARGUMENTS, chunks)
            ]
        else:
            head = [chunk({"role": "assistant", "content": ""})]
            deltas = [chunk({"content": text}) for _ in range(chunks)]
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
        chunks = behaviour.get("chunks", 3)
        text = behaviour.get("text", "hello ")
        usage = openai_usage(chunks, behaviour.get("usage", {}), details=False)
        base = {
            "id": f"cmpl-mock{next(self._ids)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "mock-model"),
        }

        def choice(piece: str, finish: str | None) -> dict:
            return {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}

        if not body.get("stream"):
            return web.json_response(
                {**base, "choices": [choice(text * chunks, "stop")], "usage": usage}
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(piece: str, finish: str | None = None) -> bytes:
            payload = {**base, "choices": [choice(piece, finish)]}
            if include_usage:
                payload["usage"] = None
            return sse_data(payload)

        deltas = [chunk(text) for _ in range(chunks)]
        tail = [chunk("", "stop")]
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
        chunks = behaviour.get("chunks", 3)
        text = behaviour.get("text", "hello ")
        tool = requested_tool(body, "anthropic")
        usage = anthropic_usage(chunks, behaviour.get("usage", {}))
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
                    "input": json.loads(TOOL_ARGUMENTS),
                }
            else:
                block = {"type": "text", "text": text * chunks}
            return web.json_response(
                {
                    **message,
                    "content": [block],
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )

        start_usage = {**usage, "output_tokens": 1}
        if tool:
            opening = {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {}}
            pieces = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in split_evenly(TOOL_ARGUMENTS, chunks)
            ]
        else:
            opening = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": text} for _ in range(chunks)]
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
                    "usage": {"output_tokens": usage["output_tokens"]},
                }
            ),
            sse_event({"type": "message_stop"}),
        ]
        return await self._stream(request, behaviour, head, deltas, tail)


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
