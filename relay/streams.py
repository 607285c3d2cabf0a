"""Server-sent events: parsing upstream streams and turning them into the client's stream.

A translator takes the upstream's events one at a time and answers with the bytes to send the
client plus the output text the event carried. The text is only counted (never kept past the
call) when a stream ends without the upstream's own usage, e.g. when the client goes away.
When client and upstream speak the same format the upstream's bytes pass through untouched;
otherwise relay.conversions rewrites each event.
"""

import json
from dataclasses import dataclass

from billing.pricing import TokenUsage
from relay import conversions
from relay.operations import Format
from relay.providers.anthropic import normalize_anthropic_usage
from relay.providers.base import UsageProblem
from relay.providers.openai import normalize_openai_usage

DONE = b"[DONE]"


@dataclass
class Event:
    """One SSE event: its ``event:`` name (or None), its data, and its bytes as received."""

    name: str | None
    data: bytes
    raw: bytes

    def json(self) -> dict | None:
        """The data as a JSON object, or None when it is not one."""
        try:
            value = json.loads(self.data)
        except (ValueError, RecursionError):
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
    """Output text in an OpenAI chat or completions chunk (content, reasoning, tool args).

    Only counted, so a part of the wrong type counts as no text rather than raising.
    """
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list):
        return ""
    pieces = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        for field in ("content", "reasoning_content", "refusal"):
            if isinstance(delta.get(field), str):
                pieces.append(delta[field])
        tool_calls = delta.get("tool_calls")
        for call in tool_calls if isinstance(tool_calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            for field in ("name", "arguments"):
                if isinstance(function.get(field), str):
                    pieces.append(function[field])
    return "".join(pieces)


def anthropic_event_text(data: dict) -> str:
    """Output text in an Anthropic stream event ("" for parts of the wrong type)."""
    if not isinstance(data, dict):
        return ""
    kind = data.get("type")
    if kind == "content_block_delta":
        delta = data.get("delta")
        if isinstance(delta, dict):
            for field in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(field), str):
                    return delta[field]
    elif kind == "content_block_start":
        block = data.get("content_block")
        if isinstance(block, dict) and isinstance(block.get("name"), str):
            return block["name"]
    return ""


class Translator:
    """Turns upstream events into client bytes and keeps the upstream-reported usage.

    The upstream is not trusted: ``feed`` and ``finish`` answer, or raise
    ``conversions.UpstreamStreamError`` (for an error the upstream sent, or an event that
    cannot be relayed), never anything else, so the client's stream ends cleanly.

    ``usage`` is the upstream's latest sane usage report. When the latest report cannot be
    trusted (``UsageProblem``), ``usage`` keeps the previous sane one (or None), the stream goes
    on, and ``usage_problem`` holds a small copy of the report for the usage row's flag; a
    later sane report (Anthropic's counts are cumulative) clears it.
    """

    def __init__(self):
        self.usage: TokenUsage | None = None
        self.usage_problem: dict | None = None
        self.completed = False  # the upstream ended the stream properly

    def feed(self, event: Event) -> tuple[bytes, str]:
        """Bytes for the client and the output text the event carried."""
        if self.completed:
            return b"", ""  # after the upstream's own end: not part of the answer
        if not event.data or event.data.isspace():
            # An event without data is not dispatched by an SSE client: nothing to relay.
            return b"", ""
        try:
            return self._feed(event)
        except conversions.MalformedUpstream:
            self.completed = False
            raise
        except conversions.READ_ERRORS as problem:
            self.completed = False
            detail = f"{type(problem).__name__} in {type(self).__name__}"
            raise conversions.UpstreamStreamError(detail=detail) from None

    def finish(self) -> bytes:
        """Bytes that close the client's stream once the upstream has ended."""
        try:
            return self._finish()
        except conversions.MalformedUpstream:
            raise
        except conversions.READ_ERRORS as problem:
            detail = f"{type(problem).__name__} closing {type(self).__name__}"
            raise conversions.UpstreamStreamError(detail=detail) from None

    def _feed(self, event: Event) -> tuple[bytes, str]:
        raise NotImplementedError

    def _finish(self) -> bytes:
        return b""

    def _report_usage(self, normalize, usage: dict) -> None:
        try:
            self.usage = normalize(usage)
        except UsageProblem as problem:
            self.usage_problem = problem.raw
        else:
            self.usage_problem = None


def _json_object(event: Event) -> dict:
    data = event.json()
    if data is None:
        raise conversions.UpstreamStreamError(detail="event data is not a JSON object")
    return data


