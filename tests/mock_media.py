"""The mock upstream's image and audio endpoints (OpenAI's shapes), for tests/mock_upstream.

Each handler takes the `MockUpstream`, the request, its JSON body (None for a form) and the
behaviour; `MockUpstream._serve` routes them through its key check and scripted behaviours.
Forms are read as a stream, a chunk at a time, and never kept: `mock.uploads` records each
one's text fields and, per file, its name, type, size and SHA-256 (what a test compares with
what it sent), so a 50 MB upload costs the mock no more memory than a small one.

Behaviour keys used here: ``images`` (how many images to answer, default the request's `n`),
``seconds`` (the audio length reported; default a WAV upload's own length, else 3.0),
``chunks`` and ``chunk_delay`` (speech: how many 4 KB chunks of audio and the pause between
them), ``usage`` (gpt-image-1's usage fields to report instead).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
from typing import Any

from aiohttp import web

# A 1x1 PNG, the image every answer carries.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SPEECH_CHUNK = 4096
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
TRANSCRIPT = "hello from the mock"
# gpt-image-1's output tokens per image at the sizes and qualities the mock makes.
IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160}


async def read_form(request: web.Request) -> dict:
    """A multipart form's fields, and its files as name, type, size and SHA-256."""
    fields: dict[str, str] = {}
    files: dict[str, list[dict]] = {}
    reader = await request.multipart()
    async for part in reader:
        if part.filename is None:
            fields[part.name] = (await part.read()).decode()
            continue
        digest, size, head = hashlib.sha256(), 0, b""
        while chunk := await part.read_chunk(64 * 1024):
            digest.update(chunk)
            if len(head) < 64:
                head += chunk[: 64 - len(head)]
            size += len(chunk)
        files.setdefault(part.name, []).append(
            {
                "filename": part.filename,
                "content_type": part.headers.get("Content-Type", ""),
                "size": size,
                "sha256": digest.hexdigest(),
                "seconds": wav_seconds(head, size),
            }
        )
    return {"fields": fields, "files": files}


def wav_seconds(head: bytes, size: int) -> float | None:
    """A plain 44-byte-header WAV's length, from its byte rate and size."""
    if len(head) < 44 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    byte_rate = struct.unpack_from("<I", head, 28)[0]
    return (size - 44) / byte_rate if byte_rate else None


async def _request(mock: Any, request: web.Request, body: dict | None) -> dict:
    """The request's fields (JSON or form), the form recorded in `mock.uploads`."""
    if request.content_type != "multipart/form-data":
        return dict(body or {})
    form = await read_form(request)
    with mock._lock:
        mock.uploads.append(form)
    return {**form["fields"], "_files": form["files"]}


async def images(mock: Any, request: web.Request, body: dict | None, behaviour: dict):
    fields = await _request(mock, request, body)
    model = fields.get("model", "dall-e-2")
    count = behaviour.get("images", int(fields.get("n") or 1))
    b64 = model.startswith("gpt-image") or fields.get("response_format") == "b64_json"
    data = [
        {"b64_json": base64.b64encode(PNG).decode()}
        if b64
        else {"url": f"https://images.example/mock-{index}.png"}
        for index in range(count)
    ]
    answer: dict[str, Any] = {"created": 1700000000, "data": data}
    if model.startswith("gpt-image"):
        size = fields.get("size") or "auto"
        quality = fields.get("quality") or "auto"
        # Like the real model, "auto" picks: the mock picks a square medium image.
        answer["size"] = "1024x1024" if size == "auto" else size
        answer["quality"] = "medium" if quality == "auto" else quality
        text_tokens = len(str(fields.get("prompt", "")).split())
        image_tokens = 500 * len(fields.get("_files", {}).get("image", []))
        answer["usage"] = {
            "input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": IMAGE_TOKENS.get(answer["quality"], 4160) * count,
            **(behaviour.get("usage") or {}),
        }
        answer["usage"]["total_tokens"] = (
            answer["usage"]["input_tokens"] + answer["usage"]["output_tokens"]
        )
    elif model == "dall-e-3":
        for image in data:
            image["revised_prompt"] = fields.get("prompt", "")
    return web.json_response(answer)


async def speech(mock: Any, request: web.Request, body: dict | None, behaviour: dict):
    fields = body or {}
    audio_format = fields.get("response_format") or "mp3"
    response = web.StreamResponse(
        headers={"Content-Type": AUDIO_TYPES.get(audio_format, "audio/mpeg")}
    )
    chunks = behaviour.get("chunks", 4)
    delay = behaviour.get("chunk_delay", 0)
    sent = 0
    completed = False
    try:
        await response.prepare(request)
        for index in range(chunks):
            if index and delay:
                await asyncio.sleep(delay)
                if mock._client_gone(request):
                    raise ConnectionResetError("the client hung up")
            await response.write(bytes([index % 256]) * SPEECH_CHUNK)
            sent += 1
        await response.write_eof()
        completed = True
    except ConnectionError:
        mock._record_cancelled(request)
    finally:
        with mock._lock:
            mock.events.append({"path": request.path, "completed": completed, "sent": sent})
    return response


async def transcription(mock: Any, request: web.Request, body: dict | None, behaviour: dict):
    fields = await _request(mock, request, body)
    [file] = fields["_files"]["file"][:1]
    seconds = behaviour.get("seconds", file["seconds"] if file["seconds"] is not None else 3.0)
    model = fields.get("model", "whisper-1")
    asked = fields.get("response_format") or "json"
    if asked == "text":
        return web.Response(text=TRANSCRIPT + "\n", content_type="text/plain")
    if asked in ("srt", "vtt"):
        return web.Response(text=subtitles(asked, seconds), content_type="text/plain")
    if asked == "verbose_json":
        answer: dict[str, Any] = {
            "task": "translate" if request.path.endswith("translations") else "transcribe",
            "language": "english",
            "duration": seconds,
            "text": TRANSCRIPT,
            "segments": [{"id": 0, "start": 0.0, "end": seconds, "text": TRANSCRIPT}],
        }
    elif model.startswith("gpt-4o"):
        audio_tokens = round(seconds * 10)
        answer = {
            "text": TRANSCRIPT,
            "usage": {
                "type": "tokens",
                "input_tokens": audio_tokens + 3,
                "input_token_details": {"text_tokens": 3, "audio_tokens": audio_tokens},
                "output_tokens": 5,
                "total_tokens": audio_tokens + 8,
            },
        }
    else:
        answer = {"text": TRANSCRIPT, "usage": {"type": "duration", "seconds": seconds}}
    return web.Response(text=json.dumps(answer), content_type="application/json")


def subtitles(kind: str, seconds: float) -> str:
    """One cue from 0 to ``seconds``, in SRT or WebVTT."""
    whole = int(seconds)
    millis = round((seconds - whole) * 1000)
    separator = "," if kind == "srt" else "."
    end = f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}{separator}{millis:03d}"
    start = f"00:00:00{separator}000"
    if kind == "srt":
        return f"1\n{start} --> {end}\n{TRANSCRIPT}\n\n"
    return f"WEBVTT\n\n{start} --> {end}\n{TRANSCRIPT}\n\n"
