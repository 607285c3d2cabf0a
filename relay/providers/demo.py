"""The demo channel type: built-in models answered in this process, with no upstream account
and no network, so a new site can make its first call before any upstream is plugged in.

The relay forwards to a demo channel exactly as to an upstream (same request, same reading of
the answer, same hold and settlement): only the HTTP client differs, whose transport answers
in-process (``DemoTransport``). It speaks the OpenAI format (chat completions, streams
included, legacy completions and embeddings); Anthropic clients are served from it by the
relay's conversions, as from any OpenAI-format channel.

``demo-echo`` answers the last user message (a completion, its prompt); ``demo-lorem``
answers placeholder text. Like a real upstream, the answer honours ``n``, the output limit
(cut to it, ``finish_reason: "length"``), ``stop`` and ``stream_options.include_usage``, and
its usage is counted with the relay's own tokenizer. Embeddings are vectors derived from a
hash of the input, the same for the same text. No Django and no I/O here.
"""

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator

import httpx

from relay import tokens
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS
from relay.providers.openai import OpenAIProvider

ECHO_MODEL = "demo-echo"
LOREM_MODEL = "demo-lorem"
MODELS = (ECHO_MODEL, LOREM_MODEL)
# A demo channel's base URL: a reserved name that never resolves (RFC 2606), so even a
# misrouted demo call could not leave the machine.
BASE_URL = "http://demo.invalid"
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
    "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. "
    "Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt "
    "mollit anim id est laborum."
)
EMBEDDING_DIMENSIONS = 16
MAX_EMBEDDING_DIMENSIONS = 4096
MAX_CHOICES = 128
# Bodies up to this size are answered on the event loop; bigger ones (counting their tokens
# takes a while) in a worker thread, as the relay counts them.
ANSWER_INLINE_BYTES = 64 * 1024
# A stream's pieces: a word with the spaces before it (and trailing spaces at the end), so
# that the pieces put together are the answer exactly.
PIECES = re.compile(r"\s*\S+|\s+$")
SSE_DONE = b"data: [DONE]\n\n"


class DemoProvider(OpenAIProvider):
    """OpenAI's adapter with no key to send and an in-process client."""

    # Chat, completions and embeddings; Responses calls reach it converted to chat.
    native = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})

    def headers(self, api_key: str, client_headers: dict[str, str]) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def client(self) -> httpx.AsyncClient:
        return _client


class DemoTransport(httpx.AsyncBaseTransport):
    """Answers OpenAI API requests from the demo models, in this process.

    The operation is read from the end of the URL's path, so a demo channel works under any
    base URL. A request the demo cannot answer gets an OpenAI-format error, as from an upstream.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = await request.aread()
        if len(raw) <= ANSWER_INLINE_BYTES:
            return answer(request.url.path, raw)
        return await asyncio.to_thread(answer, request.url.path, raw)


def answer(path: str, raw: bytes) -> httpx.Response:
    """The demo's answer to a POST of ``raw`` to ``path``."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        return _error(400, "The request body is not a JSON object.", "invalid_request")
    model = body.get("model")
    if model not in MODELS:
        return _error(
            404,
            f"The demo channel serves {' and '.join(MODELS)}, not {model!r}.",
            "model_not_found",
        )
    if path.endswith("/chat/completions"):
        return _chat(body, model)
    if path.endswith("/completions"):
        return _completions(body, model)
    if path.endswith("/embeddings"):
        return _embeddings(body, model)
    return _error(404, "The demo channel has no such endpoint.", "unknown_url")


# One client for every event loop: its transport holds no connection, nothing bound to a loop.
_client = httpx.AsyncClient(transport=DemoTransport(), trust_env=False)


# --- Answers ----------------------------------------------------------------------------------


