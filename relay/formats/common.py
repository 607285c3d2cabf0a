"""What every format shares: the exceptions a format's converters raise, the checks on an
upstream's usage figures, SSE parsing, and the ``Translator`` base every stream translator
implements.

A request the other side cannot express (an audio part, a server-side tool, ...) raises
`ConversionError`, which the relay answers with a 400 rather than silently changing the meaning
of the call.

Answers are the upstream's, so nothing in them is trusted: an answer of the wrong shape raises
`MalformedUpstream`, and a stream event of the wrong shape, or an error where the answer
should be, raises its subclass `UpstreamStreamError`. No other exception leaves the converters
of answers, so a broken upstream ends the client's stream cleanly instead of mid-chunk.

A translator takes the upstream's SSE events one at a time and answers with the bytes to send
the client plus the output text the event carried. The text is only counted (never kept past
the call) when a stream ends without the upstream's own usage, e.g. when the client goes away.
When client and upstream speak the same format the upstream's bytes pass through untouched.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass

from billing.pricing import TokenUsage

# An upstream's error type or event name is only repeated (in logs, to the client) if it looks
# like one: anything else could carry whatever the upstream put there.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

MALFORMED_ANSWER = "The upstream sent a malformed answer."
MALFORMED_EVENT = "The upstream sent a malformed event."
ERROR_EVENT = "The upstream ended the stream with an error."
# What a client reads in the event that ends a broken stream.
STREAM_BROKE_OFF = "The upstream stream broke off. The answer is incomplete."

# What reading a field of the wrong type raises; such an answer is the upstream's fault.
READ_ERRORS = (
    TypeError,
    AttributeError,
    KeyError,
    ValueError,
    IndexError,
    ArithmeticError,
    RecursionError,
)


class ConversionError(ValueError):
    """The request uses a feature the target format cannot express."""


class MalformedUpstream(ValueError):
    """The upstream's answer cannot be relayed: it is malformed, or is an error. (A
    ValueError, like ConversionError on the request side and json's own decoding errors.)

    ``message`` is a fixed sentence, safe to show a client: the upstream's own words may hold
    anything (a key, an internal address), so they are never carried. ``detail`` says what was
    wrong for the logs, in the relay's words; ``error_type`` is the upstream's error type when
    it sent a plausible one.
    """

    default_message = MALFORMED_ANSWER

    def __init__(
        self, message: str | None = None, *, error_type: str = "api_error", detail: str = ""
    ) -> None:
        message = message or self.default_message
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.detail = detail


class UpstreamStreamError(MalformedUpstream):
    """A stream ended with an error, or sent an event that cannot be relayed."""

    default_message = MALFORMED_EVENT


def plain_name(value: object, default: str) -> str:
    """``value`` if it is a short identifier-like string, else ``default``."""
    if isinstance(value, str) and PLAIN_NAME.fullmatch(value):
        return value
    return default


def stream_ended_with_error(error: object) -> UpstreamStreamError:
    """The exception for an upstream event that carries ``error`` (an object or anything)."""
    if isinstance(error, dict):
        error_type = plain_name(error.get("type"), "api_error")
        detail = f"error event of type {error_type}"
    else:
        error_type = "api_error"
        detail = f"error event whose error is {type(error).__name__}"
    return UpstreamStreamError(ERROR_EVENT, error_type=error_type, detail=detail)


def malformed(detail: str) -> UpstreamStreamError:
    return UpstreamStreamError(MALFORMED_EVENT, detail=detail)


def reads_upstream(error_class: type[MalformedUpstream]):
    """Turn a wrong type met while reading the upstream's answer into ``error_class``."""

    def decorate(function):
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except MalformedUpstream:
                raise
            except READ_ERRORS as problem:
                # Not chained: the original message may quote the upstream's values.
                detail = f"{type(problem).__name__} in {function.__qualname__}"
                raise error_class(detail=detail) from None

        return guarded

    return decorate


# No call comes near a trillion tokens: a figure this large is a broken or hostile upstream.
MAX_TOKEN_COUNT = 10**12

# Bounds of the copy of a rejected usage object kept on its usage row.
RAW_STRING_CHARS = 64
RAW_DEPTH = 3
RAW_ENTRIES = 40


