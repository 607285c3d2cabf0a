"""py-spy on Sluice's workers during extra runs (``--profile``): where a call's time goes."""

import subprocess
import time
from pathlib import Path

from measure import Bench
from processes import BENCH, ROOT, child_pids, ensure_venv
from targets import Target
from workload import MODELS

TOOLS_VENV = BENCH / ".venv-tools"
PY_SPY_REQUIREMENT = "py-spy==0.4.3"


def profile_sluice(bench: Bench, target: Target, sluice_pid: int, results: Path, stamp: str):
    """Extra runs with py-spy on each Sluice worker (not in the table), per mode:
    1 connection sampling wall time (where a call's latency goes) and 32 connections sampling
    only the thread holding the GIL (where the CPU goes). Phases: bench/profile_phases.py."""
    import profile_phases

    ensure_venv(
        TOOLS_VENV,
        [PY_SPY_REQUIREMENT],
        ["import importlib.metadata as m; print(m.version('py-spy'))", "0.4.3"],
    )
    py_spy = str(TOOLS_VENV / "bin/py-spy")
    workers = [
        pid
        for pid in child_pids(sluice_pid)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    reports = {}
    for mode in MODELS:
        for connections, seconds, rate, gil in (
            (1, bench.args.latency_duration, 1000, False),
            (bench.args.connections, bench.args.duration, 200, True),
        ):
            name = f"{stamp}-profile-{mode}-c{connections}{'-gil' if gil else ''}"
            raws, spies = [], []
            for worker in workers:
                for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
                    out = results / f"{name}-{worker}.{ext}"
                    if fmt == "raw":
                        raws.append(str(out))
                    spies.append(
                        subprocess.Popen(
                            [py_spy, "record", "--pid", str(worker), "--rate", str(rate)]
                            + ["--duration", str(int(seconds)), "--nonblocking"]
                            + (["--gil"] if gil else [])
                            + ["--format", fmt, "--output", str(out)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
            time.sleep(0.5)
            measurement = bench.measure(target, mode, connections, seconds, round_=-1)
            for spy in spies:
                spy.wait(timeout=60)
            title = (
                f"{target.label} {mode}, {connections} connection(s), "
                f"{'CPU (GIL holder) samples' if gil else 'wall-time samples'}; "
                f"{measurement.rps:.0f} req/s during the profile"
            )
            text = profile_phases.report(
                [path for path in raws if Path(path).exists()], rate, measurement.requests, title
            )
            print(text, flush=True)
            reports[name] = {
                "report": text,
                "files": [str(Path(r).relative_to(ROOT)) for r in raws],
            }
    return reports
