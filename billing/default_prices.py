"""The price table a new site starts with: list prices in USD per 1M tokens.

Editable afterwards in admin (``ModelPrice``); ``load_default_prices`` adds any missing rows.
Stored as ratios: model ratio = input $/1M ÷ 2 (ratio 1 = $2 per 1M tokens), completion,
cache-read and cache-write ratios relative to the input price.
"""

from decimal import Decimal

# model: (input $/1M, output $/1M, cached input $/1M or None, cache write $/1M or None,
#         largest output in tokens, from the provider's model page)
LIST_PRICES = {
    # OpenAI
    "gpt-5": ("1.25", "10", "0.125", None, 128_000),
    "gpt-5-mini": ("0.25", "2", "0.025", None, 128_000),
    "gpt-5-nano": ("0.05", "0.40", "0.005", None, 128_000),
    # The OpenAI Agents SDK's default model (openai-agents 0.24); prompts above 272K tokens
    # cost 2x input and 1.5x output at OpenAI, a tier not modelled here.
    "gpt-5.6-luna": ("0.20", "1.20", "0.02", None, 128_000),
    "gpt-4.1": ("2", "8", "0.50", None, 32_768),
    "gpt-4.1-mini": ("0.40", "1.60", "0.10", None, 32_768),
    "gpt-4.1-nano": ("0.10", "0.40", "0.025", None, 32_768),
    "gpt-4o": ("2.50", "10", "1.25", None, 16_384),
    "gpt-4o-mini": ("0.15", "0.60", "0.075", None, 16_384),
    "o3": ("2", "8", "0.50", None, 100_000),
    "o4-mini": ("1.10", "4.40", "0.275", None, 100_000),
    "o3-mini": ("1.10", "4.40", "0.55", None, 100_000),
    "gpt-3.5-turbo": ("0.50", "1.50", None, None, 4_096),
    "gpt-3.5-turbo-instruct": ("1.50", "2", None, None, 4_096),
    "text-embedding-3-small": ("0.02", "0.02", None, None, 0),
    "text-embedding-3-large": ("0.13", "0.13", None, None, 0),
    "text-embedding-ada-002": ("0.10", "0.10", None, None, 0),
    # Anthropic (cache writes: the 5-minute rate, 1.25 × input)
    "claude-opus-4-5": ("5", "25", "0.50", "6.25", 64_000),
    "claude-opus-4-1": ("15", "75", "1.50", "18.75", 32_000),
    "claude-sonnet-4-5": ("3", "15", "0.30", "3.75", 64_000),
    "claude-sonnet-4-0": ("3", "15", "0.30", "3.75", 64_000),
    "claude-haiku-4-5": ("1", "5", "0.10", "1.25", 64_000),
    "claude-3-5-haiku-latest": ("0.80", "4", "0.08", "1", 8_192),
    # Google Gemini (prompts up to 200K tokens)
    "gemini-2.5-pro": ("1.25", "10", "0.125", None, 65_536),
    "gemini-2.5-flash": ("0.30", "2.50", "0.03", None, 65_536),
    "gemini-2.5-flash-lite": ("0.10", "0.40", "0.01", None, 65_536),
    "gemini-2.0-flash": ("0.10", "0.40", "0.025", None, 8_192),
    # DeepSeek (V3.2 prices; cache hit vs miss)
    "deepseek-chat": ("0.28", "0.42", "0.028", None, 8_192),
    "deepseek-reasoner": ("0.28", "0.42", "0.028", None, 65_536),
    # OpenAI's realtime models (text prices here, audio in AUDIO_PRICES). OpenAI prices cached
    # audio as cached text for these three, as relay.realtime bills it.
    "gpt-realtime": ("4", "16", "0.40", None, 4_096),
    "gpt-4o-realtime-preview": ("5", "20", "2.50", None, 4_096),
    "gpt-4o-mini-realtime-preview": ("0.60", "2.40", "0.30", None, 4_096),
    # OpenAI's image model billed by tokens: input at the image-input price ($10; text input is
    # $5, so a prompt's few tokens are billed a little above list), output images at $40.
    "gpt-image-1": ("10", "40", "2.50", None, 0),
}

