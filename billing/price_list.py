"""The price list people read (the site's /pricing page, the REST API's /api/pricing).

Every figure here is computed by ``billing.pricing.Price`` itself, the code that charges calls:
a price per million tokens is the charge of a call of that many tokens, so the list cannot
disagree with a charge. The token prices are taken from the charge of 10^12 tokens divided by
10^6, which is exact for every ratio the database can hold (6 decimals for a model's ratios, 4
for a group's), where a charge of only 10^6 tokens would already be rounded up.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from billing.models import ModelPrice
from billing.pricing import QUOTA_PER_USD, Price, TokenUsage

MILLION = 10**6
_PROBE = 10**12  # tokens charged to read a price per million exactly (see above)


@dataclass(frozen=True)
class PerCallPrice:
    """A price that is not per token: ``kind`` ("call", "image", "audio_minute",
    "speech_1k_chars", "midjourney"), ``variant`` (e.g. "1024x1024/hd"), quota per unit."""

    kind: str
    variant: str
    quota: int

    @property
    def usd(self) -> Decimal:
        return Decimal(self.quota) / QUOTA_PER_USD


@dataclass(frozen=True)
class PriceLine:
    """One model's prices for one group. ``*_per_million`` are quota per million tokens
    (exact Decimals); ``usd_*`` the same in dollars. A model priced per call has no token
    prices (None); a free model costs 0 everywhere."""

    model: str
    model_ratio: Decimal
    completion_ratio: Decimal
    cache_read_ratio: Decimal
    group_ratio: Decimal
    is_free: bool
    input_per_million: Decimal | None
    output_per_million: Decimal | None
    cached_input_per_million: Decimal | None
    per_call: tuple[PerCallPrice, ...] = field(default=())

    @property
    def usd_input_per_million(self) -> Decimal | None:
        return _usd(self.input_per_million)

    @property
    def usd_output_per_million(self) -> Decimal | None:
        return _usd(self.output_per_million)

    @property
    def usd_cached_input_per_million(self) -> Decimal | None:
        return _usd(self.cached_input_per_million)


def _usd(quota: Decimal | None) -> Decimal | None:
    return None if quota is None else quota / QUOTA_PER_USD


def _per_million(price: Price, group_ratio: Decimal, **tokens: int) -> Decimal:
    return Decimal(price.charge(TokenUsage(**tokens), group_ratio)) / (_PROBE // MILLION)


def _quota(price: Price, method: str, **arguments) -> int | None:
    """``price.<method>(...)``, the charge of one unit of a per-call kind; None when the
    price has no such method or does not price that kind."""
    compute = getattr(price, method, None)
    return compute(**arguments) if compute is not None else None


def _per_call_prices(price: Price, group_ratio: Decimal) -> list[PerCallPrice]:
    """The model's prices that are per call, per image, per minute and so on."""
    units: list[tuple[str, str, int | None]] = []
    if price.per_call_quota is not None:
        units.append(("call", "", price.charge(TokenUsage(), group_ratio)))
    # Per image, per minute of audio, per 1,000 characters of speech, per Midjourney task:
    # charged by Price's own methods for each, asked here for one unit.
    for variant, _ in getattr(price, "image_quotas", ()):
        size, _, quality = variant.partition("/")
        quota = _quota(price, "image_quota", size=size, quality=quality, group_ratio=group_ratio)
        units.append(("image", variant, quota))
    if getattr(price, "audio_minute_quota", None) is not None:
        units.append(
            ("audio_minute", "", _quota(price, "audio_quota", seconds=60, group_ratio=group_ratio))
        )
    if getattr(price, "speech_1k_chars_quota", None) is not None:
        quota = _quota(price, "speech_quota", characters=1000, group_ratio=group_ratio)
        units.append(("speech_1k_chars", "", quota))
    for variant, _ in getattr(price, "midjourney_quotas", ()):
        action, _, mode = variant.partition("/")
        quota = _quota(price, "midjourney_quota", action=action, mode=mode, group_ratio=group_ratio)
        units.append(("midjourney", variant, quota))
    return [
        PerCallPrice(kind, variant, quota) for kind, variant, quota in units if quota is not None
    ]


def price_line(price: Price, *, group_ratio: Decimal = Decimal(1)) -> PriceLine:
    """One model's prices as a group with ``group_ratio`` pays them."""
    by_tokens = price.per_call_quota is None or price.is_free
    return PriceLine(
        model=price.model,
        model_ratio=price.model_ratio,
        completion_ratio=price.completion_ratio,
        cache_read_ratio=price.cache_read_ratio,
        group_ratio=group_ratio,
        is_free=price.is_free,
        input_per_million=_per_million(price, group_ratio, input_tokens=_PROBE)
        if by_tokens
        else None,
        output_per_million=_per_million(price, group_ratio, output_tokens=_PROBE)
        if by_tokens
        else None,
        cached_input_per_million=_per_million(price, group_ratio, cached_input_tokens=_PROBE)
        if by_tokens
        else None,
        per_call=tuple(_per_call_prices(price, group_ratio)) if not price.is_free else (),
    )


def price_list(
    *, group_ratio: Decimal = Decimal(1), models: Iterable[str] | None = None
) -> list[PriceLine]:
    """Every priced model (or those of ``models``), by name, as ``group_ratio`` pays."""
    rows = ModelPrice.objects.order_by("model")
    if models is not None:
        rows = rows.filter(model__in=list(models))
    return [price_line(Price.from_row(row), group_ratio=group_ratio) for row in rows]
