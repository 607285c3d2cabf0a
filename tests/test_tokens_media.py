"""Counting images, files and audio in a request's input (relay/tokens.py).

A call's hold, and the bill of a stream cut before its usage event, use these counts: an image
must count what the provider bills for it (its tile, patch or pixel formula), never its base64
text. Every fixture is built here, byte by byte, so each expected number is worked out by hand
from the providers' published formulas.
"""

import base64
import math
import struct
import zlib

import pytest

from relay import tokens
from relay.tokens import (
    PDF_TEXT_TOKENS_PER_PAGE,
    UNKNOWN_FILE_TOKENS,
    Base64Bytes,
    count_audio_input,
    count_input,
    count_messages,
    count_text,
    image_size,
)

# --- Files built in the test ----------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    header = struct.pack(">II5B", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + b"\0" * 4


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\0" * 20


def webp_lossy(width: int, height: int) -> bytes:
    frame = b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    chunk = b"VP8 " + struct.pack("<I", 10) + b"\x00\x00\x00" + frame
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk + b"\0" * 8


def webp_lossless(width: int, height: int) -> bytes:
    bits = struct.pack("<I", (width - 1) | (height - 1) << 14)
    chunk = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk + b"\0" * 8


def webp_extended(width: int, height: int) -> bytes:
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + canvas
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk + b"\0" * 8


def jpeg(width: int, height: int, metadata_bytes: int = 0) -> bytes:
    """A JPEG's header: JFIF, then ``metadata_bytes`` of EXIF-like segments, then the frame."""
    segments = [b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\0\0"]
    while metadata_bytes > 0:
        size = min(metadata_bytes, 65000)
        segments.append(b"\xff\xe1" + struct.pack(">H", size + 2) + b"\x5a" * size)
        metadata_bytes -= size
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    segments.append(b"\xff\xc0" + struct.pack(">H", 2 + len(frame)) + frame)
    return b"\xff\xd8" + b"".join(segments) + b"\xff\xda\x00\x08" + b"\0" * 32 + b"\xff\xd9"


def pdf(pages: int, *, compressed: bool = False) -> bytes:
    """A minimal PDF with ``pages`` page objects, plain or packed in a Flate object stream."""
    kids = " ".join(f"{3 + index} 0 R" for index in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"
    if compressed:
        packed = zlib.compress(b"\n".join([page] * pages))
        objects.append(
            b"<< /Type /ObjStm /N %d /First 0 /Filter /FlateDecode /Length %d >>\nstream\r\n"
            % (pages, len(packed))
            + packed
            + b"\r\nendstream"
        )
    else:
        objects += [page] * pages
    body = b"".join(
        b"%d 0 obj\n" % (number + 1) + content + b"\nendobj\n"
        for number, content in enumerate(objects)
    )
    return b"%PDF-1.5\n" + body + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"


def wav(seconds: float, *, rate: int = 8000, channels: int = 1, bits: int = 16) -> bytes:
    byte_rate = rate * channels * bits // 8
    data = b"\0" * int(seconds * byte_rate)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, byte_rate, channels * bits // 8, bits)
    listing = b"LIST" + struct.pack("<I", 4) + b"INFO"  # a chunk to walk past before the data
    chunks = b"fmt " + struct.pack("<I", 16) + fmt + listing + b"data"
    chunks += struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def mp3(frames: int) -> bytes:
    """Constant 128 kbit/s MPEG-1 layer III at 44.1 kHz, behind an ID3v2 tag: 417-byte frames."""
    frame = b"\xff\xfb\x90\x00" + b"\0" * (144 * 128_000 // 44_100 - 4)
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, 0, 20]) + b"\0" * 20
    return tag + frame * frames


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def data_url(raw: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{b64(raw)}"


def openai_image(url, detail: str | None = None) -> dict:
    reference = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"type": "image_url", "image_url": reference}


def anthropic_image(raw: bytes, media_type: str = "image/png") -> dict:
    source = {"type": "base64", "media_type": media_type, "data": b64(raw)}
    return {"type": "image", "source": source}


def image_cost(part: dict, model: str, media: str = "openai") -> int:
    """What one part adds to a message that otherwise holds one word."""
    word = {"type": "text", "text": "look"}
    with_part = [{"role": "user", "content": [word, part]}]
    without = [{"role": "user", "content": [word]}]
    return count_messages(with_part, model, media=media) - count_messages(
        without, model, media=media
    )


# --- Reading image headers -----------------------------------------------------------------


@pytest.mark.parametrize("build", [png, gif, webp_lossy, webp_lossless, webp_extended, jpeg])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (1500, 3000)])
def test_it_reads_width_and_height_from_each_image_format(build, size):
    assert image_size(Base64Bytes(b64(build(*size)))) == size


