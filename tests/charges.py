"""The charge formula, written out once for the tests, from a model's ``ModelPrice`` row.

Tests compare what the relay billed with this, not with ``billing.pricing.Price.charge`` (which
would only prove the code agrees with itself). The rule is README's "How a call is billed":
group ratio × model ratio × (input + cached input × cache-read ratio + cache writes ×
cache-write ratio + output × completion ratio), rounded up once to a whole quota unit; or the
per-call price × group ratio; or nothing for a free model. ``input`` is the uncached part.
"""

import math
from decimal import Decimal

from billing.models import Hold, ModelPrice, UsageLog


def expected_charge(
    model: str,
    *,
    input: int = 0,
    output: int = 0,
    cached: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    group_ratio: Decimal | str | int = 1,
) -> int:
    """Quota a call of ``model`` with this usage costs at the model's current price."""
    price = ModelPrice.objects.get(model=model)
    group_ratio = Decimal(group_ratio)
    if price.is_free:
        return 0
    if price.per_call_quota is not None:
        return math.ceil(price.per_call_quota * group_ratio)
    weighted = (
        input
        + cached * price.cache_read_ratio
        + cache_write * price.cache_write_ratio
        + cache_write_1h * price.cache_write_1h_ratio
        + output * price.completion_ratio
    )
    return math.ceil(weighted * price.model_ratio * group_ratio)


def assert_billed_once_each(calls: int) -> None:
    """``calls`` calls were made: one usage row each, and every hold settled (none open, none
    released)."""
    assert UsageLog.objects.count() == calls
    assert list(Hold.objects.values_list("status", flat=True)) == [Hold.Status.SETTLED] * calls
