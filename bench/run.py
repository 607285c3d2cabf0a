#!/usr/bin/env python3
"""Sluice's relay overhead and throughput, side by side with the LiteLLM proxy, in one run.

    .venv/bin/python bench/run.py            # the full run (about 7 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # a smoke run (1 repeat, short runs)

What it starts (all on 127.0.0.1, all stopped again on exit):
- the mock upstream: nginx answering fixed chat completions from memory (bench/mock_upstream.py;
  the aiohttp fallback with ``--upstream aiohttp`` or when nginx is missing);
- Sluice in production mode: a fresh PostgreSQL database (dropped and re-created), a flushed
  Redis database, ``manage.py migrate``, a user with plenty of credit, one channel per upstream
  path, prices, one single key and N keys (default 200) of that user, plus N users with one key
  each, served by uvicorn with 2 workers, uvloop and httptools (the README's production command
  line); full auth, holds, settlement and a usage row on every call;
- the LiteLLM proxy (pinned, installed into bench/.venv-litellm if missing), no database,
  2 workers, a master key, both models routed to the same mock upstream.

What it measures, for non-stream and stream chat completions: p50/p99 latency at 1 connection
(and what each relay adds to the upstream's own) and requests/s at 32 connections, with wrk
(bench/load.lua rotates the Authorization key per request), and the CPU time each target's
processes spent per request. Every measurement is repeated (``--repeats``), the repeats
interleaved across targets so that a noisy neighbour hits all of them alike; the table shows
medians. Then it checks that Sluice billed what it answered: usage rows vs the 200s wrk
counted, and ``manage.py reconcile``; it also reports holds left open, PostgreSQL transactions
and Redis connections per call. ``--profile`` adds py-spy runs (bench/profile_phases.py).

Results: a table on stdout and JSON in bench/results/ (with the logs of every server).

The parts, one module each beside this one: processes.py (starting, stopping, CPU time),
workload.py (the request), targets.py (the mock upstream and what is measured), sluice.py
(Sluice's database, Redis, setup through sluice_setup.py, serving through scripts/serve, the
billing check through sluice_count.py), litellm_proxy.py, measure.py (wrk runs), profiling.py
(py-spy) and report.py (medians, ratios, the table).
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from litellm_proxy import LITELLM_VERSION, ensure_litellm, start_litellm
from measure import Bench
from processes import BENCH, ROOT, SLUICE_VENV, Processes, log
from report import print_table, summarize, versions
from sluice import check_billing, postgres_counters, setup_sluice, start_sluice
from targets import measured_targets, sanity_check, start_upstream
from workload import MODELS, request_body


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds per throughput run")
    parser.add_argument(
        "--latency-duration", type=float, default=4, help="seconds per 1-connection run"
    )
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target")
    parser.add_argument(
        "--latency-warmup",
        type=float,
        default=1,
        help="seconds at 1 connection, not counted, before each 1-connection run",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keys", type=int, default=200, help="keys the load rotates through")
    parser.add_argument("--workers", type=int, default=2, help="server workers, both relays")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between runs")
    parser.add_argument("--upstream", choices=["auto", "nginx", "aiohttp"], default="auto")
    parser.add_argument("--no-litellm", action="store_true", help="measure Sluice only")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the Sluice workers in extra runs"
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat of short runs (smoke)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/sluice_bench"
        ),
        help="dropped and re-created: its name must contain 'bench'",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.latency_duration, args.warmup, args.repeats = 3, 2, 1, 1
        args.latency_warmup = 0.5
        args.pause = 0.5
    for url in (args.database_url, args.redis_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"{url}: the benchmark talks to 127.0.0.1 only")
    return args


def preflight(args) -> str:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    if not (SLUICE_VENV / "bin/uvicorn").exists():
        raise SystemExit("Sluice's .venv is missing: run scripts/install first")
    upstream = args.upstream
    if upstream == "auto":
        upstream = "nginx" if shutil.which("nginx") else "aiohttp"
        if upstream == "aiohttp":
            log("nginx not found (apt-get install -y nginx-light): using the aiohttp upstream")
    elif upstream == "nginx" and not shutil.which("nginx"):
        raise SystemExit("nginx is missing: apt-get install -y nginx-light")
    return upstream


def main() -> int:
    args = parse_args()
    upstream_kind = preflight(args)
    if not args.no_litellm:
        ensure_litellm()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    results = BENCH / "results"
    logs = results / f"{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    procs = Processes()

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    began = time.monotonic()
    machine = versions(upstream_kind)  # before the run: others may commit meanwhile
    try:
        upstream = start_upstream(upstream_kind, procs, workdir, logs)
        upstream_proc, upstream_url = upstream
        log(f"upstream ({upstream_kind}) at {upstream_url}")
        sluice_env, keys = setup_sluice(args, workdir, upstream_url)
        sluice = start_sluice(procs, sluice_env, logs, args.workers)
        sluice_proc, sluice_url = sluice
        log(f"Sluice at {sluice_url} ({args.workers} workers)")
        groups = {"upstream": upstream_proc.pid, "sluice": sluice_proc.pid}
        litellm = None
        if not args.no_litellm:
            litellm = start_litellm(procs, workdir, logs, upstream_url, args.workers)
            groups["litellm"] = litellm[0].pid
            log(f"LiteLLM {LITELLM_VERSION} at {litellm[1]} ({args.workers} workers)")
        targets = measured_targets(args, workdir, keys, upstream, sluice, litellm)
        bench = Bench(args, workdir, groups)

        pg_before = postgres_counters(args.database_url)
        log("sanity check: one call per target and mode")
        sanity = {}
        for target in targets:
            for mode in MODELS:
                sanity[f"{target.name}/{mode}"] = sanity_check(target, mode, request_body(mode))
                if target.name.startswith("sluice"):
                    bench.sluice_ok += 1

        # (target, mode, connections, seconds): how keys and users are spread only matters
        # under load, so those cases have no 1-connection run.
        plan = []
        for target in targets:
            for mode in MODELS:
                if target.name not in ("sluice-1key", "sluice-users"):
                    plan.append((target, mode, 1, args.latency_duration))
                plan.append((target, mode, args.connections, args.duration))

        log(f"warm-up: {args.warmup:g}s per target and mode at {args.connections} connections")
        for target in targets:
            for mode in MODELS:
                bench.measure(target, mode, args.connections, args.warmup, round_=-1)

        for round_ in range(args.repeats):
            log(f"round {round_ + 1} of {args.repeats}")
            for target, mode, connections, seconds in plan:
                if connections == 1 and args.latency_warmup > 0:
                    # Every target's keys are in steady use when its latency is measured,
                    # whatever ran before (bench/README.md; bench/latency.py --pause measures
                    # a key's first calls after a rest).
                    bench.measure(target, mode, 1, args.latency_warmup, round_=-1)
                bench.measure(target, mode, connections, seconds, round_)

        summary = summarize(bench, targets, args)
        print()
        table = print_table(summary, targets, args)
        print()

        profiles = {}
        if args.profile:
            from profiling import profile_sluice

            try:
                profiles = profile_sluice(bench, targets[1], sluice_proc.pid, results, stamp)
            except Exception as problem:  # noqa: BLE001 - a failed profile must not lose the run
                log(f"profiling failed: {problem!r}")
        last_run_end = time.monotonic()

        billing = check_billing(args, sluice_env, bench, logs, pg_before, last_run_end)

        bar = {}
        for mode in MODELS:
            ratio = summary["ratios"].get(f"sluice/{mode}/throughput")
            if ratio is not None:
                bar[mode] = {"ratio": ratio, "bar_5x": ratio >= 5, "aim_10x": ratio >= 10}
        if bar:
            log(
                "bar (5x LiteLLM's throughput, aim 10x): "
                + "; ".join(
                    f"{mode} {b['ratio']}x -> {'met' if b['bar_5x'] else 'NOT met'}"
                    f"{', aim met' if b['aim_10x'] else ''}"
                    for mode, b in bar.items()
                )
            )

        out = results / f"{stamp}.json"
        out.write_text(
            json.dumps(
                {
                    "stamp": stamp,
                    "machine": machine,
                    "settings": {k: v for k, v in vars(args).items() if k not in ("database_url",)}
                    | {"database": urlsplit(args.database_url).path.lstrip("/")},
                    "sanity_response_bytes": sanity,
                    "summary": summary,
                    "bar": bar,
                    "billing": billing,
                    "table": table,
                    "profiles": profiles,
                    "measurements": [asdict(m) for m in bench.measurements],
                    "total_seconds": round(time.monotonic() - began, 1),
                },
                indent=2,
            )
        )
        log(f"results: {out.relative_to(ROOT)}; logs: {logs.relative_to(ROOT)}/")
        log(f"total time {time.monotonic() - began:.0f}s")
        return 0 if billing["ok"] else 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
