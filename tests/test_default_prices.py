"""The shipped price table (billing.default_prices) and its data migrations: the realtime
models carry audio prices (relay.realtime refuses a model without them), the Agents SDK's
default model is priced, and loading the table never overwrites an operator's row."""

import importlib
from decimal import Decimal

import pytest
from agents.models import get_default_model
from django.apps import apps

from billing.default_prices import LIST_PRICES
from billing.models import ModelPrice
from billing.pricing import Price, TokenUsage

pytestmark = pytest.mark.django_db

REALTIME_LIST_PRICES = {
    # model: text in, cached, text out, audio in, audio out ($ per 1M, OpenAI's price page)
    "gpt-realtime": ("4", "0.40", "16", "32", "64"),
    "gpt-4o-realtime-preview": ("5", "2.50", "20", "40", "80"),
    "gpt-4o-mini-realtime-preview": ("0.60", "0.30", "2.40", "10", "20"),
}


@pytest.mark.parametrize("model", REALTIME_LIST_PRICES)
def test_a_realtime_model_is_shipped_with_its_text_and_audio_prices(model):
    text_in, cached, text_out, audio_in, audio_out = map(Decimal, REALTIME_LIST_PRICES[model])
    price = Price.from_row(ModelPrice.objects.get(model=model))
    million = 1_000_000
    # Each kind of token alone, 1M of it, in quota units (500,000 = $1), to 1/10,000 of a cent
    # per 1M tokens (the ratios are stored to six decimals).
    for field, usd in [
        ("input_tokens", text_in),
        ("cached_input_tokens", cached),
        ("output_tokens", text_out),
        ("audio_input_tokens", audio_in),
        ("audio_output_tokens", audio_out),
    ]:
        charge = price.charge(TokenUsage(**{field: million}), group_ratio=Decimal(1))
        assert charge == pytest.approx(usd * 500_000, abs=1), field


def test_the_agents_sdk_default_model_is_priced_by_the_shipped_table():
    model = get_default_model()
    assert model in LIST_PRICES, f"openai-agents' default model {model} has no default price"
    assert ModelPrice.objects.get(model=model).max_output_tokens == 128_000


def test_the_realtime_prices_migration_adds_missing_rows_and_keeps_the_operators():
    ModelPrice.objects.filter(model="gpt-4o-mini-realtime-preview").delete()
    ModelPrice.objects.filter(model="gpt-realtime").update(
        model_ratio=Decimal(3), audio_input_ratio=None, audio_output_ratio=Decimal(20)
    )
    migration = importlib.import_module("billing.migrations.0009_realtime_prices")

    migration.load(apps, None)

    mine = ModelPrice.objects.get(model="gpt-realtime")
    assert (mine.model_ratio, mine.audio_input_ratio, mine.audio_output_ratio) == (3, None, 20)
    added = ModelPrice.objects.get(model="gpt-4o-mini-realtime-preview")
    assert (added.model_ratio, added.audio_input_ratio, added.audio_output_ratio) == (
        Decimal("0.3"),
        Decimal("16.666667"),
        Decimal("33.333333"),
    )