class UsageProblem(ValueError):
    """The upstream's usage cannot be trusted: a figure that is not a token count, or parts
    that add up to more than their whole.

    ``raw`` is the usage as received, made JSON-safe and small, for the usage row's flag.
    """

    def __init__(self, reason: str, usage: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw: dict = raw_usage(usage)


def token_count(container: dict, field: str, *, usage: object) -> int:
    """``container[field]`` as a token count: absent or null is 0, an integral float is
    accepted, anything else (a bool, a string, a negative or absurd number) is a problem."""
    value = container.get(field)
    if value is None:
        return 0
    if type(value) is int:  # type(), not isinstance(): True is an int to Python
        count = value
    elif type(value) is float and value.is_integer():
        count = int(value)
    else:
        raise UsageProblem(f"{field} is not a token count", usage)
    if not 0 <= count < MAX_TOKEN_COUNT:
        raise UsageProblem(f"{field} is out of range", usage)
    return count


def usage_part(usage: dict, *fields: str) -> dict:
    """The first of ``fields`` that ``usage`` holds (a nested details object), or {}."""
    for field in fields:
        value = usage.get(field)
        if value is not None:
            if not isinstance(value, dict):
                raise UsageProblem(f"{field} is not an object", usage)
            return value
    return {}


def raw_usage(usage: object) -> dict:
    """A JSON-safe, bounded copy of what the upstream sent as usage: strings cut to 64
    characters, nothing deeper than 3 levels, at most 40 entries in all."""
    budget = [RAW_ENTRIES]
    if isinstance(usage, dict):
        return _small_object(usage, 1, budget)
    return {"usage": _small_value(usage, 1, budget)}


def _small_object(value: dict, depth: int, budget: list[int]) -> dict:
    small = {}
    for key, item in value.items():
        if budget[0] <= 0:
            break
        if isinstance(item, dict | list) and depth >= RAW_DEPTH:
            continue  # nesting deeper than the kept levels is dropped
        budget[0] -= 1
        small[_cut(str(key))] = _small_value(item, depth + 1, budget)
    return small


def _small_value(value: object, depth: int, budget: list[int]) -> object:
    if isinstance(value, dict):
        return _small_object(value, depth, budget)
    if isinstance(value, list):
        items = []
        for item in value:
            if budget[0] <= 0:
                break
            if isinstance(item, dict | list) and depth >= RAW_DEPTH:
                continue
            budget[0] -= 1
            items.append(_small_value(item, depth + 1, budget))
        return items
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Beyond 64 bits some JSON columns refuse the number (and str() of a huge one raises).
        return value if abs(value) < 2**63 else f"{value.bit_length()}-bit integer"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN and Infinity are not JSON
    return _cut(str(value))


def _cut(text: str) -> str:
    """At most RAW_STRING_CHARS characters, without what PostgreSQL's JSON cannot store (NUL,
    half of a surrogate pair): a usage row that cannot be written would leave the call
    unbilled."""
    cut = text[:RAW_STRING_CHARS].replace("\x00", "")
    return cut.encode("utf-8", "replace").decode("utf-8")


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


class Translator:
    """Turns upstream events into client bytes and keeps the upstream-reported usage.

    The upstream is not trusted: ``feed`` and ``finish`` answer, or raise
    ``UpstreamStreamError`` (for an error the upstream sent, or an event that
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
        self.answer_id: str | None = None  # the upstream's id for its answer, where it matters

    def feed(self, event: Event) -> tuple[bytes, str]:
        """Bytes for the client and the output text the event carried."""
        if self.completed:
            return b"", ""  # after the upstream's own end: not part of the answer
        if not event.data or event.data.isspace():
            # An event without data is not dispatched by an SSE client: nothing to relay.
            return b"", ""
        try:
            return self._feed(event)
        except MalformedUpstream:
            self.completed = False
            raise
        except READ_ERRORS as problem:
            self.completed = False
            detail = f"{type(problem).__name__} in {type(self).__name__}"
            raise UpstreamStreamError(detail=detail) from None

    def finish(self) -> bytes:
        """Bytes that close the client's stream once the upstream has ended."""
        try:
            return self._finish()
        except MalformedUpstream:
            raise
        except READ_ERRORS as problem:
            detail = f"{type(problem).__name__} closing {type(self).__name__}"
            raise UpstreamStreamError(detail=detail) from None

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


def json_object(event: Event) -> dict:
    data = event.json()
    if data is None:
        raise UpstreamStreamError(detail="event data is not a JSON object")
    return data


class ChainedTranslator(Translator):
    """Two translators through the hub: ``upstream`` turns the upstream's events into hub
    chunks (OpenAI chat chunks as SSE bytes), ``client`` turns those into the client's bytes.

    What the relay reads from a translator is the upstream's: the usage it reported (and a
    report that could not be trusted), whether it ended the stream properly, and the output
    text its events carried; the client side only reframes. ``upstream`` should be made with
    ``client_wants_usage=True`` so that the usage reaches ``client``, which shows it in the
    client's own closing event.
    """

    def __init__(self, upstream: Translator, client: Translator):
        super().__init__()
        self._upstream = upstream
        self._client = client
        self._hub = EventParser()

    def _feed(self, event: Event) -> tuple[bytes, str]:
        try:
            hub, text = self._upstream.feed(event)
        finally:
            self._copy_upstream_state()
        return self._relay(hub), text

    def _finish(self) -> bytes:
        try:
            hub = self._upstream.finish()
        finally:
            self._copy_upstream_state()
        return self._relay(hub) + self._client.finish()

    def _relay(self, hub: bytes) -> bytes:
        if not hub:
            return b""
        out = [self._client.feed(event)[0] for event in self._hub.feed(hub)]
        return b"".join(out)

    def _copy_upstream_state(self) -> None:
        self.usage = self._upstream.usage
        self.usage_problem = self._upstream.usage_problem
        self.completed = self._upstream.completed
