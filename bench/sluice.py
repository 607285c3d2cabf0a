"""Sluice in production mode for the benchmark: a fresh PostgreSQL database and Redis database,
migrated and filled by bench/sluice_setup.py, served by scripts/serve (README's production
command line); afterwards, whether it billed every call it answered (bench/sluice_count.py and
``manage.py reconcile``), and what each call cost PostgreSQL and Redis.
"""

import json
import os
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from processes import (
    BENCH,
    ROOT,
    SLUICE_VENV,
    Processes,
    free_port,
    log,
    run_command,
    tagged,
    wait_for_port,
)
from workload import MODELS, UPSTREAM_KEY

# Set on the benchmark's Redis database once it is the benchmark's: a database holding keys
# without it is someone else's and is never flushed.
REDIS_MARK = "sluice-bench:this-database-belongs-to-the-benchmark"


def redis_counters(redis_url: str) -> dict:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("stats")
        clients = client.info("clients")
    finally:
        client.close()
    return {
        "connections": stats["total_connections_received"],
        "commands": stats["total_commands_processed"],
        "connected_clients": clients["connected_clients"],
    }


def postgres_counters(database_url: str) -> dict:
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_fetched,"
            " tup_returned FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
    keys = ("transactions", "inserted", "updated", "fetched", "returned")
    return dict(zip(keys, row, strict=False))


def reset_database(database_url: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"refusing to drop database {name!r}: its name must contain 'bench'")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def reset_redis(redis_url: str) -> None:
    """Empty the benchmark's Redis database: only one that is empty or carries REDIS_MARK."""
    import redis

    parts = urlsplit(redis_url)
    if parts.path.strip("/") in ("", "0"):
        raise SystemExit("refusing to flush Redis database 0: give REDIS_URL a database number")
    client = redis.Redis.from_url(redis_url)
    try:
        if client.dbsize() and not client.exists(REDIS_MARK):
            raise SystemExit(
                f"refusing to flush {redis_url}: it holds keys the benchmark did not write (no "
                f"{REDIS_MARK!r} key). Give --redis-url an empty database, or flush it yourself."
            )
        client.flushdb()
        client.set(REDIS_MARK, "1")
    finally:
        client.close()


def django_script(env: dict, script: str, *, stdin: str | None = None) -> str:
    """Run one of bench/'s Django scripts in Sluice's environment; its output."""
    return run_command(
        [str(SLUICE_VENV / "bin/python"), str(BENCH / script)], env=env, stdin=stdin
    ).stdout


def manage(env: dict, *args: str) -> str:
    return run_command([str(SLUICE_VENV / "bin/python"), "manage.py", *args], env=env).stdout


def setup_sluice(args, workdir: Path, upstream_url: str) -> tuple[dict, dict]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "SLUICE_DATA_DIR": str(workdir / "sluice-data"),
            "DEBUG": "0",
            # One node: its secrets are generated once into the throwaway data folder.
            "SLUICE_GENERATE_SECRETS": "1",
        }
    )
    for name in ("SECRET_KEY", "KEY_LOOKUP_SECRET", "KEY_ENCRYPTION_KEYS"):
        env.pop(name, None)
    log(f"Sluice: resetting {args.database_url} and {args.redis_url}")
    reset_database(args.database_url)
    reset_redis(args.redis_url)
    started = time.monotonic()
    manage(env, "migrate", "--no-input")
    log(f"Sluice: migrated in {time.monotonic() - started:.1f}s; creating user, channels, keys")
    spec = {
        "user": "bench",
        "credit": 10**12,  # $2,000,000: never the limit
        "models": MODELS,
        "upstream": upstream_url,
        "upstream_key": UPSTREAM_KEY,
        "keys": args.keys,
    }
    keys = tagged(django_script(env, "sluice_setup.py", stdin=json.dumps(spec)), "SETUP_RESULT")
    return env, keys


