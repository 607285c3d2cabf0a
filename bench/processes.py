"""The benchmark's processes: starting and stopping servers, waiting for them, their CPU time.

Every server runs in its own process group (its workers too) and ``Processes.stop_all`` ends
the group, however the run ends. CPU time is read from /proc, per process group.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SLUICE_VENV = ROOT / ".venv"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Processes:
    """Every server this script starts, each in its own process group, all stopped at exit."""

    def __init__(self):
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], *, log_path: Path, **kwargs) -> subprocess.Popen:
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stopping it stops its workers too
                **kwargs,
            )
        self.started.append((name, process))
        return process

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for name, process in reversed(self.started):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop: killing it")
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=5)
            # Workers may outlive their leader for a moment: make sure the group is gone.
            for _ in range(50):
                if not group_pids(process.pid):
                    break
                time.sleep(0.1)
            else:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.started.clear()


def process_stats():
    """(pid, fields of /proc/PID/stat after the command name) for every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(")") + 2 :].split()


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (fields: 0 state, 2 process group)."""
    return [pid for pid, fields in process_stats() if int(fields[2]) == pgid and fields[0] != "Z"]


def child_pids(parent: int) -> list[int]:
    """Children of a process (field 1: parent pid)."""
    return [pid for pid, fields in process_stats() if int(fields[1]) == parent]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of a process group's live processes."""
    total = 0
    for pid in group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def named_cpu_seconds(names=("postgres", "redis-server")) -> float:
    """CPU seconds of the database servers (shared with anything else using them)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] in names:
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def wait_for_port(port: int, process: subprocess.Popen, name: str, log_path: Path, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not listen on port {port} within {timeout}s; see {log_path}")


def run_command(cmd, *, env=None, cwd=ROOT, check=True, capture=True, stdin: str | None = None):
    """Run a command to its end, ``stdin`` its input (SystemExit with its output if it fails
    and ``check``)."""
    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=capture, text=True, **feed)
    if check and result.returncode != 0:
        raise SystemExit(
            f"command failed ({result.returncode}): {' '.join(map(str, cmd))}\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def tagged(output: str, tag: str) -> dict:
    """The JSON a helper script printed on its ``TAG {...}`` line."""
    for line in output.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise SystemExit(f"no {tag} in output:\n{output}")


def ensure_venv(venv: Path, requirements: list[str], check: list[str]) -> None:
    """A virtualenv with ``requirements``, unless ``check`` (code, expected output) shows it
    is there already."""
    python = venv / "bin/python"
    if python.exists():
        probe = subprocess.run([str(python), "-c", check[0]], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == check[1]:
            return
    log(f"installing {' '.join(requirements)} into {venv.relative_to(ROOT)} (from PyPI)")
    if not python.exists():
        run_command([sys.executable, "-m", "venv", str(venv)])
    run_command([str(python), "-m", "pip", "install", "--quiet", *requirements], capture=False)
