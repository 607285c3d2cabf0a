#!/usr/bin/env python3
"""What Sluice adds to one call at one connection: a short, focused run of bench/run.py's
1-connection measurement (no LiteLLM, no 32-connection runs).

    .venv/bin/python bench/latency.py [--rounds 5] [--seconds 4] [--workers 1] [--keys 20]

Starts the nginx mock upstream and Sluice in production mode (PostgreSQL database
``sluice_bench_latency``, Redis database 13, both reset), then, round after round, runs wrk
with one connection against the upstream directly and through Sluice (``--keys`` keys of one
user, taken in turn: bench/run.py's 1-connection runs use 200),
for plain and streamed chat calls. Prints each round's p50 and p99 and the median added p50.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from measure import run_wrk
from processes import Processes, log
from sluice import setup_sluice, start_sluice
from targets import measured_targets, start_upstream
from workload import MODELS, request_body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keys", type=int, default=20)
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
        bodies = {}
        for mode in MODELS:
            bodies[mode] = workdir / f"body-{mode}.json"
            bodies[mode].write_bytes(request_body(mode))
        p50s: dict[tuple[str, str], list[float]] = {}
        p99s: dict[tuple[str, str], list[float]] = {}
        for round_ in range(-1, options.rounds):  # round -1 warms up and is not counted
            for target in (upstream_target, sluice_target):
                for mode in MODELS:
                    result = run_wrk(
                        target.urls[mode],
                        body_file=str(bodies[mode]),
                        keys_file=target.keys_file,
                        connections=1,
                        seconds=options.seconds if round_ >= 0 else 2,
                    )
                    if round_ >= 0:
                        latency = result["latency_us"]
                        p50s.setdefault((target.name, mode), []).append(latency["p50"] / 1000)
                        p99s.setdefault((target.name, mode), []).append(latency["p99"] / 1000)
        for mode in MODELS:
            upstream_p50 = statistics.median(p50s[("upstream", mode)])
            rounds = p50s[("sluice", mode)]
            added = statistics.median(rounds) - upstream_p50
            log(
                f"{mode}: upstream p50 {upstream_p50:.3f} ms, Sluice p50 by round "
                f"{[round(p, 2) for p in rounds]} ms, added p50 (median) {added:.2f} ms; "
                f"Sluice p99 by round {[round(p, 1) for p in p99s[('sluice', mode)]]} ms"
            )
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
