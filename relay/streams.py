"""Server-sent events: parsing upstream streams and turning them into the client's stream.

A translator takes the upstream's events one at a time and answers with the bytes to send the
client plus the output text the event carried. The text is only counted (never kept past the
call) when a stream ends without the upstream's own usage, e.g. when the client goes away.
When client and upstream speak the same dialect the upstream's bytes pass through untouched;
otherwise relay.conversions rewrites each event.
"""

import json
from dataclasses import dataclass

from billing.pricing import TokenUsage
from relay import conversions
from relay.providers.anthropic import normalize_anthropic_usage
from relay.providers.openai import normalize_openai_usage

DONE = b"[DONE]"


@dataclass
class Event:
    """One SSE event: its ``event:`` name (or None), its data, and its bytes as received."""

    name: str | None
    data: bytes
    raw: bytes

    def json(self) -> dict | None:
        try:
            value = json.loads(self.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class EventParser:
    """Splits a byte stream into SSE events, however the bytes were chunked."""

    def __init__(self):
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        events = []
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            event = self._parse(block)
            if event is not None:
                events.append(event)
        return events

    @staticmethod
    def _parse(block: bytes) -> Event | None:
        name = None
        data = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8", "replace")
        if not data and name is None:
            return None  # a comment or keep-alive
        return Event(name=name, data=b"\n".join(data), raw=block + b"\n\n")


def openai_sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def anthropic_sse(name: str, data: dict) -> bytes:
    payload = json.dumps(data, separators=(",", ":")).encode()
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def openai_chunk_text(chunk: dict) -> str:
    """Output text in an OpenAI chat or completions chunk (content, reasoning, tool args)."""
    pieces = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
        delta = choice.get("delta") or {}
        for field in ("content", "reasoning_content", "refusal"):
            if isinstance(delta.get(field), str):
                pieces.append(delta[field])
        for call in delta.get("tool_calls") or []:
            function = (call or {}).get("function") or {}
            for field in ("name", "arguments"):
                if isinstance(function.get(field), str):
                    pieces.append(function[field])
    return "".join(pieces)


def anthropic_event_text(data: dict) -> str:
    """Output text in an Anthropic stream event."""
    if data.get("type") == "content_block_delta":
        delta = data.get("delta") or {}
        for field in ("text", "partial_json", "thinking"):
            if isinstance(delta.get(field), str):
                return delta[field]
    if data.get("type") == "content_block_start":
        block = data.get("content_block") or {}
        return block.get("name") or ""
    return ""


class Translator:
    """Turns upstream events into client bytes and keeps the upstream-reported usage."""

    def __init__(self):
        self.usage: TokenUsage | None = None
        self.completed = False  # the upstream ended the stream properly

    def feed(self, event: Event) -> tuple[bytes, str]:
        raise NotImplementedError

    def finish(self) -> bytes:
        """Bytes that close the client's stream once the upstream has ended."""
        return b""


class OpenAIPassthrough(Translator):
    """OpenAI upstream, OpenAI client: bytes unchanged, but the usage chunk Sluice asked for
    on the client's behalf is withheld when the client did not ask for it."""

    def __init__(self, *, client_wants_usage: bool):
        super().__init__()
        self.client_wants_usage = client_wants_usage

    def feed(self, event: Event) -> tuple[bytes, str]:
        if event.data == DONE:
            self.completed = True
            return event.raw, ""
        chunk = event.json()
        if chunk is None:
            return event.raw, ""
        if "error" in chunk:
            raise conversions.UpstreamStreamError(str((chunk["error"] or {}).get("message", "")))
        if isinstance(chunk.get("usage"), dict):
            self.usage = normalize_openai_usage(chunk["usage"])
            if not self.client_wants_usage and not chunk.get("choices"):
                return b"", ""
        return event.raw, openai_chunk_text(chunk)


class AnthropicPassthrough(Translator):
    """Anthropic upstream, Anthropic client: bytes unchanged, usage read on the way."""

    def __init__(self):
        super().__init__()
        self._raw_usage: dict = {}

    def feed(self, event: Event) -> tuple[bytes, str]:
        data = event.json()
        if data is None:
            return event.raw, ""
        kind = data.get("type") or event.name
        if kind == "message_start":
            self._record((data.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self._record(data.get("usage"))
        elif kind == "message_stop":
            self.completed = True
        elif kind == "error":
            # Passed on as is (it is already in the client's format), then the stream ends.
            self.completed = False
        return event.raw, anthropic_event_text(data)

    def _record(self, usage: dict | None) -> None:
        if isinstance(usage, dict):
            # message_delta counts are cumulative: later values replace earlier ones.
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
            self.usage = normalize_anthropic_usage(self._raw_usage)


class AnthropicToOpenAI(Translator):
    """Anthropic upstream, OpenAI client."""

    def __init__(self, *, model: str, client_wants_usage: bool):
        super().__init__()
        self._converter = conversions.AnthropicToOpenAIStream(
            model, include_usage=client_wants_usage
        )

    def feed(self, event: Event) -> tuple[bytes, str]:
        data = event.json()
        if data is None:
            return b"", ""
        kind = data.get("type") or event.name or ""
        chunks = self._converter.feed(kind, data)  # raises UpstreamStreamError on "error"
        if kind == "message_stop":
            self.completed = True
        self.usage = normalize_anthropic_usage(self._converter.usage)
        return b"".join(openai_sse(chunk) for chunk in chunks), anthropic_event_text(data)

    def finish(self) -> bytes:
        return b"".join(openai_sse(chunk) for chunk in self._converter.finish()) + (
            b"data: [DONE]\n\n"
        )


class OpenAIToAnthropic(Translator):
    """OpenAI upstream, Anthropic client."""

    def __init__(self, *, model: str):
        super().__init__()
        self._converter = conversions.OpenAIToAnthropicStream(model)

    def feed(self, event: Event) -> tuple[bytes, str]:
        if event.data == DONE:
            self.completed = True
            return b"", ""
        chunk = event.json()
        if chunk is None:
            return b"", ""
        if "error" in chunk:
            raise conversions.UpstreamStreamError(str((chunk["error"] or {}).get("message", "")))
        events = self._converter.feed(chunk)
        if self._converter.usage:
            self.usage = normalize_openai_usage(self._converter.usage)
        return b"".join(anthropic_sse(n, d) for n, d in events), openai_chunk_text(chunk)

    def finish(self) -> bytes:
        return b"".join(anthropic_sse(n, d) for n, d in self._converter.finish())


def translator_for(
    *, client_dialect: str, upstream_dialect: str, model: str, client_wants_usage: bool
) -> Translator:
    if client_dialect == upstream_dialect == "openai":
        return OpenAIPassthrough(client_wants_usage=client_wants_usage)
    if client_dialect == upstream_dialect == "anthropic":
        return AnthropicPassthrough()
    if client_dialect == "openai":
        return AnthropicToOpenAI(model=model, client_wants_usage=client_wants_usage)
    return OpenAIToAnthropic(model=model)
