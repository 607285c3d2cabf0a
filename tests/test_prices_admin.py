"""Prices: one row edited in dollars or as ratios, per-call prices, and a price change that
reaches new calls only (a stream keeps the price it started with)."""

import io
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing.models import ModelPrice, UsageLog
from billing.pricing import price_for
from tests.conftest import settled_usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops_client(client, ops):
    ops.is_superuser = True
    ops.save()
    client.force_login(ops)
    return client


def form_data(ops_client, row):
    page = ops_client.get(f"/admin/billing/modelprice/{row.id}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    return data, form


def test_a_price_row_is_shown_in_dollars_and_ratios(ops_client):
    row = ModelPrice.objects.create(
        model="m1", model_ratio=Decimal("1.25"), completion_ratio=4, cache_read_ratio="0.1"
    )
    _, form = form_data(ops_client, row)
    # 1 ratio = $2 per 1M tokens: gpt-4o's $2.50 in, $10 out, $0.25 cached
    assert form.initial["input_usd"] == Decimal("2.5")
    assert form.initial["output_usd"] == Decimal("10")
    assert form.initial["cached_input_usd"] == Decimal("0.25")
    listing = ops_client.get("/admin/billing/modelprice/?q=m1").content.decode()
    assert "2.5" in listing and "10" in listing


def test_editing_dollars_writes_the_ratios(ops_client):
    row = ModelPrice.objects.create(model="m2", model_ratio=1, completion_ratio=1)
    data, _ = form_data(ops_client, row)
    data.update(input_usd="3", output_usd="15", cached_input_usd="0.3", cache_write_usd="3.75")
    response = ops_client.post(f"/admin/billing/modelprice/{row.id}/change/", data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    row.refresh_from_db()
    assert (row.model_ratio, row.completion_ratio) == (Decimal("1.5"), Decimal(5))
    assert (row.cache_read_ratio, row.cache_write_ratio) == (Decimal("0.1"), Decimal("1.25"))
    # The charge the relay computes from it: 1M input + 1M output tokens = $18 = 9,000,000
    from billing.pricing import TokenUsage

    usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert price_for("m2").charge(usage, Decimal(1)) == 9_000_000


def test_editing_ratios_still_works_and_both_at_once_is_refused(ops_client):
    row = ModelPrice.objects.create(model="m3", model_ratio=1, completion_ratio=1)
    data, _ = form_data(ops_client, row)
    data.update(model_ratio="2")
    assert ops_client.post(f"/admin/billing/modelprice/{row.id}/change/", data).status_code == 302
    row.refresh_from_db()
    assert row.model_ratio == 2
    data, _ = form_data(ops_client, row)
    data.update(model_ratio="3", input_usd="10")
    response = ops_client.post(f"/admin/billing/modelprice/{row.id}/change/", data)
    assert response.status_code == 200
    assert "either in dollars or as ratios" in response.content.decode()
    row.refresh_from_db()
    assert row.model_ratio == 2


def test_an_output_price_needs_an_input_price(ops_client):
    row = ModelPrice.objects.create(model="m4", model_ratio=1)
    data, _ = form_data(ops_client, row)
    data.update(input_usd="0", output_usd="5")
    response = ops_client.post(f"/admin/billing/modelprice/{row.id}/change/", data)
    assert response.status_code == 200
    assert "input must cost something" in response.content.decode()


def test_per_call_prices_are_validated_and_looked_up(ops_client):
    # A model the shipped table does not price (it prices dall-e-3 itself).
    row = ModelPrice.objects.create(model="an-image-model", model_ratio=0)
    data, _ = form_data(ops_client, row)
    data["image_quotas"] = '{"1024x1024/hd": -1}'
    response = ops_client.post(f"/admin/billing/modelprice/{row.id}/change/", data)
    assert response.status_code == 200 and "whole number" in response.content.decode()
    data["image_quotas"] = '{"1024x1024": 20000, "1024x1024/hd": 40000}'
    data["midjourney_quotas"] = '{"imagine/fast": 50000, "upscale": 10000}'
    data["audio_minute_quota"] = "3000"
    data["speech_1k_chars_quota"] = "7500"
    response = ops_client.post(f"/admin/billing/modelprice/{row.id}/change/", data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    price = price_for("an-image-model")
    half = Decimal("0.5")
    assert price.image_quota(size="1024x1024", quality="hd", group_ratio=half) == 20000
    assert price.image_quota(size="1024x1024", quality="standard", group_ratio=half) == 10000
    assert price.image_quota(size="512x512", quality="", group_ratio=half) is None
    assert price.midjourney_quota(action="imagine", mode="fast", group_ratio=1) == 50000
    assert price.midjourney_quota(action="upscale", mode="relax", group_ratio=1) == 10000
    assert price.midjourney_quota(action="imagine", mode="relax", group_ratio=1) is None
    assert price.audio_quota(seconds=90, group_ratio=1) == 4500
    assert price.speech_quota(characters=1001, group_ratio=1) == 7508  # rounded up


def test_set_price_keeps_working():
    call_command(
        "set_price", "m5", "--ratio", "1.5", "--completion-ratio", "4", stdout=io.StringIO()
    )
    row = ModelPrice.objects.get(model="m5")
    assert (row.model_ratio, row.completion_ratio) == (Decimal("1.5"), 4)


def test_a_price_change_during_a_stream_charges_the_price_the_call_started_with(
    mock_upstream, openai_channel, alice, alice_key, make_openai, books_balance
):
    row = ModelPrice.objects.get(model="gpt-4o-mini")
    old_ratio = row.model_ratio
    mock_upstream.script({"chunks": 4, "chunk_delay": 0.2})
    stream = make_openai(alice_key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = iter(stream)
    next(chunks)  # the call is under way, priced
    row.model_ratio = old_ratio * 10
    row.save()  # as admin would: caches dropped at once
    list(chunks)
    [usage] = settled_usage(1)
    assert usage.model_ratio == old_ratio
    expected = price_at(old_ratio, row).charge(tokens_of(usage), Decimal(1))
    assert usage.quota == expected

    # The next call pays the new price.
    make_openai(alice_key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    newer = settled_usage(2)[-1]
    assert newer.model_ratio == old_ratio * 10
    assert UsageLog.objects.count() == 2
    books_balance()


def price_at(ratio, row):
    from billing.pricing import Price

    fresh = ModelPrice.objects.get(id=row.id)
    fresh.model_ratio = ratio
    return Price.from_row(fresh)


def tokens_of(usage):
    from billing.pricing import TokenUsage

    return TokenUsage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
    )
