"""OpenAI's Chat Completions format, the hub every other format converts to and from.

Its error body, its SSE framing and the event that ends a broken stream, the reading of its
usage, the checks on its stream chunks and the translator that passes its streams through.
Converting to or from the hub is the identity here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from billing.pricing import TokenUsage
from relay.formats.common import (
    ERROR_EVENT,
    STREAM_BROKE_OFF,
    Event,
    Translator,
    UpstreamStreamError,
    UsageProblem,
    json_object,
    malformed,
    stream_ended_with_error,
    token_count,
    usage_part,
)

if TYPE_CHECKING:  # relay.errors renders through this module
    from relay.errors import RelayError

DONE = b"[DONE]"

# Error type for each status (the code travels separately).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}


def error_body(error: RelayError) -> dict:
    """The error as OpenAI spells it: ``{"error": {...}}``."""
    return {
        "error": {
            "message": error.message,
            "type": error.error_type or ERROR_TYPES.get(error.status, "server_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def error_status(error: RelayError) -> int:
    return error.status


def sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def stream_error(error_type: str) -> bytes:
    """The event that ends a broken stream (its type is always the relay's own)."""
    return sse(
        {
            "error": {
                "message": STREAM_BROKE_OFF,
                "type": "server_error",
                "param": None,
                "code": "upstream_error",
            }
        }
    )


def normalize_openai_usage(usage: dict | None) -> TokenUsage | None:
    """OpenAI counts cached and audio input inside prompt_tokens, and reasoning and audio
    output inside completion_tokens: the parts are taken out of their whole to be priced apart.

    Reads the Chat Completions spelling and the Responses API one (input_tokens, ...). None
    when there is no usage; ``UsageProblem`` when a figure is not a token count or the parts
    exceed their whole.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise UsageProblem("usage is not an object", usage)
    prompt_field = "prompt_tokens" if usage.get("prompt_tokens") is not None else "input_tokens"
    if usage.get(prompt_field) is None and not _reports_output(usage):
        # Only a total (Jina's rerank: {"total_tokens": N}): a call that makes no output.
        prompt_field = "total_tokens"
    output_field = (
        "completion_tokens" if usage.get("completion_tokens") is not None else "output_tokens"
    )
    prompt = token_count(usage, prompt_field, usage=usage)
    completion = token_count(usage, output_field, usage=usage)
    token_count(usage, "total_tokens", usage=usage)  # not used, but must be a count too
    prompt_details = usage_part(usage, "prompt_tokens_details", "input_tokens_details")
    output_details = usage_part(usage, "completion_tokens_details", "output_tokens_details")
    cached = token_count(prompt_details, "cached_tokens", usage=usage)
    audio_in = token_count(prompt_details, "audio_tokens", usage=usage)
    reasoning = token_count(output_details, "reasoning_tokens", usage=usage)
    audio_out = token_count(output_details, "audio_tokens", usage=usage)
    if cached + audio_in > prompt:
        raise UsageProblem("cached and audio input exceed the prompt", usage)
    if reasoning + audio_out > completion:
        raise UsageProblem("reasoning and audio output exceed the completion", usage)
    return TokenUsage(
        input_tokens=prompt - cached - audio_in,
        cached_input_tokens=cached,
        output_tokens=completion - audio_out,
        reasoning_tokens=reasoning,
        audio_input_tokens=audio_in,
        audio_output_tokens=audio_out,
    )


def _reports_output(usage: dict) -> bool:
    return usage.get("completion_tokens") is not None or usage.get("output_tokens") is not None


def check_openai_chunk(chunk: dict) -> None:
    """Raise `UpstreamStreamError` for an OpenAI chunk that carries an error, or whose shape a
    client relies on is wrong: `choices` a list of objects, each `delta` an object, `usage` an
    object or null.

    Cheap on purpose: it runs on every chunk of every OpenAI stream, passthrough included.
    """
    if "error" in chunk:
        raise stream_ended_with_error(chunk["error"])
    choices = chunk.get("choices")
    if choices is not None:
        if not isinstance(choices, list):
            raise malformed("choices is not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise malformed("a choice is not an object")
            delta = choice.get("delta")
            if delta is not None and not isinstance(delta, dict):
                raise malformed("delta is not an object")
    usage = chunk.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise malformed("usage is not an object")


def openai_chunk(event: Event) -> dict:
    if event.name == "error":  # some compatible upstreams name the event instead
        raise UpstreamStreamError(ERROR_EVENT, detail="error event")
    return json_object(event)


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


# How upstreams spell the "usage": null that include_usage puts on every chunk but the last:
# OpenAI's and vLLM's compact JSON, and Python's json.dumps.
NULL_USAGE = (b',"usage":null', b', "usage": null')


class OpenAIPassthrough(Translator):
    """OpenAI upstream, OpenAI client: bytes unchanged, except the usage Sluice asked for on
    the client's behalf when the client did not ask for it (``stream_options.include_usage``):
    the usage chunk is withheld, and the ``"usage": null`` the upstream then puts on every
    other chunk is cut from its bytes (the chunk is re-encoded only when it is spelled some
    other way). A chunk of a shape the client's SDK would trip on is not forwarded: the stream
    ends with an error instead."""

    def __init__(self, *, client_wants_usage: bool):
        super().__init__()
        self.client_wants_usage = client_wants_usage

    def _feed(self, event: Event) -> tuple[bytes, str]:
        if event.data == DONE:
            self.completed = True
            return event.raw, ""
        chunk = openai_chunk(event)
        check_openai_chunk(chunk)
        if "usage" not in chunk or self.client_wants_usage:
            if chunk.get("usage") is not None:
                self._report_usage(normalize_openai_usage, chunk["usage"])
            return event.raw, openai_chunk_text(chunk)
        usage = chunk.pop("usage")
        if usage is not None:
            self._report_usage(normalize_openai_usage, usage)
            if not chunk.get("choices"):
                return b"", ""
            return sse(chunk), openai_chunk_text(chunk)
        return _without_null_usage(event, chunk), openai_chunk_text(chunk)


class FromHub(Translator):
    """A hub (OpenAI chat) upstream serving a client of another format: each chunk goes through
    the format's stream converter (``converter``: ``feed(chunk)`` and ``finish()``, each giving
    the client's events), whose events ``frame`` puts on the wire; the upstream's usage and text
    are read from the hub chunk."""

    def __init__(self, converter, frame):
        super().__init__()
        self._converter = converter
        self._frame = frame

    def _feed(self, event: Event) -> tuple[bytes, str]:
        if event.data == DONE:
            self.completed = True
            return b"", ""
        chunk = openai_chunk(event)
        events = self._converter.feed(chunk)  # raises UpstreamStreamError
        if chunk.get("usage") is not None:
            self._report_usage(normalize_openai_usage, chunk["usage"])
        return b"".join(self._frame(item) for item in events), openai_chunk_text(chunk)

    def _finish(self) -> bytes:
        return b"".join(self._frame(item) for item in self._converter.finish())


def _without_null_usage(event: Event, chunk: dict) -> bytes:
    """The event's bytes without its ``"usage": null``: cut from the bytes as the upstream
    spelled it when it is one of the usual spellings (``chunk``, already without it, is
    re-encoded otherwise)."""
    raw = event.raw
    for spelling in NULL_USAGE:
        cut = raw.replace(spelling, b"", 1)
        if len(cut) != len(raw):
            return cut
    return sse(chunk)


# --- The hub: conversions are the identity ----------------------------------------------------


def request_to_hub(body: dict) -> dict:
    return body


def request_from_hub(body: dict, *, default_max_tokens: int) -> dict:
    return body


def answer_to_hub(answer: dict, *, model: str) -> dict:
    return answer


def answer_from_hub(answer: dict, *, model: str) -> dict:
    return answer


def passthrough(*, model: str, client_wants_usage: bool) -> Translator:
    """The translator for an OpenAI upstream serving an OpenAI client."""
    return OpenAIPassthrough(client_wants_usage=client_wants_usage)