def test_it_finds_a_jpeg_size_behind_large_metadata_without_decoding_the_metadata(monkeypatch):
    raw = jpeg(4000, 3000, metadata_bytes=300_000)
    decoded = []
    real_decode = base64.b64decode
    monkeypatch.setattr(
        base64, "b64decode", lambda text, **kw: decoded.append(len(text)) or real_decode(text, **kw)
    )

    assert image_size(Base64Bytes(b64(raw))) == (4000, 3000)
    assert sum(decoded) < 1000  # a few characters per segment, not 400 KB of base64


def test_a_20_mb_image_is_counted_from_its_header_alone(monkeypatch):
    url = data_url(png(1024, 1024) + b"\0" * (15 * 1024 * 1024))
    assert len(url) > 20_000_000
    decoded = []
    real_decode = base64.b64decode
    monkeypatch.setattr(
        base64, "b64decode", lambda text, **kw: decoded.append(len(text)) or real_decode(text, **kw)
    )

    assert image_cost(openai_image(url, "high"), "gpt-4o") == 765
    assert max(decoded) <= 64 * 1024


# --- OpenAI's formulas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "detail", "expected"),
    [
        # 1024 fits 2048; short side 1024 -> 768: 768x768 is 2x2 tiles: 85 + 4 * 170
        ((1024, 1024), "high", 765),
        # fit 2048: 1024x2048; short side -> 768: 768x1536 is 2x3 tiles: 85 + 6 * 170
        ((2048, 4096), "high", 1105),
        ((2048, 4096), "auto", 1105),
        ((2048, 4096), None, 1105),  # no detail means auto
        ((4096, 8192), "low", 85),  # low is the base alone, whatever the size
        ((512, 512), "high", 255),  # one tile, no resize
        ((100, 3000), "high", 85 + 170 * 4),  # fit 2048: 68x2048, one tile across, four down
    ],
)
def test_gpt_4o_images_count_by_the_tile_formula(size, detail, expected):
    assert image_cost(openai_image(data_url(png(*size)), detail), "gpt-4o") == expected


def test_gpt_4o_mini_uses_its_own_base_and_tile_numbers():
    url = data_url(png(1024, 1024))

    assert image_cost(openai_image(url, "high"), "gpt-4o-mini") == 2833 + 4 * 5667
    assert image_cost(openai_image(url, "low"), "gpt-4o-mini-2024-07-18") == 2833


def test_the_tile_numbers_follow_the_model_family():
    url = data_url(png(1024, 1024))

    assert image_cost(openai_image(url, "high"), "o1-2024-12-17") == 75 + 4 * 150
    assert image_cost(openai_image(url, "high"), "gpt-5") == 70 + 4 * 140
    assert image_cost(openai_image(url, "high"), "computer-use-preview") == 65 + 4 * 129
    assert image_cost(openai_image(url, "high"), "some-new-model") == 765  # unknown: as 4o


