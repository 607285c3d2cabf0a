"""Counting tokens offline, for hold estimates and for streams that end without usage.

The BPE files ship in ``relay/tokenizer_data`` (from the tiktoken project, via the litellm
wheel) and are checked against their published sha256, so nothing is downloaded at run time.
Counts for non-OpenAI models use o200k_base as an approximation: they only size a hold or bill
a stream that the upstream never reported usage for.

Images, files and audio count as the provider family serving the call bills them (its own
formulas below), never as their base64 text. When a size cannot be known (an http URL, bytes
that do not parse) the count is the most that part can cost, so a hold still covers the call.
No Django, no I/O, and nothing here raises on a hostile body: a count is always returned.
Base64 is read lazily: an image's or a sound's header is decoded from a few bytes of text,
never the whole payload; only a PDF is decoded whole (once) to count its pages.
"""

import base64
import binascii
import json
import math
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import tiktoken
from tiktoken.load import load_tiktoken_bpe

DATA = Path(__file__).parent / "tokenizer_data"
SPECIAL_TOKEN = "<|endoftext|>"  # noqa: S105 - a tokenizer's marker, not a password

ENCODINGS = {
    # name: (sha256 of the file, pattern, id of <|endoftext|>)
    "cl100k_base": (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        100257,
    ),
    "o200k_base": (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        199999,
    ),
}
# Older OpenAI chat models use cl100k_base; everything newer (and every other family) o200k.
CL100K_PREFIXES = ("gpt-4-", "gpt-4", "gpt-3.5", "text-embedding")
CL100K_EXCEPTIONS = ("gpt-4o", "gpt-4.1", "gpt-4.5")
# OpenAI's documented overhead: a few tokens per message and 3 to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@lru_cache(maxsize=2)
def encoding(name: str) -> tiktoken.Encoding:
    sha256, pattern, end_of_text = ENCODINGS[name]
    ranks = load_tiktoken_bpe(str(DATA / f"{name}.tiktoken"), expected_hash=sha256)
    return tiktoken.Encoding(
        name=name,
        pat_str=pattern,
        mergeable_ranks=ranks,
        special_tokens={SPECIAL_TOKEN: end_of_text},
    )


def encoding_for(model: str) -> tiktoken.Encoding:
    if model.startswith(CL100K_PREFIXES) and not model.startswith(CL100K_EXCEPTIONS):
        return encoding("cl100k_base")
    return encoding("o200k_base")


def count_text(text: str, model: str) -> int:
    if not text or not isinstance(text, str):
        return 0
    return len(
        encoding_for(model if isinstance(model, str) else "").encode(text, disallowed_special=())
    )


Media = Literal["openai", "anthropic"]

# Content nested deeper than this (lists in tool results in documents...) is not counted: no
# real request nests that far, and a hostile one must not reach Python's recursion limit.
MAX_DEPTH = 32


# --- Images -----------------------------------------------------------------------------------


class Tiles(NamedTuple):
    """OpenAI's 512 px tile formula: ``base`` tokens, plus ``per_tile`` for each tile at high
    detail (the image fitted into 2048x2048, then its short side brought down to 768 px)."""

    base: int
    per_tile: int


class Patches(NamedTuple):
    """OpenAI's 32 px patch formula: patches to cover the image, at most ``budget`` (a bigger
    image is shrunk to fit), times ``multiplier``. The detail level does not change it."""

    budget: int
    multiplier: float


