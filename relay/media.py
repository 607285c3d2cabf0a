"""Images and audio: uploads, per-call prices, and answers that are not chat.

The operations here (relay.operations: ``images_*``, ``audio_*``) are admitted and forwarded
like any other call (relay.admission, relay.proxy), with four differences, all in this module:

- **Uploads.** ``/v1/images/edits``, ``/v1/images/variations``, ``/v1/audio/transcriptions``
  and ``/v1/audio/translations`` take ``multipart/form-data``. relay.http spools such a body to
  a temporary file (in memory up to ``relay.http.UPLOAD_MEMORY_BYTES``, on disk beyond), never
  whole in memory; ``Upload.form`` finds its parts in that file without reading the files in
  them, and reads only the small text fields (model, n, size, quality, response_format, ...).
  The upstream is sent the client's own bytes, streamed from the file, with only the model's
  value replaced by the channel's name for it (and, in one case below, the response format).
- **Per-call prices.** Images are billed per image by size and quality
  (``Price.image_quota``), or by the tokens the upstream reports when the model has no
  per-image table but a token price (gpt-image-1 by default); speech per 1,000 input
  characters; transcription and translation per minute of audio. ``hold_for`` sizes the hold,
  the answer's handlers settle the exact charge, never above the hold.
- **Audio length.** The hold for a transcription is the file's length read from its header
  (WAV and MP3, through relay.tokens' readers), or, for other formats, as long as its bytes
  could last at 8 kbit/s. It is settled from the upstream's figure (``verbose_json``'s
  ``duration``, ``usage.seconds``, the end of the last ``srt``/``vtt`` cue, or audio tokens at
  10 a second), else the header's; a ``text`` answer for a file whose length cannot be read is
  asked of the upstream as ``json`` (which carries the usage) and answered as text.
- **Answers.** Speech is binary audio streamed back as it arrives, with the upstream's content
  type; transcriptions come back in the format asked for, as the upstream wrote them.
"""

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import IO, Any, NamedTuple

import httpx
from django.conf import settings

from billing.operations import CallStatus, UsageFlag
from billing.pricing import Demand, Price
from relay import tokens
from relay.calls import Call, stream_response
from relay.errors import RelayError, invalid_request
from relay.formats.common import UsageProblem
from relay.formats.openai_chat import normalize_openai_usage
from relay.operations import (
    AUDIO_SPEECH,
    AUDIO_TRANSCRIPTIONS,
    AUDIO_TRANSLATIONS,
    IMAGES_EDITS,
    IMAGES_GENERATIONS,
    IMAGES_VARIATIONS,
    Operation,
)
from relay.providers.base import Provider
from relay.responses import Response, StreamingResponse

logger = logging.getLogger(__name__)

# --- Multipart forms ---------------------------------------------------------------------------

