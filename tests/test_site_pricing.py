"""The price list (billing.price_list, the /pricing page) agrees with what calls are charged."""

import math
from decimal import Decimal

import pytest

from billing.models import GroupRatio, ModelPrice
from billing.price_list import price_list
from tests.conftest import settled_usage


def line_for(model: str, **options):
    return next(line for line in price_list(**options) if line.model == model)


@pytest.mark.django_db
def test_list_prices_follow_the_ratios_one_ratio_is_two_dollars_per_million():
    line = line_for("gpt-4o-mini")  # shipped: ratio 0.075, output ×4, cache ×0.5
    assert line.usd_input_per_million == Decimal("0.15")
    assert line.usd_output_per_million == Decimal("0.60")
    assert line.usd_cached_input_per_million == Decimal("0.075")


@pytest.mark.django_db
def test_a_group_ratio_is_applied_and_a_per_call_price_replaces_token_prices():
    ModelPrice.objects.create(model="flat-model", model_ratio=1, per_call_quota=25_000)
    line = line_for("flat-model", group_ratio=Decimal("0.8"))
    assert line.input_per_million is None
    assert [(item.kind, item.quota) for item in line.per_call] == [("call", 20_000)]
    assert line_for("gpt-4o-mini", group_ratio=Decimal("0.8")).usd_input_per_million == Decimal(
        "0.12"
    )


@pytest.mark.django_db
def test_odd_ratios_are_listed_exactly_not_rounded_up_per_million():
    ModelPrice.objects.create(model="odd", model_ratio=Decimal("0.123457"), completion_ratio=3)
    line = line_for("odd", group_ratio=Decimal("0.1234"))
    assert line.input_per_million == Decimal("0.123457") * Decimal("0.1234") * 10**6


def test_a_real_call_costs_what_the_pricing_page_says_for_its_tokens(
    client, alice, alice_key, openai_channel, mock_upstream, make_openai, books_balance
):
    GroupRatio.objects.create(name="default", ratio=Decimal("0.85"))
    mock_upstream.script(
        {
            "chunks": 7,
            "usage": {"prompt_tokens_details": {"cached_tokens": 5}},
        }
    )
    make_openai(alice_key).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    (row,) = settled_usage(1)

    client.force_login(alice)
    page = client.get("/pricing")
    line = next(line for line in page.context["lines"] if line.model == "gpt-4o")
    assert line.group_ratio == Decimal("0.85")
    expected = math.ceil(
        (
            row.input_tokens * line.input_per_million
            + row.cached_input_tokens * line.cached_input_per_million
            + row.output_tokens * line.output_per_million
        )
        / 10**6
    )
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens) == (11 - 5, 5, 7)
    assert row.quota == expected
    # And the page shows those same prices, in dollars.
    html = page.content.decode()
    assert "×0.85" in html
    assert '<tr data-model="gpt-4o">' in html
    assert "$2.125<" in html  # gpt-4o input: $2.50 per 1M × 0.85, every digit shown
    assert line.usd_input_per_million == Decimal("2.125")
    books_balance()
