"""Turning token counts into quota.

One ratio is $0.002 per 1K tokens, which is exactly 1 quota per token (500,000 quota = $1), so
a charge is the weighted token count times the model and group ratios, rounded up once, at the
end, to a whole quota unit.
"""

import math
from collections.abc import Collection
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
class Demand:
    """The most a call can use, as admission counts it before the call: sizes its hold.

    ``output_tokens`` is per choice; ``choices`` is how many outputs the request asks for
    (``n``, ``best_of``). ``cache_writes`` says whether the input may be written to the
    provider's cache, which is dearer than plain input ("5m" or "1h").
    """

    input_tokens: int
    output_tokens: int
    choices: int = 1
    audio_input_tokens: int = 0
    audio_output: bool = False
    cache_writes: str = ""
    web_searches: int = 0


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
    max_output_tokens: int
    cache_write_1h_ratio: Decimal = Decimal(2)
    audio_input_ratio: Decimal | None = None  # None: audio input is refused
    audio_output_ratio: Decimal | None = None  # None: audio output is refused
    web_search_quota: int | None = None  # quota per search; None: web search is refused
    # Per-call prices, quota units (ModelPrice says what each key means); empty or None: the
    # kind of call is refused. Pairs rather than dicts: a Price is frozen and shared. A Price
    # cached before these fields existed reads their defaults (class attributes) when unpickled.
    image_quotas: tuple[tuple[str, int], ...] = ()
    audio_minute_quota: int | None = None
    speech_1k_chars_quota: int | None = None
    midjourney_quotas: tuple[tuple[str, int], ...] = ()

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
            max_output_tokens=row.max_output_tokens
            if row.max_output_tokens is not None
            else settings.RELAY_DEFAULT_MAX_OUTPUT_TOKENS,
            cache_write_1h_ratio=row.cache_write_1h_ratio,
            audio_input_ratio=row.audio_input_ratio,
            audio_output_ratio=row.audio_output_ratio,
            web_search_quota=row.web_search_quota,
            image_quotas=tuple(sorted((row.image_quotas or {}).items())),
            audio_minute_quota=row.audio_minute_quota,
            speech_1k_chars_quota=row.speech_1k_chars_quota,
            midjourney_quotas=tuple(sorted((row.midjourney_quotas or {}).items())),
        )

    def charge(self, usage: TokenUsage, group_ratio: Decimal) -> int:
        """Quota for a finished call, rounded up to a whole unit."""
        if self.is_free:
            return 0
        if self.per_call_quota is not None:
            return math.ceil(self.per_call_quota * group_ratio)
        return math.ceil(self._exact(usage) * group_ratio)

    def image_quota(self, *, size: str, quality: str, group_ratio: Decimal) -> int | None:
        """Quota per image of ``size`` ("1024x1024") and ``quality`` ("hd", "" for none), by
        the "SIZE/QUALITY" entry, else the "SIZE" one; None: not priced (refuse the call)."""
        return self._per_call(self.image_quotas, size, quality, group_ratio)

    def midjourney_quota(self, *, action: str, mode: str, group_ratio: Decimal) -> int | None:
        """Quota for one Midjourney task of ``action`` ("imagine") in ``mode`` ("fast"), by the
        "ACTION/MODE" entry, else the "ACTION" one; None: not priced (refuse the task)."""
        return self._per_call(self.midjourney_quotas, action, mode, group_ratio)

    def audio_quota(self, *, seconds: float, group_ratio: Decimal) -> int | None:
        """Quota for transcribing or translating ``seconds`` of audio; None: not priced."""
        if self.is_free:
            return 0
        if self.audio_minute_quota is None:
            return None
        return math.ceil(self.audio_minute_quota * Decimal(str(seconds)) / 60 * group_ratio)

    def speech_quota(self, *, characters: int, group_ratio: Decimal) -> int | None:
        """Quota for speaking ``characters`` characters of text; None: not priced."""
        if self.is_free:
            return 0
        if self.speech_1k_chars_quota is None:
            return None
        return math.ceil(self.speech_1k_chars_quota * Decimal(characters) / 1000 * group_ratio)

    def _per_call(
        self, table: tuple[tuple[str, int], ...], kind: str, variant: str, group_ratio: Decimal
    ) -> int | None:
        if self.is_free:
            return 0
        prices = dict(table)
        quota = prices.get(f"{kind}/{variant}") if variant else None
        if quota is None:
            quota = prices.get(kind)
        return None if quota is None else math.ceil(quota * group_ratio)

    def _exact(self, usage: TokenUsage) -> Decimal:
        """The charge before the group ratio and rounding."""
        # Audio reported by an upstream that was not asked for any (the call would have been
        # refused) is billed as the text it displaces, never free.
        audio_in = self.audio_input_ratio if self.audio_input_ratio is not None else 1
        audio_out = (
            self.audio_output_ratio
            if self.audio_output_ratio is not None
            else self.completion_ratio
        )
        weighted = (
            usage.input_tokens
            + usage.cached_input_tokens * self.cache_read_ratio
            + usage.cache_write_tokens * self.cache_write_ratio
            + usage.cache_write_1h_tokens * self.cache_write_1h_ratio
            + usage.audio_input_tokens * audio_in
            + usage.output_tokens * self.completion_ratio
            + usage.audio_output_tokens * audio_out
        )
        return weighted * self.model_ratio + usage.web_search_calls * (self.web_search_quota or 0)

    def _output_ratio(self, demand: Demand) -> Decimal:
        if demand.audio_output and self.audio_output_ratio is not None:
            return max(self.completion_ratio, self.audio_output_ratio)
        return self.completion_ratio

    def _worst_usage(self, demand: Demand, output_total: int) -> TokenUsage:
        """Usage at the dearest reading of the demand: input written to the cache when that
        costs more than plain input, output at the dearer of text and audio."""
        # Each kind of input the demand allows, with its ratio; the dearest is held.
        kinds = [(Decimal(1), "input_tokens")]
        if demand.cache_writes:
            kinds.append((self.cache_write_ratio, "cache_write_tokens"))
        if demand.cache_writes == "1h":
            kinds.append((self.cache_write_1h_ratio, "cache_write_1h_tokens"))
        _, dearest = max(kinds, key=lambda kind: kind[0])
        input_usage = {dearest: demand.input_tokens}
        audio = demand.audio_output and self._output_ratio(demand) != self.completion_ratio
        return TokenUsage(
            **input_usage,
            audio_input_tokens=demand.audio_input_tokens,
            output_tokens=0 if audio else output_total,
            audio_output_tokens=output_total if audio else 0,
            web_search_calls=demand.web_searches,
        )

    def most(self, demand: Demand, group_ratio: Decimal) -> int:
        """Quota to hold: the most the demand can cost."""
        total = demand.output_tokens * demand.choices
        return self.charge(self._worst_usage(demand, total), group_ratio)

    def output_covered(self, amount: int, demand: Demand, group_ratio: Decimal) -> int:
        """The largest output limit per choice whose call costs at most ``amount``
        (``demand.output_tokens`` when that is covered)."""
        if self.most(demand, group_ratio) <= amount:
            return demand.output_tokens
        per_token = self._output_ratio(demand) * self.model_ratio * group_ratio
        fixed = self._exact(self._worst_usage(demand, 0)) * group_ratio
        if self.is_free or self.per_call_quota is not None or per_token <= 0:
            return demand.output_tokens
        # amount >= fixed + L × per_token, so ceil() of that cost cannot exceed amount.
        total = math.floor((amount - fixed) / per_token)
        return max(min(total // demand.choices, demand.output_tokens), 0)


# The prices a journal row records when no price made its charge: a delivered hold settled
# late (its cost is the one the call computed) or a failed call (no charge).
UNPRICED = Price(
    model="",
    model_ratio=Decimal(0),
    completion_ratio=Decimal(0),
    cache_read_ratio=Decimal(0),
    cache_write_ratio=Decimal(0),
    per_call_quota=None,
    is_free=False,
    max_output_tokens=0,
)


def price_cache_key(model: str) -> str:
    return f"price:v2:{model}"  # v2: the Price fields of the money-holes migration


def group_cache_key(group: str) -> str:
    return f"group-ratio:{group}"


def price_for(model: str) -> Price | None:
    """The model's price, or None when the operator has not priced it (the call is refused).

    Only a priced model is cached: model names come from clients, and remembering every
    unknown one would let a key holder fill the shared cache with names (an unknown name costs
    one indexed read instead)."""
    key = price_cache_key(model)
    cached = shared_cache().get(key)
    if cached is None:
        row = ModelPrice.objects.filter(model=model).first()
        if row is None:
            return None
        cached = Price.from_row(row)
        shared_cache().set(key, cached, settings.RELAY_CACHE_SECONDS)
    return cached if isinstance(cached, Price) else None


def priced_models(models: Collection[str]) -> set[str]:
    """Those of ``models`` the operator has priced (free ones included): the ones a call may
    name; any other is refused."""
    return set(ModelPrice.objects.filter(model__in=models).values_list("model", flat=True))


def group_ratio_for(group: str) -> Decimal:
    """The group's multiplier; a group nobody configured pays list price."""
    key = group_cache_key(group)
    ratio = shared_cache().get(key)
    if ratio is None:
        row = GroupRatio.objects.filter(name=group).first()
        ratio = row.ratio if row else Decimal(1)
        shared_cache().set(key, ratio, settings.RELAY_CACHE_SECONDS)
    return ratio
