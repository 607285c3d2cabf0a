"""How fast the Logs page answers with a million usage rows in PostgreSQL.

    .venv/bin/python bench/site_logs.py                 # 1,000,000 rows, half of them one user's
    .venv/bin/python bench/site_logs.py --share 1       # every row that one user's (worst case)

It drops and re-creates its own database (``--database-url``, whose name must contain
``bench``), migrates it, and fills it with SQL on the server (``generate_series``): ``--users``
people, ``--rows`` usage rows over the last 30 days, a ``--share`` of them the measured
person's, spread over 5 keys and 8 models, plus a ledger (daily consumption summaries per key,
grants) for everyone. Then it VACUUM ANALYZEs, as autovacuum would, and times the page as the
server runs it (Django's full stack, middleware, queries and template, in this process: the
server time, without the network) for each filter, ``--repeats`` times after a warm-up, and
the totals request the page makes beside it, and the CSV export of the measured person's every
call (rows per second, and the process's peak memory growth while it streams). Prints one
table; exits 1 if any page's median is over 100 ms.
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MS = 100.0
MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "o4-mini",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "gemini-2.5-pro",
    "deepseek-chat",
]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--share", type=float, default=0.5, help="the measured person's rows")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/sluice_bench_logs"
    )
    parser.add_argument("--keep", action="store_true", help="reuse a filled database")
    return parser.parse_args()


def prepare_environment(options: argparse.Namespace) -> None:
    name = options.database_url.rsplit("/", 1)[-1]
    if "bench" not in name:
        sys.exit(f"{options.database_url}: the name must contain 'bench' (it is dropped)")
    os.environ["DATABASE_URL"] = options.database_url
    os.environ.pop("REDIS_URL", None)
    os.environ["SLUICE_GENERATE_SECRETS"] = "1"
    os.environ.setdefault("SLUICE_DATA_DIR", str(ROOT / "bench" / "results" / "site_logs"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["ALLOWED_HOSTS"] = "testserver"  # Django's test client's host
    sys.path[0] = str(ROOT)
    if not options.keep:
        import psycopg

        admin = options.database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')


def fill(options: argparse.Namespace) -> dict:
    """The people, keys and rows; returns what the measurements need."""
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import ApiKey, User
    from accounts.services import create_api_key
    from billing.models import LedgerEntry, UsageLog

    if options.keep and User.objects.filter(username="measured").exists():
        person = User.objects.get(username="measured")
        return {"person": person, "keys": list(ApiKey.objects.filter(user=person))}

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    person = User.objects.create(username="measured")
    User.objects.bulk_create(User(username=f"user{n}") for n in range(1, options.users))
    keys = [create_api_key(user=person, name=f"key {n}")[0] for n in range(5)]
    others = list(User.objects.exclude(id=person.id).values_list("id", flat=True))
    other_keys = [create_api_key(user=User(id=uid), name="k")[0].id for uid in others[:200]]

    every = options.rows
    mine = round(every * options.share)
    # Which rows are the person's: an even spread (every k-th), so their ids interleave with
    # everybody else's as real traffic's do.
    step = every / mine if mine else every + 1
    columns = _usage_columns(UsageLog)
    key_ids = "ARRAY[" + ",".join(str(key.id) for key in keys) + "]::bigint[]"
    other_ids = "ARRAY[" + ",".join(map(str, others)) + "]::bigint[]"
    other_key_ids = "ARRAY[" + ",".join(map(str, other_keys)) + "]::bigint[]"
    models = "ARRAY[" + ",".join(f"'{model}'" for model in MODELS) + "]"
    overrides = {
        "created_at": f"now() - interval '30 days' * (1 - g::float8 / {every})",
        "user_id": f"CASE WHEN floor(g / {step}) <> floor((g - 1) / {step}) THEN {person.id} "
        f"ELSE ({other_ids})[1 + g % {len(others)}] END",
        "api_key_id": f"CASE WHEN floor(g / {step}) <> floor((g - 1) / {step}) "
        f"THEN ({key_ids})[1 + (g / 7) % 5] ELSE ({other_key_ids})[1 + g % {len(other_keys)}] END",
        "model": f"({models})[1 + (g / 3) % {len(MODELS)}]",
        "endpoint": "'chat_completions'",
        "is_stream": "g % 3 = 0",
        "input_tokens": "100 + g % 900",
        "cached_input_tokens": "g % 50",
        "output_tokens": "20 + g % 400",
        "quota": "300 + g % 5000",
        "latency_ms": "200 + g % 3000",
        "status": "CASE WHEN g % 97 = 0 THEN 'failed' ELSE 'success' END",
    }
    with connection.cursor() as cursor:
        names = ", ".join(f'"{column}"' for column, _ in columns)
        values = ", ".join(overrides.get(column, default) for column, default in columns)
        for low in range(0, every, 200_000):
            high = min(every, low + 200_000)
            # Column names and expressions come from the models and this script, never input.
            cursor.execute(
                f"INSERT INTO billing_usagelog ({names}) SELECT {values} "  # noqa: S608
                f"FROM generate_series({low + 1}, {high}) AS g"
            )
        # The ledger: a daily consumption summary per key for 30 days, a trial grant, some
        # top-ups, for the person; one row per day for everybody else.
        ledger = _usage_columns(LedgerEntry)
        ledger_names = ", ".join(f'"{column}"' for column, _ in ledger)
        person_rows = {
            "created_at": "now() - interval '1 day' * (g / 5)",
            "user_id": str(person.id),
            "api_key_id": f"({key_ids})[1 + g % 5]",
            "kind": "CASE WHEN g % 40 = 0 THEN 'topup' WHEN g = 149 THEN 'trial' "
            "ELSE 'consume' END",
            "amount": "CASE WHEN g % 40 = 0 OR g = 149 THEN 5000000 ELSE -(g * 997 % 90000) END",
            "note": "''",
        }
        others_rows = {
            "created_at": "now() - interval '1 day' * (g % 30)",
            "user_id": f"({other_ids})[1 + g % {len(others)}]",
            "api_key_id": "NULL",
            "kind": "'consume'",
            "amount": "-(g % 90000)",
            "note": "''",
        }
        for rows, count in ((person_rows, 150), (others_rows, 30 * len(others))):
            ledger_values = ", ".join(rows.get(column, default) for column, default in ledger)
            cursor.execute(
                f"INSERT INTO billing_ledgerentry ({ledger_names}) SELECT {ledger_values} "  # noqa: S608
                f"FROM generate_series(0, {count - 1}) AS g"
            )
    with connection.cursor() as cursor:
        connection.connection.autocommit = True
        cursor.execute("VACUUM ANALYZE billing_usagelog")
        cursor.execute("VACUUM ANALYZE billing_ledgerentry")
    print(
        f"filled {every:,} usage rows ({mine:,} the measured person's) for {options.users:,} "
        f"people in {time.monotonic() - started:.0f} s"
    )
    return {"person": person, "keys": keys}


def _usage_columns(model) -> list[tuple[str, str]]:
    """(column, SQL default) for every column but the id: the defaults Django would write."""
    import json

    from django.db.models import JSONField

    columns = []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        default = field.get_default()
        if default is None:
            sql = "NULL"
        elif isinstance(field, JSONField):
            sql = "'" + json.dumps(default) + "'::jsonb"
        elif isinstance(default, bool):
            sql = "true" if default else "false"
        elif isinstance(default, int | float) or type(default).__name__ == "Decimal":
            sql = str(default)
        else:
            sql = "'" + str(default).replace("'", "''") + "'"
        columns.append((field.column, sql))
    return columns


def measure(options: argparse.Namespace, made: dict) -> bool:
    from datetime import timedelta

    from django.db import connection
    from django.http import QueryDict
    from django.test import Client
    from django.utils import timezone

    from accounts import logs
    from accounts.views_logs import LogFilterForm
    from billing.models import UsageLog

    person, keys = made["person"], made["keys"]
    client = Client()
    client.force_login(person)
    today = timezone.localdate()
    day = timedelta(days=1)
    deep = (
        UsageLog.objects.filter(user=person)
        .order_by("id")
        .values_list("id", flat=True)[UsageLog.objects.filter(user=person).count() // 10]
    )
    cases = [
        ("calls, no filter", ""),
        ("calls, key", f"key={keys[2].id}"),
        ("calls, model", "model=o4-mini"),
        ("calls, key + model", f"key={keys[1].id}&model=gpt-4o"),
        ("calls, today", f"start={today}&end={today}"),
        ("calls, a day 3 weeks ago", f"start={today - 21 * day}&end={today - 21 * day}"),
        ("calls, one week 2 weeks ago", f"start={today - 20 * day}&end={today - 14 * day}"),
        ("calls, last 30 days", f"start={today - 30 * day}&end={today}"),
        (
            "calls, key + model + week",
            f"key={keys[3].id}&model=deepseek-chat&start={today - 10 * day}&end={today - 4 * day}",
        ),
        ("calls, unused model", "model=no-such-model"),
        ("calls, page deep in the past", f"before={deep}"),
        ("calls, newer page from there", f"after={deep}"),
        ("ledger, no filter", "show=ledger"),
        ("ledger, kind", "show=ledger&kind=topup"),
        ("ledger, key + week", f"show=ledger&key={keys[0].id}&start={today - 7 * day}"),
    ]
    mine = UsageLog.objects.filter(user=person).count()
    every = UsageLog.objects.count()
    print(
        f"\n{every:,} usage rows, {mine:,} of them the measured person's "
        f"({connection.vendor}); server time of GET /logs?…, {options.repeats} runs each:\n"
    )
    print(
        f"{'filter':34} {'rows':>9} {'page median':>12} {'max':>6} {'totals median':>14} {'max':>6}"
    )
    worst = 0.0
    for label, query in cases:
        page = _timed(client, "/logs?" + query, options.repeats)
        totals = _timed(client, "/logs/totals?" + query, options.repeats)
        count = _matching(person, QueryDict(query), LogFilterForm, logs)
        worst = max(worst, statistics.median(page))
        flag = "" if statistics.median(page) < LIMIT_MS else "  OVER"
        print(
            f"{label:34} {count:>9,} {statistics.median(page):>12.1f} {max(page):>6.1f} "
            f"{statistics.median(totals):>14.1f} {max(totals):>6.1f}{flag}"
        )

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    response = client.get("/logs/export.csv")
    lines = sum(chunk.count(b"\n") for chunk in response.streaming_content)
    seconds = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    print(
        f"\nCSV export of every call: {lines - 1:,} rows in {seconds:.1f} s "
        f"({(lines - 1) / seconds:,.0f} rows/s), peak memory grew {grown / 1024:.0f} MB"
    )
    print(f"\nslowest page median: {worst:.1f} ms (limit {LIMIT_MS:.0f} ms)")
    return worst < LIMIT_MS


def _timed(client, url: str, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` requests, after one to warm plans and caches."""
    client.get(url)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return times


def _matching(person, query, form_class, logs) -> int:
    """How many rows the filter matches (read apart from the timed requests)."""
    form = form_class(query, key_names=logs.key_names(person.id))
    wanted = form.log_filter()
    if form.value("show") == logs.LEDGER:
        return logs.movements(person.id, wanted).count()
    return logs.calls(person.id, wanted).count()


def main() -> None:
    options = arguments()
    prepare_environment(options)
    import django

    django.setup()
    made = fill(options)
    sys.exit(0 if measure(options, made) else 1)


if __name__ == "__main__":
    main()