# Audio tokens, USD per 1M: (audio input, audio output). Stored as ratios to the model's text
# input price; a model without them refuses audio (and the realtime API).
AUDIO_PRICES = {
    "gpt-realtime": ("32", "64"),
    "gpt-4o-realtime-preview": ("40", "80"),
    "gpt-4o-mini-realtime-preview": ("10", "20"),
}

# Models billed per call rather than by tokens, in quota units (500,000 = $1), from OpenAI's
# price page: per image by "SIZE/QUALITY" or "SIZE", per 1,000 characters of speech, per
# minute of audio transcribed or translated.
PER_CALL_PRICES: dict[str, dict] = {
    "dall-e-3": {
        "image_quotas": {
            "1024x1024": 20_000,  # $0.040
            "1024x1792": 40_000,  # $0.080
            "1792x1024": 40_000,
            "1024x1024/hd": 40_000,  # $0.080
            "1024x1792/hd": 60_000,  # $0.120
            "1792x1024/hd": 60_000,
        }
    },
    "dall-e-2": {
        "image_quotas": {"256x256": 8_000, "512x512": 9_000, "1024x1024": 10_000}  # $0.016-0.02
    },
    "tts-1": {"speech_1k_chars_quota": 7_500},  # $15 per 1M characters
    "tts-1-hd": {"speech_1k_chars_quota": 15_000},  # $30 per 1M characters
    # Billed by OpenAI in tokens, about $0.015 a minute of speech: about 1,000 characters.
    "gpt-4o-mini-tts": {"speech_1k_chars_quota": 7_500},
    "whisper-1": {"audio_minute_quota": 3_000},  # $0.006 a minute
    "gpt-4o-transcribe": {"audio_minute_quota": 3_000},  # $0.006 a minute (OpenAI's estimate)
    "gpt-4o-mini-transcribe": {"audio_minute_quota": 1_500},  # $0.003 a minute
}


def ratios(
    input_usd: str,
    output_usd: str,
    cached_usd: str | None,
    write_usd: str | None,
    max_output_tokens: int,
):
    """The price row's fields for one row of LIST_PRICES."""
    per_million = Decimal(input_usd)
    return {
        "model_ratio": per_million / 2,
        "completion_ratio": Decimal(output_usd) / per_million,
        "cache_read_ratio": Decimal(cached_usd) / per_million if cached_usd else Decimal(1),
        "cache_write_ratio": Decimal(write_usd) / per_million if write_usd else Decimal(1),
        "max_output_tokens": max_output_tokens,
    }


def audio_ratios(model: str) -> dict:
    """The audio ratio fields of a model in AUDIO_PRICES: its audio prices over its input price
    (six decimals, as stored)."""
    per_million = Decimal(LIST_PRICES[model][0])
    audio_input, audio_output = (Decimal(usd) for usd in AUDIO_PRICES[model])
    places = Decimal("0.000001")
    return {
        "audio_input_ratio": (audio_input / per_million).quantize(places),
        "audio_output_ratio": (audio_output / per_million).quantize(places),
    }


def load_default_prices(model_price) -> int:
    """Create the rows that are missing (never overwrites an operator's price).

    ``model_price`` may be a migration's historical model, which lacks the fields added
    later: only the fields it has are filled.
    """
    known = {field.name for field in model_price._meta.get_fields()}
    created = 0
    for model, row in LIST_PRICES.items():
        fields = ratios(*row)
        if model in AUDIO_PRICES:
            fields |= audio_ratios(model)
        defaults = {name: value for name, value in fields.items() if name in known}
        if model in AUDIO_PRICES and "audio_input_ratio" not in defaults:
            continue  # not before the audio columns exist: a realtime model is audio
        _, made = model_price.objects.get_or_create(model=model, defaults=defaults)
        created += made
    for model, fields in PER_CALL_PRICES.items():
        # Only once the per-call columns exist: a row without its price would be free.
        if set(fields) <= known:
            _, made = model_price.objects.get_or_create(model=model, defaults=fields)
            created += made
    return created


def fill_max_output_tokens(model_price) -> None:
    """Give the shipped models their largest output where the operator set none."""
    for model, row in LIST_PRICES.items():
        model_price.objects.filter(model=model, max_output_tokens=None).update(
            max_output_tokens=row[4]
        )