def _openai_chunk(event: Event) -> dict:
    if event.name == "error":  # some compatible upstreams name the event instead
        raise conversions.UpstreamStreamError(conversions.ERROR_EVENT, detail="error event")
    return _json_object(event)


def _anthropic_kind(event: Event, data: dict) -> str:
    kind = data.get("type") or event.name or ""
    if not isinstance(kind, str):
        raise conversions.UpstreamStreamError(detail="event type is not a string")
    return kind


class OpenAIPassthrough(Translator):
    """OpenAI upstream, OpenAI client: bytes unchanged, but the usage chunk Sluice asked for
    on the client's behalf is withheld when the client did not ask for it. A chunk of a shape
    the client's SDK would trip on is not forwarded: the stream ends with an error instead."""

    def __init__(self, *, client_wants_usage: bool):
        super().__init__()
        self.client_wants_usage = client_wants_usage

    def _feed(self, event: Event) -> tuple[bytes, str]:
        if event.data == DONE:
            self.completed = True
            return event.raw, ""
        chunk = _openai_chunk(event)
        conversions.check_openai_chunk(chunk)
        usage = chunk.get("usage")
        if usage is not None:
            self._report_usage(normalize_openai_usage, usage)
            if not self.client_wants_usage and not chunk.get("choices"):
                return b"", ""
        return event.raw, openai_chunk_text(chunk)


class AnthropicPassthrough(Translator):
    """Anthropic upstream, Anthropic client: bytes unchanged, usage read on the way. An error
    event, or an event of a shape the client's SDK would trip on, ends the stream through the
    relay's own error event."""

    def __init__(self):
        super().__init__()
        self._raw_usage: dict = {}

    def _feed(self, event: Event) -> tuple[bytes, str]:
        data = _json_object(event)
        kind = _anthropic_kind(event, data)
        conversions.check_anthropic_event(kind, data)
        if kind == "message_start":
            self._record(data["message"].get("usage"))
        elif kind == "message_delta":
            self._record(data.get("usage"))
        elif kind == "message_stop":
            self.completed = True
        return event.raw, anthropic_event_text(data)

    def _record(self, usage: dict | None) -> None:
        if usage is not None:
            # message_delta counts are cumulative: later values replace earlier ones.
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
            self._report_usage(normalize_anthropic_usage, self._raw_usage)


class AnthropicToOpenAI(Translator):
    """Anthropic upstream, OpenAI client."""

    def __init__(self, *, model: str, client_wants_usage: bool):
        super().__init__()
        self._converter = conversions.AnthropicToOpenAIStream(
            model, include_usage=client_wants_usage
        )

    def _feed(self, event: Event) -> tuple[bytes, str]:
        data = _json_object(event)
        kind = _anthropic_kind(event, data)
        chunks = self._converter.feed(kind, data)  # raises UpstreamStreamError
        if kind in ("message_start", "message_delta"):
            self._report_usage(normalize_anthropic_usage, self._converter.usage)
        elif kind == "message_stop":
            self.completed = True
        return b"".join(openai_sse(chunk) for chunk in chunks), anthropic_event_text(data)

    def _finish(self) -> bytes:
        return b"".join(openai_sse(chunk) for chunk in self._converter.finish()) + (
            b"data: [DONE]\n\n"
        )


class OpenAIToAnthropic(Translator):
    """OpenAI upstream, Anthropic client."""

    def __init__(self, *, model: str):
        super().__init__()
        self._converter = conversions.OpenAIToAnthropicStream(model)

    def _feed(self, event: Event) -> tuple[bytes, str]:
        if event.data == DONE:
            self.completed = True
            return b"", ""
        chunk = _openai_chunk(event)
        events = self._converter.feed(chunk)  # raises UpstreamStreamError
        if chunk.get("usage") is not None:
            self._report_usage(normalize_openai_usage, chunk["usage"])
        return b"".join(anthropic_sse(n, d) for n, d in events), openai_chunk_text(chunk)

    def _finish(self) -> bytes:
        return b"".join(anthropic_sse(n, d) for n, d in self._converter.finish())


def translator_for(
    *, client_format: Format, upstream_format: Format, model: str, client_wants_usage: bool
) -> Translator:
    if client_format == upstream_format == "openai":
        return OpenAIPassthrough(client_wants_usage=client_wants_usage)
    if client_format == upstream_format == "anthropic":
        return AnthropicPassthrough()
    if client_format == "openai":
        return AnthropicToOpenAI(model=model, client_wants_usage=client_wants_usage)
    return OpenAIToAnthropic(model=model)
