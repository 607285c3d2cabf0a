"""The run's results: medians per target and mode, what each relay adds to the upstream's own
latency, throughput ratios, the table printed at the end, and the machine it ran on."""

import os
import platform
import statistics
import subprocess
from pathlib import Path

from litellm_proxy import LITELLM_VERSION
from measure import Bench
from processes import ROOT
from targets import Target
from workload import MODELS


def median(values):
    return statistics.median(values) if values else None


def summarize(bench: Bench, targets: list[Target], args) -> dict:
    rows = {}
    for target in targets:
        for mode in MODELS:
            entry = {}
            for kind, connections in (("latency", 1), ("throughput", args.connections)):
                runs = [
                    m
                    for m in bench.measurements
                    if m.target == target.name and m.mode == mode and m.connections == connections
                ]
                if not runs:
                    continue
                entry[kind] = {
                    "rps": median([m.rps for m in runs]),
                    "rps_all": [m.rps for m in runs],
                    "p50_ms": median([m.latency_us["p50"] / 1000 for m in runs]),
                    "p99_ms": median([m.latency_us["p99"] / 1000 for m in runs]),
                    "errors": sum(sum(m.errors.values()) for m in runs),
                    "bytes_per_request": median([m.bytes / max(m.requests, 1) for m in runs]),
                    "cpu_ms_per_request": {
                        name: round(
                            median([m.cpu.get(name, 0) / max(m.requests, 1) * 1000 for m in runs]),
                            3,
                        )
                        for name in runs[0].cpu
                    },
                }
            rows[f"{target.name}/{mode}"] = entry
    for mode in MODELS:
        base = rows.get(f"upstream/{mode}", {}).get("latency")
        for target in targets:
            latency = rows.get(f"{target.name}/{mode}", {}).get("latency")
            if target.relay and base and latency:
                latency["added_p50_ms"] = round(latency["p50_ms"] - base["p50_ms"], 3)
                latency["added_p99_ms"] = round(latency["p99_ms"] - base["p99_ms"], 3)
    ratios = {}
    for mode in MODELS:
        litellm = rows.get(f"litellm/{mode}", {})
        for name in ("sluice", "sluice-1key", "sluice-users"):
            sluice = rows.get(f"{name}/{mode}", {})
            if "throughput" in sluice and "throughput" in litellm:
                ratios[f"{name}/{mode}/throughput"] = round(
                    sluice["throughput"]["rps"] / litellm["throughput"]["rps"], 2
                )
        sluice = rows.get(f"sluice/{mode}", {}).get("latency", {})
        lite = litellm.get("latency", {})
        if sluice.get("added_p50_ms") and lite.get("added_p50_ms"):
            ratios[f"sluice/{mode}/added_p50_litellm_over_sluice"] = round(
                lite["added_p50_ms"] / sluice["added_p50_ms"], 2
            )
    return {"rows": rows, "ratios": ratios}


def print_table(summary: dict, targets: list[Target], args) -> str:
    lines = []
    header = (
        f"{'target':<20} {'mode':<7} {'req/s @' + str(args.connections):>11} "
        f"{'(min-max)':>17} {'p50 @1':>8} {'p99 @1':>8} {'+p50':>8} {'+p99':>8} "
        f"{'CPU ms/req':>10}"
    )
    lines += [header, "-" * len(header)]
    cpu_group = {"sluice-1key": "sluice", "sluice-users": "sluice"}
    for target in targets:
        for mode in MODELS:
            row = summary["rows"].get(f"{target.name}/{mode}", {})
            thr, lat = row.get("throughput"), row.get("latency")

            def fmt(value, spec=".2f"):
                return "-" if value is None else format(value, spec)

            spread = f"({min(thr['rps_all']):.0f}-{max(thr['rps_all']):.0f})" if thr else ""
            group = cpu_group.get(target.name, target.name)
            cpu = thr["cpu_ms_per_request"].get(group) if thr else None
            lines.append(
                f"{target.label:<20} {mode:<7} {fmt(thr and thr['rps'], '.0f'):>11} "
                f"{spread:>17} {fmt(lat and lat['p50_ms']):>8} {fmt(lat and lat['p99_ms']):>8} "
                f"{fmt(lat and lat.get('added_p50_ms')):>8} "
                f"{fmt(lat and lat.get('added_p99_ms')):>8} {fmt(cpu, '.3f'):>10}"
            )
    lines.append("")
    lines.append(
        "latencies in ms; +p50/+p99: added to the upstream's own at 1 connection; "
        "CPU ms/req: the target's own processes at 32 connections"
    )
    for key, value in summary["ratios"].items():
        lines.append(f"ratio {key}: {value}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def versions(upstream: str) -> dict:
    def out(cmd):
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (result.stdout + result.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": out(["wrk", "--version"]),
        "upstream": upstream,
        "nginx": out(["nginx", "-v"]) if upstream == "nginx" else None,
        "litellm": LITELLM_VERSION,
        "sluice_commit": out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "sluice_tree_changed_files": len(
            subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
            ).stdout.splitlines()
        ),
        "load_average": os.getloadavg(),
    }
