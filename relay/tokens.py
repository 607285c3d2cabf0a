"""Counting tokens offline, for hold estimates and for streams that end without usage.

The BPE files ship in ``relay/tokenizer_data`` (from the tiktoken project, via the litellm
wheel) and are checked against their published sha256, so nothing is downloaded at run time.
Counts for non-OpenAI models use o200k_base as an approximation: they only size a hold or bill
a stream that the upstream never reported usage for.
"""

import json
from functools import lru_cache
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

DATA = Path(__file__).parent / "tokenizer_data"
SPECIAL_TOKEN = "<|endoftext|>"

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
    if not text:
        return 0
    return len(encoding_for(model).encode(text, disallowed_special=()))


def _text_of(content) -> str:
    """The text of a message's content; images and other parts count as their JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                parts.append(" " * 85 * 4)  # a low-detail image is 85 tokens at OpenAI
            else:
                parts.append(json.dumps(part, ensure_ascii=False))
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


def count_messages(messages: list, model: str, *, system=None, tools=None) -> int:
    """Input tokens of a chat request, close to what the provider will report."""
    text = []
    total = TOKENS_PER_REPLY
    if system:
        text.append(_text_of(system))
        total += TOKENS_PER_MESSAGE
    for message in messages or []:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE
        text.append(_text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            text.append(json.dumps(call, ensure_ascii=False))
    if tools:
        text.append(json.dumps(tools, ensure_ascii=False))
    return total + count_text("\n".join(text), model)


def count_input(value, model: str) -> int:
    """Tokens of a completions prompt or embeddings input (string, list of strings or ids)."""
    if isinstance(value, str):
        return count_text(value, model)
    if isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            return len(value)
        return sum(count_input(item, model) for item in value)
    return 0