# A form's text fields are small (a prompt is at most 32,000 characters); a file is any size.
FORM_TEXT_BYTES = 256 * 1024
MOST_PARTS = 64
PART_HEADER_BYTES = 16 * 1024
SCAN_BYTES = 1024 * 1024  # the upload is searched for its boundaries this much at a time
SEND_BYTES = 256 * 1024  # and sent upstream this much at a time
BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))', re.IGNORECASE)
HEADER_PARAMETER = re.compile(r';\s*([\w*.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
# Fields sent as numbers in a form, turned into numbers before the request's shape is checked.
INTEGER_FIELDS = frozenset({"n", "output_compression", "partial_images"})
NUMBER_FIELDS = frozenset({"temperature"})


class Part(NamedTuple):
    """One part of a multipart body: its name, file name (None for a text field), declared
    type, and where its content lies in the spooled body (``start`` to ``end``)."""

    name: str
    filename: str | None
    content_type: str
    start: int
    end: int


@dataclass
class Form:
    """A parsed form: its text fields (decoded) and every part, in order."""

    fields: dict[str, str]
    parts: list[Part]

    def files(self, *names: str) -> list[Part]:
        return [part for part in self.parts if part.filename is not None and part.name in names]


class Upload:
    """A ``multipart/form-data`` body spooled by relay.http: the file it is in, its size, the
    client's content type (with its boundary), and its form, parsed on first use."""

    def __init__(self, file: IO[bytes], size: int, content_type: str):
        self.file = file
        self.size = size
        self.content_type = content_type

    @cached_property
    def form(self) -> Form:
        """The parts of the body (RelayError 400 when it is not a readable form). Reads the
        whole file once, in pieces: call it off the event loop for a big upload."""
        return _parse_form(self.file, self.size, _boundary(self.content_type))

    def read(self, start: int, count: int) -> bytes:
        self.file.seek(start)
        return self.file.read(count)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


def _boundary(content_type: str) -> bytes:
    if not content_type.lower().startswith("multipart/form-data"):
        raise invalid_request("This endpoint takes multipart/form-data (a file upload).")
    found = BOUNDARY.search(content_type)
    if found is None:
        raise invalid_request("The multipart/form-data body names no boundary.")
    return (found[1] or found[2]).encode("latin-1")


def _parse_form(file: IO[bytes], size: int, boundary: bytes) -> Form:
    delimiter = b"\r\n--" + boundary
    # The body opens with "--boundary": read as if preceded by a line break, so that every
    # delimiter, the first included, is found the same way.
    positions = _find_all(file, size, delimiter, opening=b"\r\n")
    parts: list[Part] = []
    fields: dict[str, str] = {}
    for index, position in enumerate(positions):
        after = position + len(delimiter)
        file.seek(after)
        head = file.read(PART_HEADER_BYTES)
        if head.startswith(b"--"):  # the closing delimiter
            break
        if index + 1 >= len(positions):
            raise invalid_request("The multipart/form-data body ends before its last part does.")
        if len(parts) >= MOST_PARTS:
            raise invalid_request(f"A form may have at most {MOST_PARTS} parts.")
        line_end = head.find(b"\r\n")
        headers_end = head.find(b"\r\n\r\n", max(line_end, 0))
        if line_end < 0 or headers_end < 0:
            raise invalid_request("A part of the multipart/form-data body has unreadable headers.")
        headers = _part_headers(head[line_end + 2 : headers_end + 2])
        name, filename = _disposition(headers.get("content-disposition", ""))
        part = Part(
            name=name,
            filename=filename,
            content_type=headers.get("content-type", ""),
            start=after + headers_end + 4,
            end=positions[index + 1],
        )
        if part.start > part.end:
            raise invalid_request("A part of the multipart/form-data body is cut short.")
        parts.append(part)
        if filename is None:
            if part.end - part.start > FORM_TEXT_BYTES:
                raise invalid_request(
                    f"{name}: a text field may hold at most {FORM_TEXT_BYTES} bytes.", param=name
                )
            file.seek(part.start)
            try:
                fields[name] = file.read(part.end - part.start).decode("utf-8")
            except UnicodeDecodeError:
                raise invalid_request(f"{name}: not UTF-8 text.", param=name) from None
    if not parts:
        raise invalid_request("The multipart/form-data body has no parts.")
    return Form(fields=fields, parts=parts)


def _find_all(file: IO[bytes], size: int, needle: bytes, *, opening: bytes) -> list[int]:
    """Offsets in ``file`` of every ``needle`` in ``opening`` + the file's bytes (an offset
    inside ``opening`` is negative), searched a piece at a time."""
    found: list[int] = []
    file.seek(0)
    carried = opening
    base = -len(opening)  # the file offset of carried[0]
    while True:
        piece = file.read(SCAN_BYTES)
        window = carried + piece
        at = window.find(needle)
        while at >= 0:
            found.append(base + at)
            at = window.find(needle, at + len(needle))
        if not piece:
            return found
        keep = min(len(needle) - 1, len(window))
        # What follows the last match need not be searched again.
        if found and found[-1] - base + len(needle) > len(window) - keep:
            keep = len(window) - (found[-1] - base + len(needle))
        carried = window[len(window) - keep :] if keep else b""
        base += len(window) - len(carried)


def _part_headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _disposition(value: str) -> tuple[str, str | None]:
    if not value.lower().startswith("form-data"):
        raise invalid_request("A part of the multipart/form-data body is not form data.")
    parameters = {
        match[1].lower(): (match[2].replace('\\"', '"') if match[2] is not None else match[3])
        for match in HEADER_PARAMETER.finditer(value)
    }
    if "name" not in parameters:
        raise invalid_request("A part of the multipart/form-data body has no name.")
    return parameters["name"], parameters.get("filename", parameters.get("filename*"))


# The file fields each upload operation takes (OpenAI's names; "image[]" is how clients send
# several images to gpt-image-1), and the one it needs.
FILE_FIELDS = {
    IMAGES_EDITS: ("image", "image[]", "mask"),
    IMAGES_VARIATIONS: ("image",),
    AUDIO_TRANSCRIPTIONS: ("file",),
    AUDIO_TRANSLATIONS: ("file",),
}
REQUIRED_FILE = {
    IMAGES_EDITS: ("image", "image", "image[]"),
    IMAGES_VARIATIONS: ("image", "image"),
    AUDIO_TRANSCRIPTIONS: ("file", "file"),
    AUDIO_TRANSLATIONS: ("file", "file"),
}


def form_body(upload: Upload, operation: Operation) -> dict:
    """The request a form stands for, as a dict of its text fields (numbers made numbers) for
    the checks every call goes through; a missing file is a 400 naming its field."""
    form = upload.form
    param, *names = REQUIRED_FILE[operation.name]
    if not form.files(*names):
        raise invalid_request(f"{param}: a file is required.", param=param)
    body: dict[str, Any] = dict(form.fields)
    for name in INTEGER_FIELDS & body.keys():
        with contextlib.suppress(ValueError):
            body[name] = int(body[name])
    for name in NUMBER_FIELDS & body.keys():
        with contextlib.suppress(ValueError):
            body[name] = float(body[name])
    if body.get("stream") in ("true", "false"):
        body["stream"] = body["stream"] == "true"
    return body


class PartBytes(tokens.Base64Bytes):
    """A file part of an upload, read at any offset the way relay.tokens reads base64, so its
    header readers (image sizes, audio lengths) read uploads too."""

    def __init__(self, upload: Upload, part: Part):  # no base64 here: nothing to set up
        self.upload, self.part = upload, part
        self.size = part.end - part.start

    def read(self, offset: int, count: int) -> bytes:
        if offset < 0 or count <= 0 or offset >= self.size:
            return b""
        return self.upload.read(self.part.start + offset, min(count, self.size - offset))


# --- Holds and charges ---------------------------------------------------------------------------

# gpt-image-1's output tokens per image, by quality and size (OpenAI's image generation guide).
IMAGE_OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
MOST_IMAGE_OUTPUT_TOKENS = max(max(sizes.values()) for sizes in IMAGE_OUTPUT_TOKENS.values())
AUTO = "auto"
# DALL·E's defaults when a request names no size or quality; other models default to "auto".
DALL_E_SIZE, DALL_E_QUALITY = "1024x1024", "standard"
# OpenAI's gpt-4o audio models take 10 tokens per second of audio.
AUDIO_TOKENS_PER_SECOND = tokens.AUDIO_TOKENS_PER_SECOND


@dataclass(frozen=True)
class Held:
    """What a media call's hold was sized from, for its settlement."""

    quota: int  # the per-call charge held (0 for token-billed images: the hold is the Demand's)
    by_tokens: bool = False
    size: str = ""
    quality: str = ""
    unit: int = 0  # quota per image at the held size and quality
    seconds: float = 0.0  # audio: the length held
    seconds_read: bool = False  # audio: read from the file's header (not the cap)


def hold_for(call: Call) -> int | None:
    """The quota to hold for a media call (None for any other operation), after counting what
    only this module can (the input images of an edit billed by tokens); a 400 naming the size,
    quality or model when the call's kind is not priced (never free)."""
    name = call.operation.name
    if name in IMAGE_OPERATIONS:
        held = _hold_images(call)
    elif name == AUDIO_SPEECH:
        characters = len(call.body.get("input") or "")
        quota = call.price.speech_quota(characters=characters, group_ratio=call.group_ratio)
        held = Held(quota=_priced(quota, "speech"))
    elif name in (AUDIO_TRANSCRIPTIONS, AUDIO_TRANSLATIONS):
        held = _hold_audio(call)
    else:
        return None
    call.media = held
    if held.by_tokens:
        return _token_hold(call, held)
    return held.quota


IMAGE_OPERATIONS = frozenset({IMAGES_GENERATIONS, IMAGES_EDITS, IMAGES_VARIATIONS})


def _priced(quota: int | None, what: str, param: str = "model") -> int:
    if quota is None:
        raise invalid_request(
            f"{param}: {what} is not priced for this model on this site.", param=param
        )
    return quota


def _image_request(call: Call) -> tuple[str, str]:
    """The size and quality asked for (their defaults filled in)."""
    dall_e = call.model.startswith("dall-e")
    size = str(call.body.get("size") or (DALL_E_SIZE if dall_e else AUTO))
    quality = str(call.body.get("quality") or (DALL_E_QUALITY if dall_e else AUTO))
    return size, quality


def _hold_images(call: Call) -> Held:
    size, quality = _image_request(call)
    price = call.price
    if not price.image_quotas and not price.is_free and price.model_ratio > 0:
        return Held(quota=0, by_tokens=True, size=size, quality=quality)
    unit = image_unit(price, size, quality, call.group_ratio)
    if unit is None:
        what = f"an image of size {size}" + (f" and quality {quality}" if quality else "")
        raise invalid_request(
            f"size: {what} is not priced for this model on this site.", param="size"
        )
    return Held(quota=unit * _images_asked(call), size=size, quality=quality, unit=unit)


def _images_asked(call: Call) -> int:
    n = call.body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def image_unit(price: Price, size: str, quality: str, group_ratio: Decimal) -> int | None:
    """Quota per image of ``size`` and ``quality``; for "auto", the dearest the table has."""
    if size != AUTO and quality != AUTO:
        return price.image_quota(size=size, quality=quality, group_ratio=group_ratio)
    keys = [key.partition("/") for key in dict(price.image_quotas)]
    sizes = {key[0] for key in keys} if size == AUTO else {size}
    qualities = {key[2] for key in keys} | {""} if quality == AUTO else {quality}
    units = [
        price.image_quota(size=s, quality=q, group_ratio=group_ratio)
        for s in sizes
        for q in qualities
    ]
    known = [unit for unit in units if unit is not None]
    if price.is_free:
        return 0
    return max(known) if known else None


def _image_tokens(size: str, quality: str) -> int:
    """gpt-image-1's output tokens for one image; the most for "auto" or an unknown value."""
    by_size = IMAGE_OUTPUT_TOKENS.get(quality) or IMAGE_OUTPUT_TOKENS["high"]
    return by_size.get(size) or max(by_size.values())


def _token_hold(call: Call, held: Held) -> int:
    """A hold by tokens: the prompt (counted at admission) and the input images of an edit as
    OpenAI's tile formula counts them, plus the output tokens of every image asked for."""
    if call.upload is not None:
        for part in call.upload.form.files("image", "image[]", "mask"):
            dimensions = tokens.image_size(PartBytes(call.upload, part))
            call.input_tokens += tokens.openai_image_tokens(dimensions, "high", call.model)
    per_image = _image_tokens(held.size, held.quality)
    images = _images_asked(call)
    call.output_cap = per_image * images
    demand = Demand(input_tokens=call.input_tokens, output_tokens=per_image, choices=images)
    return call.price.most(demand, call.group_ratio)


def _hold_audio(call: Call) -> Held:
    seconds, read = 60.0, False
    if call.upload is not None:
        [part] = call.upload.form.files("file")[:1]
        data = PartBytes(call.upload, part)
        seconds = tokens.audio_seconds(data)
        # audio_seconds gives the cap (the most the bytes could last) when it cannot read one.
        read = seconds < data.size / tokens.AUDIO_LEAST_BYTES_PER_SECOND
        seconds = max(seconds, 0.1)
    quota = call.price.audio_quota(seconds=seconds, group_ratio=call.group_ratio)
    return Held(quota=_priced(quota, "audio"), seconds=seconds, seconds_read=read)


# --- The upstream request -------------------------------------------------------------------------


def upstream_request(
    call: Call, provider: Provider, url: str, headers: dict[str, str]
) -> httpx.Request:
    """The request to the upstream: the client's JSON with the channel's model name, or the
    client's form streamed from its spooled file with that name in its model field. A channel
    whose provider does not serve the operation itself (the demo channel) refuses it."""
    if call.operation.name not in provider.native:
        raise invalid_request(
            f"The model '{call.model}' cannot be used with {call.operation.path}."
        )
    headers = {
        name: value
        for name, value in headers.items()
        if name.lower() not in ("content-type", "content-length")
    }
    timeout = httpx.Timeout(
        settings.RELAY_READ_TIMEOUT,
        connect=settings.RELAY_CONNECT_TIMEOUT,
        pool=settings.RELAY_POOL_WAIT_SECONDS,
    ).as_dict()
    if call.upload is None:
        body = json.dumps(dict(call.body, model=call.upstream_model)).encode()
        headers = {**headers, "content-type": "application/json"}
        return httpx.Request(
            "POST", url, headers=headers, content=body, extensions={"timeout": timeout}
        )
    changes = {"model": call.upstream_model}
    if _answer_as_text(call):
        changes["response_format"] = "json"
    pieces = _form_pieces(call.upload, changes)
    length = sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in pieces)
    headers = {
        **headers,
        "content-type": call.upload.content_type,
        "content-length": str(length),
    }
    return httpx.Request(
        "POST",
        url,
        headers=headers,
        content=_send(call.upload, pieces),
        extensions={"timeout": timeout},
    )