@pytest.mark.parametrize(
    ("size", "model", "expected"),
    [
        # 32x32 patches = 1024, under the 1536 cap; times gpt-4.1-mini's 1.62
        ((1024, 1024), "gpt-4.1-mini", math.ceil(1024 * 1.62)),
        # 57x75 = 4275 patches: shrunk by sqrt(1536*32*32/(1800*2400)), then to a whole
        # number of patches across: 33x44 = 1452 (the guide's example), times nano's 2.46
        ((1800, 2400), "gpt-4.1-nano", math.ceil(1452 * 2.46)),
        ((1800, 2400), "o4-mini", math.ceil(1452 * 1.72)),
        # shrunk to sqrt(1536) = 39.2 patches a side, so 39x39 = 1521
        ((100_000, 100_000), "gpt-5-mini", math.ceil(39 * 39 * 1.62)),
    ],
)
def test_patch_models_count_32_pixel_patches_times_their_multiplier(size, model, expected):
    assert image_cost(openai_image(data_url(png(*size)), "high"), model) == expected


def test_an_image_behind_a_url_counts_the_most_its_detail_level_can_cost():
    url = "https://example.com/cat.png"

    # The largest high-detail image is 768x2048 after the resizes: 2x4 tiles.
    assert image_cost(openai_image(url, "high"), "gpt-4o") == 85 + 8 * 170
    assert image_cost(openai_image(url), "gpt-4o") == 85 + 8 * 170
    assert image_cost(openai_image(url, "low"), "gpt-4o") == 85
    assert image_cost({"type": "image_url", "image_url": url}, "gpt-4o") == 85 + 8 * 170
    assert image_cost(openai_image(url, "low"), "gpt-4.1-mini") == math.ceil(1536 * 1.62)


def test_undecodable_image_data_counts_as_the_worst_case():
    broken = "data:image/png;base64,this is not base64 at all"

    assert image_cost(openai_image(broken, "high"), "gpt-4o") == 85 + 8 * 170


def test_a_declared_giant_png_is_capped_by_the_resize():
    giant = png(100_000, 100_000)

    assert image_cost(openai_image(data_url(giant), "high"), "gpt-4o") == 765
    assert image_cost(anthropic_image(giant), "claude-sonnet-4", "anthropic") == 1640


# --- Anthropic's formula --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((200, 200), 54),  # the vision guide's examples: ~54, ~1334, ~1590
        ((1000, 1000), 1334),
        ((1092, 1092), 1590),
        ((784, 1568), 1640),  # the largest unresized 1:2 size
        ((4000, 4000), 1640),  # scaled down to the pixel cap
        ((3000, 600), math.ceil(1568 * (600 * 1568 / 3000) / 750)),  # long edge to 1568
    ],
)
def test_anthropic_images_count_width_times_height_over_750_after_the_resize(size, expected):
    assert image_cost(anthropic_image(png(*size)), "claude-sonnet-4-5", "anthropic") == expected


def test_an_anthropic_image_of_unknown_size_counts_the_cap():
    by_url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    by_file = {"type": "image", "source": {"type": "file", "file_id": "file_abc"}}

    assert image_cost(by_url, "claude-sonnet-4", "anthropic") == 1640
    assert image_cost(by_file, "claude-sonnet-4", "anthropic") == 1640
    assert image_cost(by_url, "claude-opus-4-7", "anthropic") == math.ceil(2576 * 1456 / 750)


def test_the_serving_family_decides_the_formula_not_the_shape_of_the_part():
    raw = jpeg(1000, 1000)

    assert image_cost(openai_image(data_url(raw, "image/jpeg")), "claude-x", "anthropic") == 1334
    assert image_cost(anthropic_image(raw, "image/jpeg"), "gpt-4o", "openai") == 765


def test_a_hundred_images_count_a_hundred_times_one():
    url = data_url(png(1024, 1024))
    one = [{"role": "user", "content": [openai_image(url, "high")]}]
    hundred = [{"role": "user", "content": [openai_image(url, "high")] * 100}]

    assert count_messages(hundred, "gpt-4o") >= 100 * 765
    assert count_messages(hundred, "gpt-4o") - count_messages(one, "gpt-4o") == 99 * 765
    assert count_messages(hundred, "claude-sonnet-4", media="anthropic") >= 100 * 1399