# From OpenAI's vision guide ("Calculating costs"), keyed by model prefix; the longest prefix
# that matches wins, and a model not listed counts as GPT-4o. The tile rows and the patch rows
# up to gpt-5-nano are the guide's tables; the gpt-5.2+ rows are its later patch-based section
# (a 2,500-patch budget for the large models) as public calculators reproduce it. Measured
# bills have been reported to differ (gpt-5-mini/nano at 1.2/1.5, below the guide's numbers):
# the guide is followed, being the higher count. Patch models ignore "detail": low costs the
# same as high there.
OPENAI_IMAGE_RULES: dict[str, Tiles | Patches] = {
    "gpt-4o": Tiles(85, 170),
    "chatgpt-4o": Tiles(85, 170),
    "gpt-4-turbo": Tiles(85, 170),
    "gpt-4-vision": Tiles(85, 170),
    "gpt-4.1": Tiles(85, 170),
    "gpt-4.5": Tiles(85, 170),
    "gpt-4o-mini": Tiles(2833, 5667),
    "o1": Tiles(75, 150),
    "o3": Tiles(75, 150),
    "computer-use-preview": Tiles(65, 129),
    "gpt-image-1": Tiles(65, 129),
    "gpt-5": Tiles(70, 140),
    "gpt-5.1": Tiles(70, 140),
    "gpt-4.1-mini": Patches(1536, 1.62),
    "gpt-4.1-nano": Patches(1536, 2.46),
    "o4-mini": Patches(1536, 1.72),
    "codex-mini": Patches(1536, 1.72),
    "gpt-5-mini": Patches(1536, 1.62),
    "gpt-5-nano": Patches(1536, 2.46),
    "gpt-5.2": Patches(1536, 1.0),
    "gpt-5.3": Patches(1536, 1.0),
    "gpt-5.4": Patches(2500, 1.0),
    "gpt-5.4-mini": Patches(1536, 1.62),
    "gpt-5.4-nano": Patches(1536, 2.46),
    "gpt-5.5": Patches(2500, 1.0),
}
DEFAULT_OPENAI_IMAGE_RULE = Tiles(85, 170)
TILE_PIXELS = 512
TILE_FIT_PIXELS = 2048  # an image is first fitted into this square...
TILE_SHORT_SIDE_PIXELS = 768  # ...then its short side is brought down to this
# The most tiles a high-detail image can take: its long side is at most 2048 px (4 tiles), its
# short side at most 768 px (2 tiles). An image of unknown size counts that.
MOST_TILES = math.ceil(TILE_FIT_PIXELS / TILE_PIXELS) * math.ceil(
    TILE_SHORT_SIDE_PIXELS / TILE_PIXELS
)
PATCH_PIXELS = 32


class PixelLimits(NamedTuple):
    """Anthropic's resize: the long edge and the pixel count an image is scaled down to."""

    long_edge: int
    pixels: int


# Anthropic bills about width * height / 750 tokens after scaling an image down to these limits
# (vision guide, "Evaluate image size"). Its table of the largest sizes left unresized
# (1092x1092, 951x1268, 896x1344, 819x1456, 784x1568) all fit within 784x1568 pixels, so that
# area is the cap: 1,640 tokens at most, 1,334 for 1000x1000 as the guide's example says.
# Claude Opus 4.7 sees up to 2576 px on the long edge, about 3.75 megapixels.
ANTHROPIC_IMAGE_LIMITS = {
    "claude-opus-4-7": PixelLimits(2576, 2576 * 1456),
}
DEFAULT_ANTHROPIC_IMAGE_LIMITS = PixelLimits(1568, 1568 * 784)
ANTHROPIC_PIXELS_PER_TOKEN = 750


@lru_cache(maxsize=256)
def _openai_image_rule(model: str) -> Tiles | Patches:
    name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" names gpt-4o
    matches = [prefix for prefix in OPENAI_IMAGE_RULES if name.startswith(prefix)]
    return OPENAI_IMAGE_RULES[max(matches, key=len)] if matches else DEFAULT_OPENAI_IMAGE_RULE


@lru_cache(maxsize=256)
def _anthropic_image_limits(model: str) -> PixelLimits:
    name = model.lower().rsplit("/", 1)[-1]
    matches = [prefix for prefix in ANTHROPIC_IMAGE_LIMITS if name.startswith(prefix)]
    return (
        ANTHROPIC_IMAGE_LIMITS[max(matches, key=len)]
        if matches
        else (DEFAULT_ANTHROPIC_IMAGE_LIMITS)
    )


def _cover(length: float, square: int) -> int:
    """How many squares of ``square`` pixels cover ``length`` pixels (scaling's float noise
    ignored, so 1408.0000001 px is 44 patches of 32, not 45)."""
    return max(1, math.ceil(length / square - 1e-6))


def _tiles(width: float, height: float) -> int:
    if max(width, height) > TILE_FIT_PIXELS:
        scale = TILE_FIT_PIXELS / max(width, height)
        width, height = width * scale, height * scale
    if min(width, height) > TILE_SHORT_SIDE_PIXELS:
        scale = TILE_SHORT_SIDE_PIXELS / min(width, height)
        width, height = width * scale, height * scale
    return _cover(width, TILE_PIXELS) * _cover(height, TILE_PIXELS)