def _form_pieces(upload: Upload, changes: dict[str, str]) -> list[bytes | tuple[int, int]]:
    """The upload as ranges of its file, with the values of ``changes``' fields replaced."""
    pieces: list[bytes | tuple[int, int]] = []
    position = 0
    for part in upload.form.parts:
        if part.filename is None and part.name in changes:
            pieces.append((position, part.start))
            pieces.append(changes[part.name].encode())
            position = part.end
    pieces.append((position, upload.size))
    return pieces


async def _send(upload: Upload, pieces: list[bytes | tuple[int, int]]) -> AsyncIterator[bytes]:
    for piece in pieces:
        if isinstance(piece, bytes):
            yield piece
            continue
        start, end = piece
        while start < end:
            chunk = upload.read(start, min(SEND_BYTES, end - start))
            if not chunk:
                return
            start += len(chunk)
            yield chunk


def _answer_as_text(call: Call) -> bool:
    """A ``text`` transcription of a file whose length cannot be read is asked for as JSON,
    which carries the usage to bill, and answered as its text."""
    held = call.media
    return (
        isinstance(held, Held)
        and call.operation.name in (AUDIO_TRANSCRIPTIONS, AUDIO_TRANSLATIONS)
        and call.body.get("response_format") == "text"
        and not held.seconds_read
    )


