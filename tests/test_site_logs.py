"""The Logs page and its CSV: a person's calls and balance movements, filtered, totalled,
paged by keyset, exported; nobody else's rows, whatever the query string says."""

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from accounts import logs
from accounts.services import create_api_key
from billing import services as billing
from billing.models import LedgerEntry, UsageLog


def add_calls(user, count, *, api_key=None, model="gpt-4o-mini", quota=1000, when=None, **fields):
    """``count`` journal rows for ``user`` (newest last), as settled calls leave them.

    Written directly: these tests read the journal, they do not bill (no reconcile here).
    """
    rows = UsageLog.objects.bulk_create(
        UsageLog(
            user=user,
            api_key=api_key,
            endpoint="chat_completions",
            model=model,
            input_tokens=10,
            cached_input_tokens=2,
            output_tokens=5,
            quota=quota,
            latency_ms=123,
            **fields,
        )
        for _ in range(count)
    )
    if when is not None:
        UsageLog.objects.filter(id__in=[row.id for row in rows]).update(created_at=when)
    return rows


def totals_of(client: Client, query: str = "") -> dict:
    """The page's totals for ``query``, as its second request fetches them."""
    response = client.get("/logs/totals?" + query)
    assert response.status_code == 200
    return response.json()


def numbers(totals: dict) -> dict:
    return {name: value for name, value in totals.items() if isinstance(value, int)}


def page_ids(response) -> list[int]:
    return [row.id for row in response.context["page"].rows]


@pytest.fixture
def alice_client(alice):
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob):
    client = Client()
    client.force_login(bob)
    return client


