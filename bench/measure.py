"""One measurement: wrk against a target for a while (bench/load.lua rotates the key per
request), with the CPU time every process group spent meanwhile and, for Sluice, the Redis work
per call."""

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from processes import (
    BENCH,
    group_cpu_seconds,
    log,
    machine_cpu_seconds,
    named_cpu_seconds,
    tagged,
)
from sluice import redis_counters
from targets import Target
from workload import MODELS, request_body


@dataclass
class Measurement:
    target: str
    mode: str
    connections: int
    round: int
    seconds: float
    requests: int
    ok: int
    errors: dict
    bytes: int
    rps: float
    latency_us: dict
    cpu: dict = field(default_factory=dict)  # seconds of CPU per process group during the run
    per_call: dict = field(default_factory=dict)  # Sluice: Redis connections/commands per call


def run_wrk(
    url: str, *, body_file: str, keys_file: str, connections: int, seconds: float, threads=1
) -> dict:
    """wrk's result (load.lua's WRK_RESULT line, as a dict)."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "load.lua"),
        url,
        "--",
        body_file,
        keys_file,
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=seconds + 60)
    if process.returncode != 0:
        raise SystemExit(f"wrk failed ({process.returncode}): {err}\n{out}")
    return tagged(out, "WRK_RESULT")


def one_connection_rounds(
    urls: dict[str, dict[str, str]],
    keys_files: dict[str, str],
    workdir: Path,
    *,
    rounds: int,
    seconds: int,
    pause: float = 0,
) -> dict[tuple[str, str], list[dict]]:
    """wrk at one connection against each target's URL per mode (``urls[target][mode]``), the
    targets taken in turn, round after round after a short warm-up round that is not counted:
    each (target, mode)'s latencies (wrk's ``latency_us``, and ``requests``), one per round.
    ``pause``: seconds of rest before each counted run of a target other than "upstream" (its
    keys idle)."""
    bodies = {}
    for mode in MODELS:
        bodies[mode] = workdir / f"body-{mode}.json"
        bodies[mode].write_bytes(request_body(mode))
    latencies: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(-1, rounds):
        for target, by_mode in urls.items():
            for mode in MODELS:
                if pause and round_ >= 0 and target != "upstream":
                    time.sleep(pause)
                result = run_wrk(
                    by_mode[mode],
                    body_file=str(bodies[mode]),
                    keys_file=keys_files[target],
                    connections=1,
                    seconds=seconds if round_ >= 0 else 2,
                )
                if round_ >= 0:
                    latencies.setdefault((target, mode), []).append(
                        {**result["latency_us"], "requests": result["requests"]}
                    )
    return latencies


def added_p50(
    latencies: dict[tuple[str, str], list[dict]], relay: str, mode: str
) -> tuple[float, list[float], float]:
    """From ``one_connection_rounds``: the upstream's median p50, the relay's p50 by round, and
    what the relay adds (the median of its rounds less the upstream's), in ms."""
    upstream = statistics.median(p["p50"] / 1000 for p in latencies["upstream", mode])
    rounds = [p["p50"] / 1000 for p in latencies[relay, mode]]
    return upstream, rounds, statistics.median(rounds) - upstream


class Bench:
    def __init__(self, args, workdir: Path, groups: dict):
        self.args = args
        self.workdir = workdir
        self.groups = groups  # name -> pgid, for CPU accounting
        self.body_files = {}
        for mode in MODELS:
            path = workdir / f"body-{mode}.json"
            path.write_bytes(request_body(mode))
            self.body_files[mode] = str(path)
        self.measurements: list[Measurement] = []
        self.sluice_ok = 0  # 200s Sluice answered, by wrk's count, warm-ups included
        self.sluice_runs_connections = 0  # connections cut at the end of Sluice runs

    def measure(self, target: Target, mode: str, connections: int, seconds: float, round_: int):
        is_sluice = target.name.startswith("sluice")
        redis_before = redis_counters(self.args.redis_url) if is_sluice else None
        cpu_before = {name: group_cpu_seconds(pgid) for name, pgid in self.groups.items()}
        databases_before = named_cpu_seconds()
        busy_before, total_before = machine_cpu_seconds()
        wrk_before = os.times()
        result = run_wrk(
            target.urls[mode],
            body_file=self.body_files[mode],
            keys_file=target.keys_file,
            connections=connections,
            seconds=seconds,
        )
        wrk_after = os.times()
        cpu = {
            name: round(group_cpu_seconds(pgid) - cpu_before[name], 3)
            for name, pgid in self.groups.items()
        }
        cpu["wrk"] = round(
            (wrk_after.children_user + wrk_after.children_system)
            - (wrk_before.children_user + wrk_before.children_system),
            3,
        )
        cpu["postgres+redis"] = round(named_cpu_seconds() - databases_before, 3)
        busy_after, total_after = machine_cpu_seconds()
        cpu["machine_busy"] = round(busy_after - busy_before, 3)
        # CPU time of everything else on the machine: the noise of a shared machine.
        cpu["others"] = round(
            cpu["machine_busy"] - sum(v for k, v in cpu.items() if k != "machine_busy"), 3
        )
        cpu["machine_capacity"] = round(total_after - total_before, 3)
        duration = result["duration_us"] / 1e6
        ok = result["requests"] - result["errors"]["status"]
        per_call = {}
        if is_sluice:
            self.sluice_ok += ok
            self.sluice_runs_connections += connections
            redis_after = redis_counters(self.args.redis_url)
            calls = max(result["requests"], 1)
            # Server-wide counters: other users of the same Redis add a little noise.
            per_call = {
                "redis_connections": round(
                    (redis_after["connections"] - redis_before["connections"]) / calls, 2
                ),
                "redis_commands": round(
                    (redis_after["commands"] - redis_before["commands"]) / calls, 2
                ),
                "redis_connected_clients_after": redis_after["connected_clients"],
            }
        measurement = Measurement(
            target=target.name,
            mode=mode,
            connections=connections,
            round=round_,
            seconds=round(duration, 3),
            requests=result["requests"],
            ok=ok,
            errors=result["errors"],
            bytes=result["bytes"],
            rps=round(result["requests"] / duration, 1),
            latency_us=result["latency_us"],
            cpu=cpu,
            per_call=per_call,
        )
        bad = sum(result["errors"].values())
        note = f"  ERRORS {result['errors']}" if bad else ""
        note += (
            f"  [machine busy {cpu['machine_busy'] / duration * 100:.0f}%,"
            f" others {max(0.0, cpu['others']) / duration * 100:.0f}%]"
        )
        if round_ >= 0:
            self.measurements.append(measurement)
            log(
                f"  {target.label:<18} {mode:<6} c={connections:<3} "
                f"{measurement.rps:>9.1f} req/s  p50 {result['latency_us']['p50'] / 1000:7.2f} ms"
                f"  p99 {result['latency_us']['p99'] / 1000:7.2f} ms{note}"
            )
        elif bad:
            log(f"  warm-up {target.label} {mode}:{note}")
        time.sleep(self.args.pause)
        return measurement