def _chat(body: dict, model: str) -> httpx.Response:
    limit = _output_limit(body, "max_completion_tokens", "max_tokens")
    text, finish = _answer(model, _last_user_text(body.get("messages")), body, limit)
    choices = _choice_count(body)
    usage = _usage(
        tokens.count_messages(body.get("messages") or [], model, tools=body.get("tools")),
        tokens.count_text(text, model) * choices,
    )
    answer_id, created = f"chatcmpl-demo-{uuid.uuid4().hex[:24]}", int(time.time())
    if not body.get("stream"):
        message = {"role": "assistant", "content": text, "refusal": None}
        return _json(
            200,
            {
                "id": answer_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                    for i in range(choices)
                ],
                "usage": usage,
            },
        )

    def chunk(index: int, delta: dict, finish_reason: str | None = None) -> dict:
        return {
            "id": answer_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    events = []
    for index in range(choices):
        events.append(chunk(index, {"role": "assistant", "content": ""}))
        events.extend(chunk(index, {"content": piece}) for piece in PIECES.findall(text))
        events.append(chunk(index, {}, finish))
    if _wants_usage(body):
        events.append(chunk(0, {}) | {"choices": [], "usage": usage})
    return _stream(events)


def _completions(body: dict, model: str) -> httpx.Response:
    prompt = _prompt_text(body.get("prompt"))
    text, finish = _answer(model, prompt, body, _output_limit(body, "max_tokens"))
    choices = _choice_count(body)
    usage = _usage(
        tokens.count_input(body.get("prompt", ""), model), tokens.count_text(text, model) * choices
    )
    head = {
        "id": f"cmpl-demo-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }

    def choice(index: int, piece: str, finish_reason: str | None) -> dict:
        return {"index": index, "text": piece, "logprobs": None, "finish_reason": finish_reason}

    if not body.get("stream"):
        return _json(
            200,
            head | {"choices": [choice(i, text, finish) for i in range(choices)], "usage": usage},
        )
    events: list[dict] = []
    for index in range(choices):
        events.extend(
            head | {"choices": [choice(index, piece, None)]} for piece in PIECES.findall(text)
        )
        events.append(head | {"choices": [choice(index, "", finish)]})
    if _wants_usage(body):
        events.append(head | {"choices": [], "usage": usage})
    return _stream(events)


def _embeddings(body: dict, model: str) -> httpx.Response:
    dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
    if type(dimensions) is not int or not 0 < dimensions <= MAX_EMBEDDING_DIMENSIONS:
        return _error(
            400, f"dimensions must be from 1 to {MAX_EMBEDDING_DIMENSIONS}.", "invalid_value"
        )
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(_embedding_inputs(body.get("input"))):
        embedding: list[float] | str = _vector(text, dimensions)
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *embedding)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    prompt_tokens = tokens.count_input(body.get("input", ""), model)
    return _json(
        200,
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        },
    )


def _answer(model: str, echoed: str, body: dict, limit: int | None) -> tuple[str, str]:
    """The answer text and its finish reason: the model's text, cut at the first ``stop``
    sequence, then to ``limit`` tokens ("length")."""
    text = echoed if model == ECHO_MODEL else LOREM
    for sequence in _stop_sequences(body.get("stop")):
        text = text.split(sequence, 1)[0]
    if limit is not None:
        cut = _cut(text, limit, model)
        if cut != text:
            return cut, "length"
    return text, "stop"


def _cut(text: str, limit: int, model: str) -> str:
    """The longest start of ``text`` that counts at most ``limit`` tokens."""
    encoding = tokens.encoding_for(model)
    ids = encoding.encode(text, disallowed_special=())
    if len(ids) <= limit:
        return text
    kept = limit
    while kept > 0:
        # A token may end inside a character: its incomplete bytes are dropped.
        start = encoding.decode_bytes(ids[:kept]).decode("utf-8", "ignore")
        if tokens.count_text(start, model) <= limit:
            return start
        kept -= 1
    return ""


def _last_user_text(messages: object) -> str:
    """The text of the last user message (its text parts, one per line)."""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            parts = content if isinstance(content, list) else []
            return "\n".join(
                part["text"]
                for part in parts
                if isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            )
    return ""


def _prompt_text(prompt: object) -> str:
    """A completion's prompt as text: the prompt, or the last of a list of prompts (a prompt
    of token ids is echoed as nothing)."""
    if isinstance(prompt, list) and prompt:
        prompt = prompt[-1]
    return prompt if isinstance(prompt, str) else ""


def _embedding_inputs(value: object) -> list[str]:
    """Each input to embed, as text (a list of token ids is one input)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(type(item) is int for item in value):
        return [json.dumps(value)]
    if isinstance(value, list):
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return []


def _vector(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on the text (and the number of dimensions)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        raw.extend(value / 32767.5 - 1 for value in struct.unpack(">16H", digest))
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [value / norm for value in raw]


def _output_limit(body: dict, *fields: str) -> int | None:
    named = [body[f] for f in fields if type(body.get(f)) is int and body[f] >= 0]
    return min(named) if named else None


def _stop_sequences(stop: object) -> list[str]:
    if isinstance(stop, str):
        stop = [stop]
    return [s for s in stop if isinstance(s, str) and s] if isinstance(stop, list) else []


def _choice_count(body: dict) -> int:
    n = body.get("n")
    return min(n, MAX_CHOICES) if type(n) is int and n > 0 else 1


def _wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# --- Responses --------------------------------------------------------------------------------


def _json(status: int, payload: dict) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"content-type": "application/json"},
        stream=_Body([json.dumps(payload).encode()]),
    )


def _error(status: int, message: str, code: str) -> httpx.Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return _json(status, {"error": error})


def _stream(events: list[dict]) -> httpx.Response:
    """Server-sent events, one event per chunk read, ended with ``[DONE]``."""
    chunks = [b"data: " + json.dumps(event).encode() + b"\n\n" for event in events]
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"},
        stream=_Body([*chunks, SSE_DONE]),
    )


class _Body(httpx.AsyncByteStream):
    """A body read chunk by chunk, as from a socket (a response given ``content`` instead
    would arrive already read, which no upstream response does)."""

    def __init__(self, chunks: list[bytes]):
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