def csv_rows(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


# --- Who may see what ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/logs", "/logs/totals", "/logs/export.csv", "/chat"])
def test_anonymous_visitors_are_sent_to_log_in(db, path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_bob_never_sees_alices_calls_or_movements(alice, bob, bob_client):
    key, _ = create_api_key(user=alice, name="alice laptop")
    add_calls(alice, 3, api_key=key, model="alice-only-model")
    add_calls(bob, 1)

    calls = bob_client.get("/logs")
    assert calls.status_code == 200
    assert len(page_ids(calls)) == 1
    assert totals_of(bob_client)["calls"] == 1
    assert b"alice-only-model" not in calls.content
    assert b"alice laptop" not in calls.content

    ledger = bob_client.get("/logs?show=ledger")
    assert all(row.user_id == bob.id for row in ledger.context["page"].rows)
    assert totals_of(bob_client, "show=ledger")["entries"] == 1  # bob's own test credit

    exported = csv_rows(bob_client.get("/logs/export.csv"))
    assert len(exported) == 2  # the header and bob's one call
    assert "alice-only-model" not in str(exported)


def test_alices_key_id_in_bobs_filter_shows_none_of_alices_rows(alice, bob, bob_client):
    key, _ = create_api_key(user=alice, name="alice laptop")
    add_calls(alice, 3, api_key=key)
    add_calls(bob, 2)

    response = bob_client.get(f"/logs?key={key.id}")
    assert response.status_code == 200
    assert "key" in response.context["form"].errors
    assert len(page_ids(response)) == 2  # the filter is refused, bob's rows stay bob's
    assert totals_of(bob_client, f"key={key.id}")["calls"] == 2
    exported = csv_rows(bob_client.get(f"/logs/export.csv?key={key.id}"))
    assert len(exported) == 3


def test_a_cursor_pointing_into_alices_rows_pages_only_bobs(alice, bob, bob_client):
    add_calls(bob, 2)
    alices = add_calls(alice, 3)
    response = bob_client.get(f"/logs?before={alices[-1].id + 1}")
    assert {row.user_id for row in response.context["page"].rows} == {bob.id}
    response = bob_client.get("/logs?after=0")
    assert {row.user_id for row in response.context["page"].rows} == {bob.id}


# --- What the page shows ---------------------------------------------------------------------


def test_a_call_shows_its_key_model_tokens_cost_latency_stream_and_status(alice, alice_client):
    key, _ = create_api_key(user=alice, name="laptop")
    add_calls(alice, 1, api_key=key, model="gpt-4o", quota=1_250_000, is_stream=True)
    add_calls(alice, 1, model="gpt-4o", quota=0, status=UsageLog.Status.FAILED)

    response = alice_client.get("/logs")
    html = response.content.decode()
    assert response.status_code == 200
    assert "laptop" in html and "gpt-4o" in html
    assert "$2.50" in html  # 1,250,000 quota
    assert "123 ms" in html
    assert "Failed (no charge)" in html
    assert totals_of(alice_client) == {
        "cost": "$2.50",
        "calls": 2,
        "input_tokens": 20,
        "cached_input_tokens": 4,
        "output_tokens": 10,
        "quota": 1_250_000,
    }


def test_filters_by_key_model_and_dates_with_totals_for_the_filter(alice, alice_client):
    laptop, _ = create_api_key(user=alice, name="laptop")
    phone, _ = create_api_key(user=alice, name="phone")
    now = timezone.now()
    add_calls(alice, 4, api_key=laptop, model="gpt-4o", when=now - timedelta(days=10))
    add_calls(alice, 3, api_key=laptop, model="gpt-4o-mini", when=now - timedelta(days=1))
    add_calls(alice, 2, api_key=phone, model="gpt-4o", quota=500, when=now)

    def totals(query: str) -> dict:
        response = alice_client.get("/logs?" + query)
        assert response.status_code == 200
        sums = numbers(totals_of(alice_client, query))
        assert len(page_ids(response)) == sums["calls"]
        return sums

    assert totals("")["calls"] == 9
    assert totals(f"key={laptop.id}")["calls"] == 7
    assert totals(f"key={phone.id}") == {
        "calls": 2,
        "input_tokens": 20,
        "cached_input_tokens": 4,
        "output_tokens": 10,
        "quota": 1000,
    }
    assert totals("model=gpt-4o")["calls"] == 6
    assert totals(f"model=gpt-4o&key={laptop.id}")["calls"] == 4
    today = timezone.localdate()
    assert totals(f"start={today - timedelta(days=2)}")["calls"] == 5
    assert totals(f"end={today - timedelta(days=2)}")["calls"] == 4
    day = today - timedelta(days=10)
    assert totals(f"start={day}&end={day}")["calls"] == 4
    assert (
        totals(f"start={today - timedelta(days=30)}&end={today - timedelta(days=20)}")["calls"] == 0
    )
    assert totals("model=no-such-model")["calls"] == 0


def test_a_date_range_ends_at_midnight_in_the_sites_time_zone(alice, alice_client, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    # 23:30 on 1 March in Shanghai is 15:30 UTC; 00:30 on 2 March is 16:30 UTC.
    add_calls(alice, 1, when=datetime(2025, 3, 1, 15, 30, tzinfo=UTC))
    add_calls(alice, 2, when=datetime(2025, 3, 1, 16, 30, tzinfo=UTC))
    assert totals_of(alice_client, "start=2025-03-01&end=2025-03-01")["calls"] == 1
    assert totals_of(alice_client, "start=2025-03-02&end=2025-03-02")["calls"] == 2


def test_an_end_before_the_start_is_an_error_not_an_empty_page(alice, alice_client):
    add_calls(alice, 2)
    response = alice_client.get("/logs?start=2025-03-02&end=2025-03-01")
    assert "end" in response.context["form"].errors
    assert totals_of(alice_client, "start=2025-03-02&end=2025-03-01")["calls"] == 2


def test_pages_walk_back_and_forth_by_id_without_gaps_or_repeats(alice, alice_client):
    rows = add_calls(alice, 2 * logs.PAGE_SIZE + 7)
    newest_first = [row.id for row in reversed(rows)]

    first = alice_client.get("/logs")
    assert page_ids(first) == newest_first[: logs.PAGE_SIZE]
    assert first.context["page"].newer is None
    older = first.context["page"].older
    second = alice_client.get(f"/logs?before={older}")
    assert page_ids(second) == newest_first[logs.PAGE_SIZE : 2 * logs.PAGE_SIZE]
    third = alice_client.get(f"/logs?before={second.context['page'].older}")
    assert page_ids(third) == newest_first[2 * logs.PAGE_SIZE :]
    assert third.context["page"].older is None

    back = alice_client.get(f"/logs?after={third.context['page'].newer}")
    assert page_ids(back) == page_ids(second)
    back_again = alice_client.get(f"/logs?after={back.context['page'].newer}")
    assert page_ids(back_again) == page_ids(first)
    assert back_again.context["page"].newer is None
    assert f"before={older}" in first.content.decode()


def test_the_ledger_tab_lists_movements_filtered_by_kind(alice, alice_client):
    billing.grant(user=alice, amount=250_000, kind=LedgerEntry.Kind.TRIAL, note="welcome")
    billing.grant(user=alice, amount=100_000, kind=LedgerEntry.Kind.INVITE_REWARD)
    billing.grant(user=alice, amount=-50_000, kind=LedgerEntry.Kind.TRIAL_EXPIRY)

    everything = alice_client.get("/logs?show=ledger")
    html = everything.content.decode()
    assert totals_of(alice_client, "show=ledger")["entries"] == 4  # with the test credit
    assert "Trial credit" in html and "Invite reward" in html and "Trial credit expired" in html
    assert "welcome" in html

    trial = alice_client.get("/logs?show=ledger&kind=trial")
    assert [row.kind for row in trial.context["page"].rows] == ["trial"]
    assert totals_of(alice_client, "show=ledger&kind=trial") == {
        "entries": 1,
        "amount": 250_000,
        "net": "+$0.50",
    }
    assert "+$0.50" in trial.content.decode()
    expiry = alice_client.get("/logs?show=ledger&kind=trial_expiry")
    assert totals_of(alice_client, "show=ledger&kind=trial_expiry")["net"] == "-$0.10"
    assert "-$0.10" in expiry.content.decode()


def test_the_model_filter_offers_the_models_of_the_persons_own_calls(alice, bob, alice_client):
    add_calls(alice, 3, model="gpt-4o")
    add_calls(alice, 1, model="claude-sonnet-4-5")
    add_calls(bob, 1, model="bobs-secret-model")
    response = alice_client.get("/logs")
    assert response.context["models"] == ["claude-sonnet-4-5", "gpt-4o"]


def test_the_page_speaks_chinese_to_a_chinese_browser(alice, alice_client):
    add_calls(alice, 1)
    response = alice_client.get("/logs", headers={"accept-language": "zh-CN,zh;q=0.9"})
    html = response.content.decode()
    assert "日志" in html and "导出 CSV" in html and "调用" in html
    ledger = alice_client.get("/logs?show=ledger", headers={"accept-language": "zh-hans"})
    assert "余额变动" in ledger.content.decode()


# --- CSV -------------------------------------------------------------------------------------


def test_the_csv_holds_every_filtered_row_not_just_one_page(alice, alice_client):
    key, _ = create_api_key(user=alice, name="laptop")
    add_calls(alice, logs.EXPORT_CHUNK + 3, api_key=key, model="gpt-4o", quota=500_000)
    add_calls(alice, 5, model="gpt-4o-mini")
    response = alice_client.get(f"/logs/export.csv?key={key.id}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = csv_rows(response)
    assert rows[0] == list(logs.CALL_COLUMNS)
    assert len(rows) == 1 + logs.EXPORT_CHUNK + 3
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["key"] == "laptop" and first["model"] == "gpt-4o"
    assert first["cost_usd"] == "1" and first["quota"] == "500000"


def test_the_ledger_csv_follows_the_kind_filter(alice, alice_client):
    billing.grant(user=alice, amount=250_000, kind=LedgerEntry.Kind.TRIAL, note="welcome")
    rows = csv_rows(alice_client.get("/logs/export.csv?show=ledger&kind=trial"))
    assert rows[0] == list(logs.LEDGER_COLUMNS)
    assert [row[1:4] for row in rows[1:]] == [["trial", "0.5", "250000"]]


def test_csv_cells_never_start_a_spreadsheet_formula(alice, alice_client):
    key, _ = create_api_key(user=alice, name='=HYPERLINK("http://x")')
    add_calls(alice, 1, api_key=key, model="+cmd")
    rows = csv_rows(alice_client.get("/logs/export.csv"))
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["key"].startswith("'=") and record["model"] == "'+cmd"


def test_the_csv_streams_over_the_real_server_in_chunks(relay_url, alice):
    """Served by the ASGI app as production serves it: chunked, no Content-Length, every row
    (a synchronous iterator would have been read whole into memory first)."""
    add_calls(alice, 2 * logs.EXPORT_CHUNK + 1)
    client = Client()
    client.force_login(alice)
    session = client.cookies["sessionid"].value
    with httpx.stream(
        "GET", f"{relay_url}/logs/export.csv", cookies={"sessionid": session}, timeout=30
    ) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        body = b"".join(response.iter_bytes()).decode()
    assert len(body.strip().splitlines()) == 1 + 2 * logs.EXPORT_CHUNK + 1
