"""Showing money: the one place quota becomes "$1.23" or "¥8.86".

Quota is an integer (500,000 = $1). It becomes dollars by exact Decimal division and is rounded
only for display, here, never in arithmetic. The display currency is the operator's symbol and
rate per dollar (``SiteSettings.display_currency``, ``display_rate``).

In templates::

    {% load money %}
    {{ user.quota|usd }}                  $1.23
    {% local user.quota %}                ¥8.86 (the site's currency and rate)
    {{ price_per_million|dollars }}       a Decimal number of dollars, e.g. $2.50
    {% local_dollars price_per_million %} the same in the display currency
"""

from decimal import ROUND_HALF_UP, Decimal

from django import template

from billing.pricing import QUOTA_PER_USD

register = template.Library()


def to_dollars(quota: int) -> Decimal:
    """Quota as an exact number of dollars (500,000 quota = $1)."""
    return Decimal(int(quota)) / QUOTA_PER_USD


def _places(amount: Decimal) -> int:
    """Decimals to show: cents for a dollar or more, more for the small sums calls cost."""
    size = abs(amount)
    if size == 0 or size >= 1:
        return 2
    if size >= Decimal("0.01"):
        return 4
    return 6


def format_amount(amount: Decimal, symbol: str, *, places: int | None = None) -> str:
    """``amount`` with ``symbol`` in front: "$1.23", "-$0.0042", "¥1,234.50"; at most
    ``places`` decimals (default: cents from a dollar up, more below)."""
    amount = Decimal(amount)
    places = _places(amount) if places is None else places
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{abs(rounded):,f}"
    if "." in text:  # keep at least cents, drop zeros past them ("0.5000" -> "0.50")
        whole, fraction = text.split(".")
        fraction = fraction.rstrip("0").ljust(2, "0")
        text = f"{whole}.{fraction}"
    sign = "-" if rounded < 0 else ""
    return f"{sign}{symbol}{text}"


def format_usd(quota: int) -> str:
    return format_amount(to_dollars(quota), "$")


def format_local(quota: int, *, symbol: str, rate: Decimal) -> str:
    """Quota in the display currency at ``rate`` units per dollar."""
    return format_amount(to_dollars(quota) * rate, symbol)


def _site(context):
    from accounts.site import site_settings

    return site_settings(context.get("request"))


@register.filter
def usd(quota) -> str:
    """Quota (an integer) as dollars."""
    if quota in (None, ""):
        return ""
    return format_usd(quota)


# Prices keep their digits (to a millionth of a dollar): "$2.125" per 1M tokens, not "$2.13",
# so a price read off the page gives the charge.
PRICE_PLACES = 6


@register.filter
def dollars(amount) -> str:
    """A Decimal number of dollars (a price), with every digit it has up to 6 decimals."""
    if amount in (None, ""):
        return ""
    return format_amount(Decimal(amount), "$", places=PRICE_PLACES)


@register.simple_tag(takes_context=True)
def local(context, quota) -> str:
    """Quota in the operator's display currency."""
    site = _site(context)
    return format_local(quota or 0, symbol=site.display_currency, rate=site.display_rate)


@register.simple_tag(takes_context=True)
def local_dollars(context, amount) -> str:
    """A Decimal number of dollars (a price) in the operator's display currency."""
    site = _site(context)
    # The dollar price as shown beside it, then converted: $2.50 at 7.2 is ¥18, not the
    # ¥17.999999 of an exact $2.4999999 (a ratio of 8.333333).
    shown = Decimal(amount).quantize(Decimal(1).scaleb(-PRICE_PLACES), rounding=ROUND_HALF_UP)
    return format_amount(shown * site.display_rate, site.display_currency, places=PRICE_PLACES)