def _patches(width: float, height: float, budget: int) -> int:
    patches = _cover(width, PATCH_PIXELS) * _cover(height, PATCH_PIXELS)
    if patches <= budget:
        return patches
    # Shrink to the budget, then a little more so the width is a whole number of patches.
    shrink = math.sqrt(budget * PATCH_PIXELS * PATCH_PIXELS / (width * height))
    width, height = width * shrink, height * shrink
    across = width / PATCH_PIXELS
    if across > 1:
        fit = math.floor(across) / across
        width, height = width * fit, height * fit
    return min(budget, _cover(width, PATCH_PIXELS) * _cover(height, PATCH_PIXELS))


def openai_image_tokens(size: tuple[int, int] | None, detail: str, model: str) -> int:
    """What OpenAI bills for one image of ``size`` (None: unknown, so the most it can cost)."""
    rule = _openai_image_rule(model)
    if isinstance(rule, Patches):
        patches = rule.budget if size is None else _patches(*size, rule.budget)
        return math.ceil(patches * rule.multiplier)
    if detail == "low":
        return rule.base
    tiles = MOST_TILES if size is None else _tiles(*size)
    return rule.base + rule.per_tile * tiles


def anthropic_image_tokens(size: tuple[int, int] | None, model: str) -> int:
    """What Anthropic bills for one image of ``size`` (None: unknown, so the most it can cost)."""
    limits = _anthropic_image_limits(model)
    if size is None:
        return math.ceil(limits.pixels / ANTHROPIC_PIXELS_PER_TOKEN)
    width: float
    height: float
    width, height = size
    if max(width, height) > limits.long_edge:
        scale = limits.long_edge / max(width, height)
        width, height = width * scale, height * scale
    if width * height > limits.pixels:
        scale = math.sqrt(limits.pixels / (width * height))
        width, height = width * scale, height * scale
    return max(1, math.ceil(width * height / ANTHROPIC_PIXELS_PER_TOKEN - 1e-6))


# --- Reading base64 without decoding all of it ------------------------------------------------

URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
# Line-wrapped base64 cannot be read at an offset, so only its opening is decoded, this much.
WRAPPED_WINDOW_BYTES = 64 * 1024


class Base64Bytes:
    """The bytes a base64 text stands for, read at any offset by decoding only the few
    characters that hold them (four characters carry three bytes)."""

    def __init__(self, text: str, start: int = 0):
        self.source, self.source_start = text, start
        opening = text[start : start + 256]
        self.urlsafe = "-" in opening or "_" in opening
        if not any(blank in opening for blank in " \t\r\n"):
            self.text, self.start = text, start
            padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
            self.size = max(0, (len(text) - start - padding) * 3 // 4)
        else:
            blanks = sum(text.count(blank, start) for blank in " \t\r\n")
            self.size = max(0, (len(text) - start - blanks) * 3 // 4)
            window = text[start : start + WRAPPED_WINDOW_BYTES * 4 // 3 * 2]
            self.text, self.start = "".join(window.split())[: WRAPPED_WINDOW_BYTES * 4 // 3], 0

    def read(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``offset``; fewer (or none) past the end or on bad text."""
        if offset < 0 or count <= 0 or offset >= self.size:
            return b""
        first = offset // 3 * 4
        last = -(-(offset + count) // 3) * 4
        chunk = self.text[self.start + first : self.start + last]
        if self.urlsafe:
            chunk = chunk.translate(URLSAFE_TO_STANDARD)
        chunk += "=" * (-len(chunk) % 4)
        try:
            decoded = base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError):
            return b""
        skip = offset - first // 4 * 3
        return decoded[skip : skip + count]

    def decode_all(self) -> bytes | None:
        """Every byte (for a PDF's pages); None when the text is not base64."""
        text = self.source[self.source_start :]
        if self.urlsafe:
            text = text.translate(URLSAFE_TO_STANDARD)
        try:
            # Not strict: line breaks are skipped, and the extra padding is ignored.
            return base64.b64decode(text + "==")
        except (binascii.Error, ValueError):
            return None


class Payload(NamedTuple):
    """A base64 payload: its declared media type ("" when not declared) and its bytes."""

    media_type: str
    data: Base64Bytes


def _payload(value, media_type=None) -> Payload | None:
    """The base64 behind a ``data:`` URL or a bare base64 string; None for anything else (an
    http URL, a data URL that is not base64, a non-string)."""
    if not isinstance(value, str) or not value:
        return None
    declared = media_type.lower() if isinstance(media_type, str) else ""
    if value.startswith("data:"):
        comma = value.find(",", 0, 512)
        if comma < 0:
            return None
        header = value[5:comma].lower().split(";")
        if header[-1] != "base64":
            return None
        return Payload(header[0], Base64Bytes(value, comma + 1))
    if value.startswith(("http://", "https://")):
        return None
    return Payload(declared, Base64Bytes(value))


def _be16(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 2], "big")


def _be32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 4], "big")


def _le16(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 2], "little")


def _le32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 4], "little")


