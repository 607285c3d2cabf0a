#!/usr/bin/env python3
"""What Sluice adds to one call at one connection: a short, focused run of bench/run.py's
1-connection measurement (no LiteLLM, no 32-connection runs).

    .venv/bin/python bench/latency.py [--rounds 5] [--seconds 4] [--workers 1] [--keys 20]
                                      [--pause 0]

Starts the nginx mock upstream and Sluice in production mode (PostgreSQL database
``sluice_bench_latency``, Redis database 13, both reset), then, round after round, runs wrk
with one connection against the upstream directly and through Sluice (``--keys`` keys of one
user, taken in turn: bench/run.py's 1-connection runs use 200),
for plain and streamed chat calls. Prints each round's p50 and p99 and the median added p50.

``--pause S`` rests S seconds before each run through Sluice: with S above
RELAY_READY_HOLD_IDLE_SECONDS (10 s) every key starts each run idle, so the run measures a key's
first calls after a rest (each places its own hold) rather than a key in steady use.
"""

import argparse
import tempfile
from pathlib import Path

from measure import added_p50, one_connection_rounds
from processes import Processes, log
from sluice import setup_sluice, start_sluice
from targets import measured_targets, start_upstream
from workload import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0, help="seconds of rest before each run")
    options = parser.parse_args()
    setup = argparse.Namespace(
        database_url="postgresql://postgres@127.0.0.1:5432/sluice_bench_latency",
        redis_url="redis://127.0.0.1:6379/13",
        keys=options.keys,
    )
    workdir = Path(tempfile.mkdtemp(prefix="sluice-latency-"))
    logs = workdir / "logs"
    logs.mkdir()
    procs = Processes()
    try:
        upstream = start_upstream("nginx", procs, workdir, logs)
        env, keys = setup_sluice(setup, workdir, upstream[1])
        sluice = start_sluice(procs, env, logs, options.workers)
        targets = measured_targets(setup, workdir, keys, upstream, sluice)
        upstream_target, sluice_target = targets[0], targets[1]
        latencies = one_connection_rounds(
            {target.name: target.urls for target in (upstream_target, sluice_target)},
            {target.name: target.keys_file for target in (upstream_target, sluice_target)},
            workdir,
            rounds=options.rounds,
            seconds=options.seconds,
            pause=options.pause,
        )
        for mode in MODELS:
            upstream_p50, rounds, added = added_p50(latencies, "sluice", mode)
            p99s = [p["p99"] / 1000 for p in latencies["sluice", mode]]
            slowest = [p["max"] / 1000 for p in latencies["sluice", mode]]
            calls = [p["requests"] for p in latencies["sluice", mode]]
            log(
                f"{mode}: upstream p50 {upstream_p50:.3f} ms, Sluice p50 by round "
                f"{[round(p, 2) for p in rounds]} ms, added p50 (median) {added:.2f} ms; "
                f"Sluice p99 by round {[round(p, 1) for p in p99s]} ms, slowest "
                f"{[round(p, 1) for p in slowest]} ms, calls {calls}"
            )
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