def test_images_inside_tool_results_are_counted():
    image = anthropic_image(png(1000, 1000))
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [image]}
    tool_message = {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": [openai_image(data_url(png(1024, 1024)), "high")],
    }

    assert image_cost(result, "claude-sonnet-4", "anthropic") >= 1334
    assert count_messages([tool_message], "gpt-4o") >= 765


# --- Files ----------------------------------------------------------------------------------


def test_a_three_page_pdf_counts_three_pages_on_either_family():
    raw = pdf(3)
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(raw)},
    }
    file = {"type": "file", "file": {"file_data": data_url(raw, "application/pdf")}}

    # Each page: its text (at most 3000) and its image (the family's image cap).
    assert image_cost(document, "claude-sonnet-4", "anthropic") == 3 * (3000 + 1640)
    assert image_cost(file, "gpt-4o") == 3 * (PDF_TEXT_TOKENS_PER_PAGE + 85 + 8 * 170)


def test_pages_packed_in_compressed_object_streams_are_counted():
    file = {"type": "file", "file": {"file_data": data_url(pdf(7, compressed=True))}}

    assert image_cost(file, "gpt-4o") == 7 * (3000 + 1445)


def test_a_pdf_whose_pages_cannot_be_found_is_estimated_from_its_size():
    blob = b"%PDF-1.7\n" + bytes(range(256)) * 180  # 46 KB, no page object visible
    file = {"type": "file", "file": {"file_data": data_url(blob, "application/pdf")}}

    assert image_cost(file, "gpt-4o") == math.ceil(len(blob) / 20_000) * (3000 + 1445)


def test_a_plain_text_document_counts_as_its_text():
    text = "The quarterly figures, restated. " * 50
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": text},
    }
    as_text = {"type": "text", "text": text}

    assert image_cost(document, "claude-x", "anthropic") == image_cost(as_text, "claude-x")


def test_a_file_known_only_by_its_id_counts_the_stated_worst_case():
    by_id = {"type": "file", "file": {"file_id": "file-abc123"}}
    by_url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}

    assert image_cost(by_id, "gpt-4o") == UNKNOWN_FILE_TOKENS
    assert image_cost(by_url, "claude-x", "anthropic") == UNKNOWN_FILE_TOKENS


def test_an_unknown_part_counts_its_json_without_its_base64():
    blob = b64(bytes(range(256)) * 1000)  # 340 KB of base64: ~100,000 tokens as text
    part = {"type": "mystery_block", "data": blob, "note": "hello", "inner": {"raw": blob}}

    assert image_cost(part, "gpt-4o") < 50
    assert count_text(blob, "gpt-4o") > 50_000


# --- Audio ----------------------------------------------------------------------------------


def audio_message(raw: bytes, audio_format: str) -> list[dict]:
    part = {"type": "input_audio", "input_audio": {"data": b64(raw), "format": audio_format}}
    return [{"role": "user", "content": [{"type": "text", "text": "transcribe"}, part]}]


def test_wav_audio_counts_ten_tokens_a_second_from_its_header():
    assert count_audio_input(audio_message(wav(2.5), "wav")) == 25
    assert count_audio_input(audio_message(wav(3.0, rate=44_100, channels=2), "wav")) == 30


def test_constant_bitrate_mp3_counts_its_duration():
    raw = mp3(100)  # 100 frames of 417 bytes at 128 kbit/s: 2.606 s

    assert count_audio_input(audio_message(raw, "mp3")) == math.ceil(100 * 417 * 8 / 128_000 * 10)


def test_audio_that_cannot_be_read_counts_the_most_seconds_its_bytes_could_hold():
    noise = bytes(range(256)) * 20  # 5120 bytes, neither WAV nor MP3: 5.12 s at 8 kbit/s

    assert count_audio_input(audio_message(noise, "mp3")) == 52


def test_a_wav_header_cannot_claim_more_than_its_bytes_could_hold():
    raw = bytearray(wav(1.0))
    raw[28:32] = struct.pack("<I", 1)  # one byte a second: 16,000 s of 16,000 bytes

    assert count_audio_input(audio_message(bytes(raw), "wav")) <= math.ceil(len(raw) / 100)