# --- Answers ------------------------------------------------------------------------------------


async def answer(call: Call, response: httpx.Response) -> Response | StreamingResponse:
    """The client's answer to a media call the upstream accepted, settled exactly."""
    if call.operation.name == AUDIO_SPEECH:
        return _speech(call, response)
    raw = await response.aread()
    if call.operation.name in IMAGE_OPERATIONS:
        return await _images_answered(call, raw)
    return await _transcription_answered(call, raw, response.headers.get("content-type", ""))


def _unreadable() -> RelayError:
    return RelayError(
        502,
        "The upstream sent an answer that could not be read.",
        code="upstream_error",
        error_type="server_error",
    )


def _held(call: Call) -> Held:
    if not isinstance(call.media, Held):
        raise RuntimeError("a media call is answered only once its hold is placed")
    return call.media


async def _images_answered(call: Call, raw: bytes) -> Response:
    try:
        answer = json.loads(raw)
        images = answer["data"]
        if not isinstance(images, list):
            raise TypeError("data is not a list")
    except (ValueError, KeyError, TypeError, RecursionError):
        raise _unreadable() from None
    held = _held(call)
    made = min(len(images), _images_asked(call))
    if held.by_tokens:
        problem = None
        try:
            reported = normalize_openai_usage(answer.get("usage"))
        except UsageProblem as bad:
            reported, problem = None, bad.raw
        per_image = _image_tokens(
            str(answer.get("size") or held.size), str(answer.get("quality") or held.quality)
        )
        await call.settle(
            reported, CallStatus.SUCCESS, local_output=per_image * made, problem=problem
        )
    else:
        unit = held.unit
        if AUTO in (held.size, held.quality):  # the upstream chose: bill what it made
            size = held.size if held.size != AUTO else str(answer.get("size") or AUTO)
            quality = held.quality if held.quality != AUTO else str(answer.get("quality") or AUTO)
            unit = min(image_unit(call.price, size, quality, call.group_ratio) or unit, unit)
        await call.settle_at(unit * made, CallStatus.SUCCESS)
    return Response(200, raw)