# JPEG start-of-frame markers (they carry the size); C4, C8 and CC are other segments.
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_MOST_SEGMENTS = 512


def image_size(data: Base64Bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, WebP or JPEG header; None when it is none of them."""
    head = data.read(0, 30)
    size = None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        size = _be32(head, 16), _be32(head, 20)
    elif head.startswith((b"GIF87a", b"GIF89a")) and len(head) >= 10:
        size = _le16(head, 6), _le16(head, 8)
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) == 30:
        size = _webp_size(head)
    elif head.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    return size if size and min(size) > 0 else None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: a key frame's start code
        return _le16(head, 26) & 0x3FFF, _le16(head, 28) & 0x3FFF
    if chunk == b"VP8L" and head[20:21] == b"\x2f":  # lossless: 14 bits each, minus one
        bits = _le32(head, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg_size(data: Base64Bytes) -> tuple[int, int] | None:
    """Walk the segments (each says its length) to the first start-of-frame; only each
    segment's first bytes are decoded, however big the EXIF and colour profiles before it."""
    position = 2
    for _ in range(JPEG_MOST_SEGMENTS):
        marker = data.read(position, 4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if kind in (0x01, 0xD8) or 0xD0 <= kind <= 0xD7:  # markers without a length
            position += 2
            continue
        if kind in (0xD9, 0xDA):  # end of image, or the scan began: no frame header came
            return None
        if kind in JPEG_FRAME_MARKERS:
            frame = data.read(position + 5, 4)
            return (_be16(frame, 2), _be16(frame, 0)) if len(frame) == 4 else None
        position += 2 + _be16(marker, 2)
    return None


# --- Files ------------------------------------------------------------------------------------

# Both families put a PDF into the model's context as each page's extracted text plus an image
# of the page. Anthropic's PDF guide gives 1,500-3,000 text tokens a page "depending on content
# density"; the top of that range is taken for both, plus the page image at the most that
# family's image formula allows (a rendered page is big enough to reach the resize caps).
PDF_TEXT_TOKENS_PER_PAGE = 3000
# A PDF whose pages cannot be counted (compressed beyond what is read here, or not decodable)
# is taken to hold a page per this many bytes, rounded up: a page of text with subset fonts
# takes a few to a few tens of KB, so this errs towards more pages. At most the 100 pages a
# request may carry (Anthropic's documented PDF limit).
PDF_BYTES_PER_PAGE = 20_000
PDF_MOST_ESTIMATED_PAGES = 100
# A file known only by its id (uploaded beforehand) or URL cannot be measured here. It is
# counted as this constant, which is most of a 128k context window: the most such a file can
# add to a call to most models. It is a deliberate worst case for holds; when the upstream
# reports usage (nearly always), the bill follows that instead.
UNKNOWN_FILE_TOKENS = 100_000
# Object streams inflated per PDF, at most (a compression bomb stops here).
PDF_MOST_INFLATED_BYTES = 64 * 1024 * 1024

PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")  # a page, not the /Pages tree
PDF_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z0-9])")
PDF_LINEARIZED_PAGES = re.compile(rb"/Linearized\b.{0,256}?/N\s+(\d+)", re.DOTALL)


def pdf_pages(raw: bytes) -> int | None:
    """Pages of a PDF: its page objects, including those compressed in object streams (or,
    failing that, the linearization dictionary's count); None when none can be found."""
    pages = len(PDF_PAGE.findall(raw)) + _pages_in_object_streams(raw)
    if not pages:
        linearized = PDF_LINEARIZED_PAGES.search(raw, 0, 4096)
        pages = int(linearized.group(1)) if linearized else 0
    return pages or None


