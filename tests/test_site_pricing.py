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


def price_row(html: str, model: str) -> str:
    start = html.index(f'<tr data-model="{model}">')
    return html[start : html.index("</tr>", start)]


@pytest.mark.django_db
def test_a_model_priced_only_per_image_shows_no_token_prices_rather_than_zero(client):
    """dall-e-3 (shipped: per image, no token ratio) is refused on token endpoints: the page
    must not show it as $0.00 per 1M tokens, which reads as free."""
    row = price_row(client.get("/pricing").content.decode(), "dall-e-3")
    assert "$0.00" not in row
    assert 'data-price="input"' not in row
    assert 'data-price="image"' in row and "$0.04" in row  # 1024x1024, standard


@pytest.mark.django_db
def test_display_currency_prices_convert_the_dollar_figure_shown(client):
    from accounts.models import SiteSettings

    site = SiteSettings.current()
    site.display_currency, site.display_rate = "¥", Decimal("7.2")
    site.save()
    # Output ×8.333333 of ratio 0.15: $2.4999999 per 1M, shown as $2.50, so ¥18 beside it.
    ModelPrice.objects.create(
        model="thirds", model_ratio=Decimal("0.15"), completion_ratio=Decimal("8.333333")
    )
    row = price_row(client.get("/pricing").content.decode(), "thirds")
    assert "$2.50<" in row and "¥18.00<" in row and "17.999999" not in row