async def _transcription_answered(call: Call, raw: bytes, content_type: str) -> Response:
    held = _held(call)
    asked = call.body.get("response_format") or "json"
    reported, answer = None, None
    if asked in ("json", "verbose_json") or _answer_as_text(call):
        try:
            answer = json.loads(raw)
            if not isinstance(answer, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError, RecursionError):
            raise _unreadable() from None
        reported = reported_seconds(answer)
    elif asked in ("srt", "vtt") and not held.seconds_read:
        # The last cue ends where speech does, at most the audio's end: better than the cap.
        reported = cues_end(raw.decode("utf-8", "replace"))
    seconds, flag = held.seconds, UsageFlag.TRUSTED
    if reported is not None:
        # The upstream's figure, never above what was held.
        seconds = min(reported, held.seconds)
        flag = UsageFlag.CLAMPED if reported > held.seconds else UsageFlag.TRUSTED
    elif not held.seconds_read:
        logger.warning(
            "audio call on channel %s: no length to bill, the cap held is", _channel(call)
        )
        flag = UsageFlag.REJECTED
    cost = call.price.audio_quota(seconds=seconds, group_ratio=call.group_ratio) or 0
    await call.settle_at(
        min(cost, held.quota), CallStatus.SUCCESS, flag=flag, raw={"seconds": reported}
    )
    if _answer_as_text(call):
        text = answer.get("text") if isinstance(answer, dict) else None
        return Response(200, f"{text or ''}\n".encode(), content_type="text/plain; charset=utf-8")
    return Response(200, raw, content_type=content_type or "application/json")