def _pages_in_object_streams(raw: bytes) -> int:
    pages, budget = 0, PDF_MOST_INFLATED_BYTES
    for found in PDF_OBJECT_STREAM.finditer(raw):
        begin = raw.find(b"stream", found.end())
        if begin < 0 or budget <= 0:
            break
        begin += len(b"stream")
        begin += 2 if raw[begin : begin + 2] == b"\r\n" else 1
        end = raw.find(b"endstream", begin)
        if end < 0:
            break
        try:
            inflated = zlib.decompressobj().decompress(raw[begin:end], budget)
        except zlib.error:
            continue  # not Flate (or broken): an uncompressed one was already searched
        budget -= len(inflated)
        pages += len(PDF_PAGE.findall(inflated))
    return pages


# --- Audio ------------------------------------------------------------------------------------

# OpenAI bills audio input at 1 token per 100 ms (10 a second) for gpt-4o audio models.
AUDIO_TOKENS_PER_SECOND = 10
# Sound whose length cannot be read is taken to last as long as its bytes could at 8 kbit/s,
# the lowest MP3 bitrate (MPEG-2.5 layer III): the most seconds those bytes can hold.
AUDIO_LEAST_BYTES_PER_SECOND = 1000
WAV_MOST_CHUNKS = 64
MP3_SYNC_SEARCH_BYTES = 4096
# Layer III bitrates in kbit/s by header index, for MPEG-1 and for MPEG-2/2.5.
MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0),
}
MP3_SAMPLE_RATES = {1: (44100, 48000, 32000), 2: (22050, 24000, 16000), 25: (11025, 12000, 8000)}


class Mp3Frame(NamedTuple):
    version: int  # 1, 2 or 25 (MPEG-2.5)
    kbits: int
    sample_rate: int
    padding: int
    mono: bool

    @property
    def samples(self) -> int:
        return 1152 if self.version == 1 else 576

    @property
    def length(self) -> int:
        return (144 if self.version == 1 else 72) * self.kbits * 1000 // self.sample_rate + (
            self.padding
        )


def audio_seconds(data: Base64Bytes) -> float:
    """How long a WAV or MP3 lasts, from its headers; at most (and, when the headers say
    nothing usable, exactly) the most seconds its bytes could hold."""
    most = data.size / AUDIO_LEAST_BYTES_PER_SECOND
    head = data.read(0, 12)
    seconds = None
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        seconds = _wav_seconds(data)
    elif head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] >= 0xE0):
        seconds = _mp3_seconds(data)
    return most if seconds is None else min(seconds, most)


def _wav_seconds(data: Base64Bytes) -> float | None:
    position, bytes_per_second = 12, 0
    for _ in range(WAV_MOST_CHUNKS):
        header = data.read(position, 8)
        if len(header) < 8:
            return None
        name, size = header[:4], _le32(header, 4)
        if name == b"fmt ":
            fields = data.read(position + 8, 12)
            bytes_per_second = _le32(fields, 8) if len(fields) == 12 else 0
        elif name == b"data":
            if not bytes_per_second:
                return None
            # A streamed WAV may declare 0 or 4 GB of data: what is there is what counts.
            present = max(0, data.size - position - 8)
            return (min(size, present) if size else present) / bytes_per_second
        position += 8 + size + (size & 1)
    return None


def _mp3_frame(header: bytes) -> Mp3Frame | None:
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = {3: 1, 2: 2, 0: 25}.get((header[1] >> 3) & 3)
    layer_three = (header[1] >> 1) & 3 == 1
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if version is None or not layer_three or bitrate_index in (0, 15) or rate_index == 3:
        return None
    return Mp3Frame(
        version=version,
        kbits=MP3_BITRATES[1 if version == 1 else 2][bitrate_index],
        sample_rate=MP3_SAMPLE_RATES[version][rate_index],
        padding=(header[2] >> 1) & 1,
        mono=header[3] >> 6 == 3,
    )


