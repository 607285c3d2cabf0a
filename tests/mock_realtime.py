"""A mock of OpenAI's realtime WebSocket API, for end-to-end tests of /v1/realtime.

`MockRealtime` serves ``GET /v1/realtime?model=...`` over real loopback WebSockets (aiohttp, in a
background thread). It checks ``Authorization: Bearer <key>`` before the upgrade (401
otherwise), answers ``session.created`` on connect and, like the real API:

- ``session.update`` -> ``session.updated`` (the session's fields merged);
- ``conversation.item.create`` -> ``conversation.item.created``;
- ``input_audio_buffer.append`` is kept; ``input_audio_buffer.commit`` ->
  ``input_audio_buffer.committed``, and, when the session's ``turn_detection`` is set (server
  VAD), a response started by the server itself;
- ``response.create`` -> a response: ``response.created``, ``response.output_item.added``,
  text (transcript) and audio deltas, ``response.done`` with usage. The beta event names
  (``response.audio.delta``) when the connection sent ``OpenAI-Beta: realtime=v1``, the GA ones
  (``response.output_audio.delta``) otherwise;
- binary frames are echoed back.

Each response takes the next scripted behaviour (``script``), or the default: keys ``usage``
(the ``response.done`` usage, any value, passed as it is), ``deltas`` (how many text and audio
deltas, default 3), ``close_after`` (close the socket after that many deltas, with
``close_code``, default 1011, before ``response.done``), ``hang`` (send the deltas, then nothing
more), ``silent`` (no answer at all), ``error`` (answer an ``error`` event naming the
client's event instead of a response).

`connections` records each session: its headers, query, the events it received, how many
deltas (text and audio pairs) it sent and whether (and how) it closed; `close_all(code)`
closes every open session from the server's side. No Django here.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import itertools
import json
import threading
from collections import deque
from typing import Any, Self

from aiohttp import WSMsgType, web

DEFAULT_KEY = "upstream-test-key"
AUDIO_DELTA = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz pcm16
TEXT_DELTA = "hello "
DEFAULT_USAGE = {
    "total_tokens": 160,
    "input_tokens": 120,
    "output_tokens": 40,
    "input_token_details": {
        "text_tokens": 100,
        "audio_tokens": 20,
        "image_tokens": 0,
        "cached_tokens": 32,
        "cached_tokens_details": {"text_tokens": 32, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 10, "audio_tokens": 30},
}
BEHAVIOUR_KEYS = frozenset(
    {"usage", "deltas", "close_after", "close_code", "hang", "error", "silent"}
)


class MockRealtime:
    """A mock realtime upstream on 127.0.0.1, served from a background thread."""

    def __init__(self, keys: frozenset[str] = frozenset({DEFAULT_KEY})) -> None:
        self.keys = set(keys)
        self.connections: list[dict] = []
        self.refused: list[dict] = []
        self._script: deque[dict] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mock-realtime", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = self._runner = self._port = None

    @property
    def url(self) -> str:
        """Base URL (http): a channel's base URL; the relay connects to ws://.../v1/realtime."""
        return f"http://127.0.0.1:{self._port}"

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._session)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    # -- scripting and inspection ------------------------------------------------------------

    def script(self, *behaviours: dict) -> Self:
        """Queue behaviours, one per response (see the module docstring)."""
        for behaviour in behaviours:
            unknown = set(behaviour) - BEHAVIOUR_KEYS
            if unknown:
                raise ValueError(f"unknown behaviour keys: {sorted(unknown)}")
        with self._lock:
            self._script.extend(behaviours)
        return self

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.connections.clear()
            self.refused.clear()
        if self._loop is not None and self._open:
            self.close_all(1001)

    def close_all(self, code: int = 1000) -> None:
        """Close every open session from the server's side."""

        async def close() -> None:
            for ws in list(self._open):
                await ws.close(code=code, message=b"closed by the mock")

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)

    def received(self, kind: str) -> list[dict]:
        """Every event of ``kind`` the mock received, over all sessions."""
        return [
            event
            for connection in list(self.connections)
            for event in list(connection["received"])
            if event.get("type") == kind
        ]

    def _next(self) -> dict:
        with self._lock:
            return self._script.popleft() if self._script else {}

    # -- the protocol ------------------------------------------------------------------------

    async def _session(self, request: web.Request) -> web.StreamResponse:
        headers = dict(request.headers)
        if request.headers.get("Authorization", "") not in {f"Bearer {key}" for key in self.keys}:
            self.refused.append({"headers": headers, "query": dict(request.query)})
            body = {
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "message": "Incorrect API key provided.",
                    "param": None,
                }
            }
            return web.json_response(body, status=401)
        ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        record: dict[str, Any] = {
            "headers": headers,
            "query": dict(request.query),
            "beta": beta,
            "received": [],
            "binary": 0,
            "deltas_sent": 0,
            "closed": None,
        }
        self.connections.append(record)
        self._open.add(ws)
        state = {
            "session": {
                "id": f"sess_{next(self._ids)}",
                "object": "realtime.session",
                "model": request.query.get("model"),
                "instructions": "You are a helpful assistant.",
                "tools": [],
                "turn_detection": None,
                "max_response_output_tokens": "inf",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
            },
            "audio": 0,
            "lock": asyncio.Lock(),
            "beta": beta,
            "tasks": set(),
            "record": record,
        }
        await self._send(ws, state, {"type": "session.created", "session": state["session"]})
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    event = json.loads(message.data)
                    record["received"].append(event)
                    await self._on_event(ws, state, event)
                elif message.type == WSMsgType.BINARY:
                    record["binary"] += 1
                    async with state["lock"]:
                        await ws.send_bytes(message.data)
        finally:
            for task in state["tasks"]:
                task.cancel()
            self._open.discard(ws)
            record["closed"] = ws.close_code or 1000
        return ws

    async def _send(self, ws: web.WebSocketResponse, state: dict, event: dict) -> None:
        event.setdefault("event_id", f"event_{next(self._ids)}")
        async with state["lock"]:
            await ws.send_str(json.dumps(event))

    async def _on_event(self, ws, state: dict, event: dict) -> None:
        kind = event.get("type")
        if kind == "session.update":
            state["session"].update(event.get("session") or {})
            await self._send(ws, state, {"type": "session.updated", "session": state["session"]})
        elif kind == "conversation.item.create":
            item = dict(event.get("item") or {}, id=f"item_{next(self._ids)}")
            await self._send(ws, state, {"type": "conversation.item.created", "item": item})
        elif kind == "input_audio_buffer.append":
            state["audio"] += len(event.get("audio") or "")
        elif kind == "input_audio_buffer.commit":
            await self._send(ws, state, {"type": "input_audio_buffer.committed"})
            if state["session"].get("turn_detection"):
                self._respond(ws, state, event)
        elif kind == "response.create":
            self._respond(ws, state, event)

    def _respond(self, ws, state: dict, event: dict) -> None:
        task = asyncio.ensure_future(self._response(ws, state, event, self._next()))
        state["tasks"].add(task)
        task.add_done_callback(state["tasks"].discard)

    async def _response(self, ws, state: dict, event: dict, behaviour: dict) -> None:
        if behaviour.get("silent"):
            return
        if behaviour.get("error"):
            error = {
                "type": "invalid_request_error",
                "code": "conversation_already_has_active_response",
                "message": "Conversation already has an active response.",
                "param": None,
                "event_id": event.get("event_id"),
            }
            await self._send(ws, state, {"type": "error", "error": error})
            return
        beta = state["beta"]
        response_id = f"resp_{next(self._ids)}"
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress"}
        await self._send(ws, state, {"type": "response.created", "response": response})
        item = {"id": f"item_{next(self._ids)}", "type": "message", "role": "assistant"}
        await self._send(
            ws,
            state,
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            },
        )
        text_kind = "response.audio_transcript.delta" if beta else "response.output_text.delta"
        audio_kind = "response.audio.delta" if beta else "response.output_audio.delta"
        for index in range(behaviour.get("deltas", 3)):
            if index == behaviour.get("close_after"):
                await ws.close(code=behaviour.get("close_code", 1011), message=b"mock cut")
                return
            for kind, delta in ((text_kind, TEXT_DELTA), (audio_kind, AUDIO_DELTA)):
                await self._send(
                    ws,
                    state,
                    {
                        "type": kind,
                        "response_id": response_id,
                        "item_id": item["id"],
                        "output_index": 0,
                        "content_index": 0,
                        "delta": delta,
                    },
                )
            state["record"]["deltas_sent"] += 1
        if behaviour.get("hang"):
            return
        usage = behaviour.get("usage", DEFAULT_USAGE)
        done = dict(response, status="completed", usage=usage)
        await self._send(ws, state, {"type": "response.done", "response": done})


_shared: MockRealtime | None = None


def shared_mock_realtime() -> MockRealtime:
    """The session-wide server, started on first use and stopped when the interpreter exits."""
    global _shared
    if _shared is None:
        _shared = MockRealtime().start()
        atexit.register(_shared.stop)
    return _shared
