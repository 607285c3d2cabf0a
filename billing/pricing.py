"""Turning token counts into quota.

One ratio is $0.002 per 1K tokens, which is exactly 1 quota per token (500,000 quota = $1), so
a charge is the weighted token count times the model and group ratios, rounded up once, at the
end, to a whole quota unit.
"""

import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from billing.models import GroupRatio, ModelPrice
from config.cache import shared_cache

QUOTA_PER_USD = 500_000


@dataclass(frozen=True)
class TokenUsage:
    """Normalized usage that every provider adapter fills, whatever its own accounting.

    ``input_tokens`` is the uncached text (and image, file) input only: cache reads, cache
    writes and audio are counted apart because they are priced apart. ``cache_write_tokens``
    are 5-minute cache writes, ``cache_write_1h_tokens`` the 1-hour ones (priced higher).
    ``output_tokens`` is text output and includes ``reasoning_tokens``; audio output is apart.
    ``web_search_calls`` counts server-side web searches (priced per call).
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    web_search_calls: int = 0


@dataclass(frozen=True)
class Price:
    """A model's price as read from the database, ready to apply."""

    model: str
    model_ratio: Decimal
    completion_ratio: Decimal
    cache_read_ratio: Decimal
    cache_write_ratio: Decimal
    per_call_quota: int | None
    is_free: bool
    output_estimate: int | None

    @classmethod
    def from_row(cls, row: ModelPrice) -> "Price":
        return cls(
            model=row.model,
            model_ratio=row.model_ratio,
            completion_ratio=row.completion_ratio,
            cache_read_ratio=row.cache_read_ratio,
            cache_write_ratio=row.cache_write_ratio,
            per_call_quota=row.per_call_quota,
            is_free=row.is_free,
            output_estimate=row.output_estimate,
        )

    def charge(self, usage: TokenUsage, group_ratio: Decimal) -> int:
        """Quota for a finished call, rounded up to a whole unit."""
        if self.is_free:
            return 0
        if self.per_call_quota is not None:
            return math.ceil(self.per_call_quota * group_ratio)
        weighted = (
            usage.input_tokens
            + usage.cached_input_tokens * self.cache_read_ratio
            + usage.cache_write_tokens * self.cache_write_ratio
            + usage.output_tokens * self.completion_ratio
        )
        return math.ceil(weighted * self.model_ratio * group_ratio)

    def estimate(self, *, input_tokens: int, max_output: int | None, group_ratio: Decimal) -> int:
        """Quota to hold before a call: its input plus the most output it may produce."""
        if max_output is None:
            max_output = self.output_estimate or settings.RELAY_DEFAULT_OUTPUT_ESTIMATE
        return self.charge(
            TokenUsage(input_tokens=input_tokens, output_tokens=max_output), group_ratio
        )


def price_cache_key(model: str) -> str:
    return f"price:{model}"


def group_cache_key(group: str) -> str:
    return f"group-ratio:{group}"


def price_for(model: str) -> Price | None:
    """The model's price, or None when the operator has not priced it (the call is refused)."""
    key = price_cache_key(model)
    cached = shared_cache().get(key)
    if cached is None:
        row = ModelPrice.objects.filter(model=model).first()
        cached = Price.from_row(row) if row else False
        shared_cache().set(key, cached, settings.RELAY_CACHE_SECONDS)
    return cached or None


def group_ratio_for(group: str) -> Decimal:
    """The group's multiplier; a group nobody configured pays list price."""
    key = group_cache_key(group)
    ratio = shared_cache().get(key)
    if ratio is None:
        row = GroupRatio.objects.filter(name=group).first()
        ratio = row.ratio if row else Decimal(1)
        shared_cache().set(key, ratio, settings.RELAY_CACHE_SECONDS)
    return ratio