def _mp3_seconds(data: Base64Bytes) -> float | None:
    position = 0
    tag = data.read(0, 10)
    if tag.startswith(b"ID3") and len(tag) == 10:  # an ID3v2 tag: its size is "syncsafe"
        size = sum((byte & 0x7F) << (7 * (3 - index)) for index, byte in enumerate(tag[6:10]))
        position = 10 + size + (10 if tag[5] & 0x10 else 0)
    window = data.read(position, MP3_SYNC_SEARCH_BYTES)
    for offset in range(max(0, len(window) - 3)):
        frame = _mp3_frame(window[offset : offset + 4])
        if frame:
            break
    else:
        return None
    start = position + offset
    # A VBR file says how many frames it has, in a Xing/Info or VBRI header in its first frame.
    side_info = (17 if frame.mono else 32) if frame.version == 1 else (9 if frame.mono else 17)
    xing = data.read(start + 4 + side_info, 12)
    if xing[:4] in (b"Xing", b"Info") and len(xing) == 12 and _be32(xing, 4) & 1:
        return _be32(xing, 8) * frame.samples / frame.sample_rate
    vbri = data.read(start + 36, 18)
    if vbri[:4] == b"VBRI" and len(vbri) == 18:
        return _be32(vbri, 14) * frame.samples / frame.sample_rate
    # Otherwise a constant bitrate, believed only when the next frame has the same one.
    following = _mp3_frame(data.read(start + frame.length, 4))
    if following is None or following.kbits != frame.kbits:
        return None
    return (data.size - start) * 8 / (frame.kbits * 1000)


def count_audio_input(messages) -> int:
    """Audio input tokens of a chat request's ``input_audio`` parts (OpenAI prices them apart
    from text, so ``count_messages`` leaves them out)."""
    total = 0
    for part in _parts_of(messages):
        if part.get("type") != "input_audio":
            continue
        audio = part.get("input_audio")
        payload = _payload(audio.get("data")) if isinstance(audio, dict) else None
        if payload is not None:
            total += math.ceil(audio_seconds(payload.data) * AUDIO_TOKENS_PER_SECOND)
    return total


def _parts_of(messages, depth: int = 0):
    """Every dict part in the messages' contents, tool results' contents included."""
    if depth > MAX_DEPTH:
        return
    if isinstance(messages, dict):
        yield messages
        for key in ("content", "source"):
            inner = messages.get(key)
            if isinstance(inner, list | dict):
                yield from _parts_of(inner, depth + 1)
    elif isinstance(messages, list | tuple):
        for item in messages:
            yield from _parts_of(item, depth + 1)


# --- Counting a request -----------------------------------------------------------------------

IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
FILE_PARTS = frozenset({"file", "input_file", "document"})
DETAILS = frozenset({"low", "high", "auto"})
# A string this long with nothing but base64 letters in its opening is a blob, not text.
BLOB_CHARACTERS = 256
BASE64_OPENING = re.compile(r"[A-Za-z0-9+/=_-]+")