def start_sluice(procs: Processes, env: dict, logs: Path, workers: int):
    """scripts/serve on a free loopback port; the process is uvicorn itself (serve execs it),
    its workers its children."""
    port = free_port()
    log_path = logs / "sluice.log"
    process = procs.start(
        "sluice",
        [str(ROOT / "scripts/serve")],
        log_path=log_path,
        env=dict(env, HOST="127.0.0.1", PORT=str(port), WORKERS=str(workers)),
        cwd=ROOT,
    )
    wait_for_port(port, process, "Sluice", log_path, timeout=60)
    return process, f"http://127.0.0.1:{port}"


def check_billing(args, env: dict, bench, logs: Path, pg_before: dict, last_run_end: float):
    """Did Sluice bill what it answered? Usage rows against the 200s wrk counted, reconcile,
    holds left open, and PostgreSQL and Redis work per call."""
    log("billing check: counting usage rows and holds, reconcile")
    # Calls still settling finish within a second; PostgreSQL flushes an idle backend's
    # statistics within 10 s. Wait both out before reading the counters, and read the
    # database's counters before this check's own queries add to them.
    time.sleep(max(0.0, 11 - (time.monotonic() - last_run_end)))
    pg_after = postgres_counters(args.database_url)
    counts = tagged(django_script(env, "sluice_count.py"), "COUNT_RESULT")
    reconcile = run_command(
        [str(SLUICE_VENV / "bin/python"), "manage.py", "reconcile"], env=env, check=False
    )
    rows = counts["usage_rows"]
    # Every 200 wrk counted has its row; wrk also cuts the calls in flight when a run ends,
    # which Sluice still answers (or bills as client_gone): at most one per connection.
    extra = rows - bench.sluice_ok
    billing = {
        "sluice_200s_counted_by_wrk": bench.sluice_ok,
        "usage_rows": rows,
        "usage_rows_minus_200s": extra,
        "allowed_extra": bench.sluice_runs_connections,
        **counts,
        "reconcile_exit": reconcile.returncode,
        "reconcile_output": (reconcile.stdout + reconcile.stderr).strip()[-2000:],
    }
    # Open holds are not a failure of this check: a call cut by wrk while its hold was
    # being placed leaves one, released by the expiry sweep (see bench/README.md).
    billing["ok"] = 0 <= extra <= bench.sluice_runs_connections and reconcile.returncode == 0
    log(
        f"Sluice answered {bench.sluice_ok} calls with 200 (wrk's count); usage rows: {rows} "
        f"({extra:+d}; up to +{bench.sluice_runs_connections} cut at run ends); "
        f"by status {counts['usage_by_status']}; "
        f"reconcile: {(reconcile.stdout + reconcile.stderr).strip().splitlines()[-1:]} "
        f"-> {'OK' if billing['ok'] else 'FAILED'}"
    )
    log(
        f"holds left open: {counts['holds_open']} of {counts['holds_total']} "
        f"({counts['holds_open_without_usage_row']} without a usage row: calls cut while "
        "being admitted; only the expiry sweep releases them)"
    )
    # The whole run's transactions and row writes, divided by the calls Sluice billed.
    pg_per_call = {k: round((pg_after[k] - pg_before[k]) / max(rows, 1), 2) for k in pg_after}
    loaded = [m.per_call for m in bench.measurements if m.per_call and m.connections > 1]
    redis_per_call = {
        k: statistics.median([per_call[k] for per_call in loaded]) if loaded else None
        for k in ("redis_connections", "redis_commands")
    }
    log(
        f"per Sluice call: PostgreSQL {pg_per_call} (whole run, approximate); "
        f"Redis {redis_per_call} (median over 32-connection runs)"
    )
    # uvicorn runs with --no-access-log; count the access lines that were written anyway.
    access_lines = sum(
        1
        for line in (logs / "sluice.log").read_text(errors="replace").splitlines()
        if '"POST /v1/chat/completions HTTP/1.1"' in line
    )
    if access_lines:
        log(
            f"Sluice's log has {access_lines} access-log lines although uvicorn ran with "
            "--no-access-log (settings.LOGGING gives uvicorn.access a handler)"
        )
    billing["access_log_lines_despite_no_access_log"] = access_lines
    billing["postgres_per_call"] = pg_per_call
    billing["redis_per_call"] = redis_per_call
    return billing