def _channel(call: Call) -> int | None:
    return call.channel.id if call.channel else None


def reported_seconds(answer: dict) -> float | None:
    """The audio length an upstream's JSON answer gives: verbose_json's ``duration``, usage of
    type "duration", or usage in audio tokens (10 a second); None when it gives none."""
    candidates = [answer.get("duration")]
    usage = answer.get("usage")
    if isinstance(usage, dict):
        candidates.append(usage.get("seconds"))
        details = usage.get("input_token_details")
        if isinstance(details, dict) and _finite(details.get("audio_tokens")):
            candidates.append(details["audio_tokens"] / AUDIO_TOKENS_PER_SECOND)
    for value in candidates:
        if isinstance(value, int | float) and _finite(value):
            return float(value)
    return None


def _finite(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


CUE_TIME = re.compile(r"-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")


def cues_end(text: str) -> float | None:
    """When the last cue of an SRT or WebVTT transcript ends, in seconds (None: no cue)."""
    last = None
    for match in CUE_TIME.finditer(text):
        last = match
    if last is None:
        return None
    hours, minutes, seconds, fraction = last.groups()
    return (
        int(hours or 0) * 3600
        + int(minutes) * 60
        + int(seconds)
        + int(fraction.ljust(3, "0")) / 1000
    )


def _speech(call: Call, response: httpx.Response) -> StreamingResponse:
    streaming = stream_response(
        call, _speech_bytes(call, response), on_unsent=lambda: _close_quietly(response)
    )
    streaming.content_type = response.headers.get("content-type", "audio/mpeg")
    return streaming


async def _speech_bytes(call: Call, response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The upstream's audio as it arrives. Speech is billed by its input, which the upstream
    bills whole once it speaks: a call is charged in full once any audio reached the client
    (a client that leaves mid-download too), and nothing if none did."""
    sent = False
    status = CallStatus.CLIENT_GONE
    try:
        async for chunk in response.aiter_bytes():
            if chunk:
                yield chunk
                sent = True
        status = CallStatus.SUCCESS
    except httpx.HTTPError as broken:
        status = CallStatus.UPSTREAM_ERROR
        logger.warning("speech from channel %s broke: %s", _channel(call), type(broken).__name__)
    finally:
        try:
            await asyncio.shield(_close_quietly(response))
        finally:
            if sent:
                await call.settle_at(_held(call).quota, status)
            else:
                await call.release()


async def _close_quietly(response: httpx.Response) -> None:
    with contextlib.suppress(Exception):  # a broken upstream connection is already gone
        await response.aclose()