class Tally:
    """One request's input: text to tokenize in one pass, and media tokens by formula."""

    def __init__(self, model: str, media: Media):
        self.model = model if isinstance(model, str) else ""
        self.media = "anthropic" if media == "anthropic" else "openai"
        self.text: list[str] = []
        self.media_tokens = 0

    def total(self) -> int:
        return self.media_tokens + count_text("\n".join(self.text), self.model)

    def content(self, content, depth: int = 0) -> None:
        if content is None:
            return
        if isinstance(content, str):
            self.text.append(content)
        elif depth > MAX_DEPTH:
            return
        elif isinstance(content, list | tuple):
            for part in content:
                self.content(part, depth + 1)
        elif isinstance(content, dict):
            self.part(content, depth)
        else:
            self.text.append(_json(content))

    def part(self, part: dict, depth: int) -> None:
        kind = part.get("type")
        if kind in IMAGE_PARTS:
            self.media_tokens += self.image(part)
        elif kind in FILE_PARTS:
            self.file(part, depth)
        elif kind == "input_audio":
            return  # priced apart: count_audio_input
        elif kind == "tool_result":
            self.content(part.get("content"), depth + 1)
        elif isinstance(part.get("text"), str):
            self.text.append(part["text"])
        else:
            self.text.append(_json(_without_blobs(part)))

    def image(self, part: dict) -> int:
        kind, detail, payload = part.get("type"), None, None
        if kind == "image_url":  # OpenAI chat: an object with url and detail, or a bare URL
            reference = part.get("image_url")
            if isinstance(reference, dict):
                payload, detail = _payload(reference.get("url")), reference.get("detail")
            else:
                payload = _payload(reference)
        elif kind == "input_image":  # OpenAI responses
            payload, detail = _payload(part.get("image_url")), part.get("detail")
        else:  # Anthropic: base64, url or file source
            source = part.get("source")
            if isinstance(source, dict) and source.get("type") == "base64":
                payload = _payload(source.get("data"), source.get("media_type"))
        size = image_size(payload.data) if payload else None
        return self.image_tokens(size, detail)

    def image_tokens(self, size: tuple[int, int] | None, detail=None) -> int:
        if self.media == "anthropic":
            return anthropic_image_tokens(size, self.model)
        detail = detail.lower() if isinstance(detail, str) else "auto"
        return openai_image_tokens(size, detail if detail in DETAILS else "auto", self.model)

    def file(self, part: dict, depth: int) -> None:
        kind = part.get("type")
        if kind == "document":  # Anthropic
            for key in ("title", "context"):
                if isinstance(part.get(key), str):
                    self.text.append(part[key])
            source = part.get("source")
            if not isinstance(source, dict):
                source = {}
            source_kind = source.get("type")
            if source_kind == "text":
                self.content(source.get("data"), depth + 1)
            elif source_kind == "content":
                self.content(source.get("content"), depth + 1)
            elif source_kind == "base64":
                self.file_data(_payload(source.get("data"), source.get("media_type")))
            else:  # a URL or a file id
                self.media_tokens += UNKNOWN_FILE_TOKENS
            return
        # OpenAI: {"type": "file", "file": {...}} in chat, the fields on the part in responses
        fields = part.get("file") if kind == "file" else part
        data = fields.get("file_data") if isinstance(fields, dict) else None
        self.file_data(_payload(data, "application/pdf"))

    def file_data(self, payload: Payload | None) -> None:
        if payload is None:
            self.media_tokens += UNKNOWN_FILE_TOKENS
            return
        raw = payload.data.decode_all()
        if payload.media_type.startswith("text/"):
            self.text.append(raw.decode("utf-8", "replace") if raw else "")
            return
        pages = pdf_pages(raw) if raw else None
        if pages is None:
            pages = min(
                PDF_MOST_ESTIMATED_PAGES, max(1, math.ceil(payload.data.size / PDF_BYTES_PER_PAGE))
            )
        self.media_tokens += pages * self.pdf_page_tokens()

    def pdf_page_tokens(self) -> int:
        return PDF_TEXT_TOKENS_PER_PAGE + self.image_tokens(None, "high")


def _json(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return ""


def _is_blob(value) -> bool:
    if not isinstance(value, str) or len(value) < BLOB_CHARACTERS:
        return False
    if value.startswith("data:"):
        return ";base64," in value[:512]
    return BASE64_OPENING.fullmatch(value, 0, BLOB_CHARACTERS) is not None


def _without_blobs(value, depth: int = 0):
    """A part as JSON would show it, less any base64 (it is never counted as text)."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            key: "" if _is_blob(item) else _without_blobs(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_without_blobs(item, depth + 1) for item in value]
    return "" if _is_blob(value) else value


def count_messages(
    messages, model: str, *, system=None, tools=None, media: Media = "openai"
) -> int:
    """Input tokens of a chat request, close to what the provider family ``media`` will report:
    text and tools tokenized, images and files by that family's formulas, audio left out."""
    tally = Tally(model, media)
    total = TOKENS_PER_REPLY
    if system:
        tally.content(system)
        total += TOKENS_PER_MESSAGE
    for message in messages if isinstance(messages, list | tuple) else ():
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE
        tally.content(message.get("content"))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            tally.text.append(_json(call))
    if tools:
        tally.text.append(_json(tools))
    return total + tally.total()


def count_input(value, model: str) -> int:
    """Tokens of a completions prompt or embeddings input (string, list of strings or ids)."""
    return _count_input(value, model, 0)


def _count_input(value, model: str, depth: int) -> int:
    if isinstance(value, str):
        return count_text(value, model)
    if isinstance(value, list) and depth <= MAX_DEPTH:
        if value and all(isinstance(item, int) for item in value):
            return len(value)
        return sum(_count_input(item, model, depth + 1) for item in value)
    return 0
