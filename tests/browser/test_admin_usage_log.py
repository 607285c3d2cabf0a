"""The operator's usage log in admin, in a real browser: at 1,400 px wide, with rows as long as
the columns allow, nothing overflows sideways (neither the page nor the table's own box)."""

import re

import pytest
from playwright.sync_api import expect

from accounts.services import create_api_key, create_user
from billing.models import UsageLog
from relay.models import Channel
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser

WIDTH = 1400


@pytest.fixture
def long_rows(db):
    """Usage rows whose every text column is as long as its field allows (the widest a row can
    be), beside ordinary ones."""
    customer = create_user(username="a-customer-with-a-long-name-" + "x" * 122)  # 150 chars
    key, _ = create_api_key(user=customer, name="K" * 100)  # ApiKey.name's max_length
    plain, _ = create_api_key(user=customer, name="backend")
    channel = Channel.objects.create(
        type="openai", name="C" * 64, base_url="http://upstream.invalid"
    )
    for index in range(30):
        UsageLog.objects.create(
            user=customer,
            api_key=key if index % 2 else plain,
            channel_id=channel.id,
            endpoint="chat",
            model="M" * 128 if index % 3 == 0 else "gpt-4o-mini-2024-07-18",
            status=UsageLog.Status.CLIENT_GONE if index % 5 == 0 else UsageLog.Status.SUCCESS,
            input_tokens=1_234_567,  # a 1M-token context, and the largest outputs
            output_tokens=128_000,
            quota=123_456_789,  # $246.91 for one call
            latency_ms=1_234_567,
        )
    return customer


def test_the_usage_log_fits_1400_px_without_horizontal_overflow(page, ops, log_in, long_rows):
    page.set_viewport_size({"width": WIDTH, "height": 900})
    log_in(page, ops)
    page.goto("/admin/billing/usagelog/")
    expect(page.locator("#result_list tbody tr")).to_have_count(30)
    expect(page.locator("#usage-totals")).to_contain_text("30 calls")
    expect(page).to_have_title(re.compile("usage log", re.IGNORECASE))

    sizes = page.evaluate(
        """() => {
            const results = document.querySelector('#changelist .results');
            return {
                document: document.documentElement.scrollWidth,
                body: document.body.scrollWidth,
                results: results.scrollWidth,
                resultsBox: results.clientWidth,
                table: document.querySelector('#result_list').getBoundingClientRect().right,
                columns: [...document.querySelectorAll('#result_list thead th')].map(
                    (th) => th.className + ':' + Math.round(th.getBoundingClientRect().width)),
            };
        }"""
    )
    screenshot(page, "admin-usage-log")
    assert sizes["document"] <= WIDTH, sizes
    assert sizes["body"] <= WIDTH, sizes
    # A table that scrolls inside its own box overflows just the same for the operator.
    assert sizes["results"] <= sizes["resultsBox"], sizes
    assert sizes["table"] <= WIDTH, sizes