def test_audio_is_not_part_of_the_message_count():
    with_audio = audio_message(wav(60.0), "wav")
    text_only = [{"role": "user", "content": [{"type": "text", "text": "transcribe"}]}]

    assert count_messages(with_audio, "gpt-4o-audio-preview") == count_messages(
        text_only, "gpt-4o-audio-preview"
    )


# --- Hostile input --------------------------------------------------------------------------


def deeply_nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_MESSAGES = [
    None,
    "not a list",
    42,
    [42, None, "text", 3.5],
    [{"content": 42}],
    [{"content": [42, None, [1, [2]], {"no": "type"}]}],
    [{"content": [{"type": "image_url", "image_url": None}]}],
    [{"content": [{"type": "image_url", "image_url": {"url": None, "detail": 7}}]}],
    [{"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]}],
    [{"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@=="}}]}],
    [{"content": [{"type": "image_url", "image_url": {"url": "data:,no-comma-base64"}}]}],
    [{"content": [{"type": "image", "source": None}]}],
    [{"content": [{"type": "image", "source": {"type": "base64", "data": 12}}]}],
    [{"content": [{"type": "image", "source": {"type": "base64", "data": "é€" * 50}}]}],
    [{"content": [{"type": "document", "source": {"type": "base64", "data": "%%%"}}]}],
    [{"content": [{"type": "document", "source": {"type": "text", "data": None}}]}],
    [{"content": [{"type": "document"}]}],
    [{"content": [{"type": "file", "file": None}]}],
    [{"content": [{"type": "file", "file": {"file_data": "data:text/plain;base64,@@"}}]}],
    [{"content": [{"type": "input_audio", "input_audio": {"data": "%%%", "format": 3}}]}],
    [{"content": [{"type": "input_audio", "input_audio": None}]}],
    [{"content": [{"type": "tool_result", "content": {"type": "image"}}]}],
    [{"content": [{"type": "weird", "value": object()}]}],
    [{"content": deeply_nested(5000)}],
    [{"content": [{"type": "weird", "nested": deeply_nested(5000)}]}],
    [{"content": "hi", "tool_calls": {"not": "a list"}}],
    [{"content": "hi", "tool_calls": [deeply_nested(5000)]}],
    [{"content": [{"type": "input_audio", "input_audio": {"data": b64(mp3(1)[:40])}}]}],
    [{"content": [anthropic_image(png(0, 0)), anthropic_image(b"\x89PNG\r\n\x1a\n")]}],
    [{"content": [anthropic_image(b"\xff\xd8\xff\xe1\xff\xff" + b"\0" * 10)]}],
    [{"content": [anthropic_image(b"RIFF\0\0\0\0WEBPVP8X")]}],
]


@pytest.mark.parametrize("messages", HOSTILE_MESSAGES)
@pytest.mark.parametrize("media", ["openai", "anthropic"])
def test_hostile_messages_never_raise(messages, media):
    counted = count_messages(
        messages, "gpt-4o", system={"type": "image"}, tools=[deeply_nested(5000)], media=media
    )

    assert isinstance(counted, int) and counted >= 0
    assert count_audio_input(messages) >= 0


def test_a_hostile_riff_header_claiming_4_gb_of_data_counts_only_the_bytes_present():
    raw = bytearray(wav(0.5))
    raw[-8000 - 4 : -8000] = struct.pack("<I", 0xFFFFFFFF)  # the data chunk's size

    assert count_audio_input(audio_message(bytes(raw), "wav")) == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0),
        (42, 0),
        ({"prompt": "x"}, 0),
        ([1, 2, 3], 3),
        ([[1, 2], [3]], 3),
        (deeply_nested(5000), 0),
    ],
)
def test_count_input_counts_strings_and_token_ids_and_nothing_else(value, expected):
    assert count_input(value, "gpt-4o") == expected


def test_count_input_counts_nested_lists_of_strings():
    assert count_input(["hello there", ["general", ["kenobi"]]], "gpt-4o") == sum(
        tokens.count_text(text, "gpt-4o") for text in ("hello there", "general", "kenobi")
    )
