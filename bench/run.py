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
"""

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import mock_upstream  # noqa: E402

SLUICE_VENV = ROOT / ".venv"
LITELLM_VENV = BENCH / ".venv-litellm"
TOOLS_VENV = BENCH / ".venv-tools"
# The newest LiteLLM whose [proxy] extra installs from PyPI here (1.108+ needs packages that
# are not published there; 1.107.0 was the compromised release). httptools: uvicorn's fast
# HTTP parser, which Sluice runs with too.
LITELLM_REQUIREMENTS = ["litellm[proxy]==1.106.12", "httptools==0.9.0"]
LITELLM_VERSION = "1.106.12"
PY_SPY_REQUIREMENT = "py-spy==0.4.3"
UPSTREAM_KEY = "upstream-bench-key"
LITELLM_MASTER_KEY = "sk-litellm-bench-master"
MODELS = {"plain": "bench-plain", "stream": "bench-stream"}
PROMPT = "Say hello from the mock upstream, in five words."


def request_body(mode: str) -> bytes:
    body = {
        "model": MODELS[mode],
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
    }
    if mode == "stream":
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Processes --------------------------------------------------------------------------------


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


def post(url: str, body: bytes, key: str | None = None, timeout=30) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def run(cmd, *, env=None, cwd=ROOT, check=True, capture=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=capture, text=True, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise SystemExit(
            f"command failed ({result.returncode}): {' '.join(map(str, cmd))}\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


# --- The mock upstream --------------------------------------------------------------------------


def start_upstream(kind: str, procs: Processes, workdir: Path, logs: Path) -> tuple:
    port = free_port()
    if kind == "nginx":
        prefix = workdir / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(mock_upstream.nginx_conf(port=port, prefix=str(prefix)))
        log_path = logs / "upstream-nginx.log"
        process = procs.start(
            "nginx",
            [shutil.which("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(log_path)],
            log_path=log_path,
        )
    else:
        log_path = logs / "upstream-aiohttp.log"
        process = procs.start(
            "aiohttp upstream",
            [str(SLUICE_VENV / "bin/python"), str(BENCH / "mock_upstream.py"), str(port)],
            log_path=log_path,
        )
    wait_for_port(port, process, "the mock upstream", log_path, timeout=30)
    return process, f"http://127.0.0.1:{port}"


# --- Sluice -------------------------------------------------------------------------------------

SETUP_SCRIPT = """
import io, json, sys
from django.core.management import call_command
from accounts.models import User
from accounts.services import create_api_key

spec = json.loads(sys.stdin.read())
def command(*args, **kwargs):
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue().strip()

command("create_user", spec["user"])
command("grant", spec["user"], spec["credit"], note="benchmark credit")
for mode, model in spec["models"].items():
    command("set_price", model, ratio="1", completion_ratio="2")
    command("add_channel", name=model, base_url=spec["upstream"] + "/" + mode,
            key=spec["upstream_key"], models=model)
single = command("create_key", spec["user"], name="single")
user = User.objects.get(username=spec["user"])
many = [create_api_key(user=user, name=f"bench-{i}")[1] for i in range(spec["keys"])]
# The same number of keys, one per user: calls then share no balance row.
users = []
for i in range(spec["keys"]):
    name = f"{spec['user']}-{i}"
    command("create_user", name)
    command("grant", name, spec["credit"] // 1000, note="benchmark credit")
    users.append(create_api_key(user=User.objects.get(username=name), name="bench")[1])
print("SETUP_RESULT " + json.dumps({"single": single, "many": many, "users": users}))
"""

COUNT_SCRIPT = """
import json
from django.db.models import Count
from billing.models import Hold, UsageLog
open_holds = Hold.objects.filter(status=Hold.Status.OPEN)
print("COUNT_RESULT " + json.dumps({
    "usage_rows": UsageLog.objects.count(),
    "usage_by_status": dict(UsageLog.objects.values_list("status").annotate(n=Count("id"))),
    "usage_by_model": dict(UsageLog.objects.values_list("model").annotate(n=Count("id"))),
    "holds_total": Hold.objects.count(),
    "holds_open": open_holds.count(),
    "holds_open_without_usage_row": open_holds.exclude(
        id__in=UsageLog.objects.exclude(hold_id=None).values("hold_id")).count(),
}))
"""


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
    import redis

    parts = urlsplit(redis_url)
    if parts.path.strip("/") in ("", "0"):
        raise SystemExit("refusing to flush Redis database 0: give REDIS_URL a database number")
    redis.Redis.from_url(redis_url).flushdb()


def manage(env: dict, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(SLUICE_VENV / "bin/python"), "manage.py", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def tagged(output: str, tag: str) -> dict:
    for line in output.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise SystemExit(f"no {tag} in output:\n{output}")


def setup_sluice(args, workdir: Path, upstream_url: str) -> tuple[dict, dict]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "SLUICE_DATA_DIR": str(workdir / "sluice-data"),
            "DEBUG": "0",
        }
    )
    for name in ("SECRET_KEY", "KEY_LOOKUP_SECRET", "KEY_ENCRYPTION_KEYS"):
        env.pop(name, None)  # generated in the throwaway data folder
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
    keys = tagged(manage(env, "shell", "-c", SETUP_SCRIPT, stdin=json.dumps(spec)), "SETUP_RESULT")
    return env, keys


def start_sluice(procs: Processes, env: dict, logs: Path, workers: int):
    port = free_port()
    log_path = logs / "sluice.log"
    process = procs.start(
        "sluice",
        [
            str(SLUICE_VENV / "bin/uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "config.server:GuardedHttpToolsProtocol",
            "--no-access-log",
            "--no-proxy-headers",
        ],
        log_path=log_path,
        env=env,
        cwd=ROOT,
    )
    wait_for_port(port, process, "Sluice", log_path, timeout=60)
    return process, f"http://127.0.0.1:{port}"


# --- LiteLLM ------------------------------------------------------------------------------------


def ensure_venv(venv: Path, requirements: list[str], check: list[str]) -> None:
    python = venv / "bin/python"
    if python.exists():
        probe = subprocess.run([str(python), "-c", check[0]], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == check[1]:
            return
    log(f"installing {' '.join(requirements)} into {venv.relative_to(ROOT)} (from PyPI)")
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    run([str(python), "-m", "pip", "install", "--quiet", *requirements], capture=False)


def ensure_litellm() -> None:
    ensure_venv(
        LITELLM_VENV,
        LITELLM_REQUIREMENTS,
        ["import importlib.metadata as m; print(m.version('litellm'))", LITELLM_VERSION],
    )


def start_litellm(procs: Processes, workdir: Path, logs: Path, upstream_url: str, workers: int):
    port = free_port()
    config = workdir / "litellm.yaml"
    model_list = "".join(
        f"""
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream_url}/{mode}/v1
      api_key: {UPSTREAM_KEY}
"""
        for mode, model in MODELS.items()
    )
    config.write_text(
        f"""model_list:{model_list}
general_settings:
  master_key: {LITELLM_MASTER_KEY}
litellm_settings:
  telemetry: false
"""
    )
    # Same as Sluice's --no-access-log: uvicorn's access lines are not part of the comparison.
    log_config = workdir / "litellm-logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"default": {"class": "logging.StreamHandler"}},
                "loggers": {
                    "uvicorn": {"handlers": ["default"], "level": "WARNING"},
                    "uvicorn.error": {"level": "WARNING"},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                },
            }
        )
    )
    env = dict(os.environ)
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price map at start
            "LITELLM_MODE": "PRODUCTION",
            "LITELLM_LOG": "ERROR",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    env.pop("DATABASE_URL", None)
    log_path = logs / "litellm.log"
    process = procs.start(
        "litellm",
        [
            str(LITELLM_VENV / "bin/litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
            "--log_config",
            str(log_config),
        ],
        log_path=log_path,
        env=env,
        cwd=workdir,
    )
    wait_for_port(port, process, "LiteLLM", log_path, timeout=180)
    return process, f"http://127.0.0.1:{port}"


# --- Load -------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # "upstream", "sluice", "sluice-1key", "litellm"
    label: str
    urls: dict  # mode -> URL
    keys_file: str  # "-" for none
    first_key: str | None
    pgid: int  # process group whose CPU time is charged to this target
    relay: bool = True


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
) -> tuple[dict, float]:
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


def sanity_check(target: Target, mode: str, body: bytes) -> int:
    """One request by hand: a 200 with the mock's answer, a stream that ends in [DONE]."""
    status, answer = post(target.urls[mode], body, target.first_key)
    if status != 200:
        raise SystemExit(f"{target.label} {mode}: HTTP {status}: {answer[:500]!r}")
    if mode == "plain":
        content = json.loads(answer)["choices"][0]["message"]["content"]
        if content != "".join(mock_upstream.WORDS):
            raise SystemExit(f"{target.label} {mode}: unexpected answer {answer[:500]!r}")
    else:
        text = answer.decode()
        if "data: [DONE]" not in text or '"usage"' not in text:
            raise SystemExit(f"{target.label} {mode}: stream without usage or [DONE]: {text!r}")
        words = "".join(
            (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
            for line in text.splitlines()
            if line.startswith("data: {")
        )
        if words != "".join(mock_upstream.WORDS):
            raise SystemExit(f"{target.label} {mode}: unexpected stream {text!r}")
    return len(answer)


# --- Profile ----------------------------------------------------------------------------------


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


# --- Report -----------------------------------------------------------------------------------


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


# --- Main -------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds per throughput run")
    parser.add_argument(
        "--latency-duration", type=float, default=4, help="seconds per 1-connection run"
    )
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target")
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
        upstream_proc, upstream_url = start_upstream(upstream_kind, procs, workdir, logs)
        log(f"upstream ({upstream_kind}) at {upstream_url}")
        sluice_env, keys = setup_sluice(args, workdir, upstream_url)
        sluice_proc, sluice_url = start_sluice(procs, sluice_env, logs, args.workers)
        log(f"Sluice at {sluice_url} ({args.workers} workers)")
        groups = {"upstream": upstream_proc.pid, "sluice": sluice_proc.pid}
        litellm_url = None
        if not args.no_litellm:
            litellm_proc, litellm_url = start_litellm(
                procs, workdir, logs, upstream_url, args.workers
            )
            groups["litellm"] = litellm_proc.pid
            log(f"LiteLLM {LITELLM_VERSION} at {litellm_url} ({args.workers} workers)")

        many_file = workdir / "keys-many.txt"
        many_file.write_text("\n".join(keys["many"]) + "\n")
        single_file = workdir / "keys-single.txt"
        single_file.write_text(keys["single"] + "\n")
        users_file = workdir / "keys-users.txt"
        users_file.write_text("\n".join(keys["users"]) + "\n")
        master_file = workdir / "keys-litellm.txt"
        master_file.write_text(LITELLM_MASTER_KEY + "\n")

        def relay_urls(base):
            return {mode: f"{base}/v1/chat/completions" for mode in MODELS}

        targets = [
            Target(
                "upstream",
                "upstream directly",
                {mode: f"{upstream_url}/{mode}/v1/chat/completions" for mode in MODELS},
                "-",
                None,
                upstream_proc.pid,
                relay=False,
            ),
            Target(
                "sluice",
                f"Sluice ({args.keys} keys)",
                relay_urls(sluice_url),
                str(many_file),
                keys["many"][0],
                sluice_proc.pid,
            ),
            Target(
                "sluice-1key",
                "Sluice (1 key)",
                relay_urls(sluice_url),
                str(single_file),
                keys["single"],
                sluice_proc.pid,
            ),
            Target(
                "sluice-users",
                f"Sluice ({args.keys} users)",
                relay_urls(sluice_url),
                str(users_file),
                keys["users"][0],
                sluice_proc.pid,
            ),
        ]
        if litellm_url:
            targets.append(
                Target(
                    "litellm",
                    "LiteLLM",
                    relay_urls(litellm_url),
                    str(master_file),
                    LITELLM_MASTER_KEY,
                    groups["litellm"],
                )
            )
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
                bench.measure(target, mode, connections, seconds, round_)

        summary = summarize(bench, targets, args)
        print()
        table = print_table(summary, targets, args)
        print()

        profiles = {}
        if args.profile:
            try:
                profiles = profile_sluice(bench, targets[1], sluice_proc.pid, results, stamp)
            except Exception as problem:  # noqa: BLE001 - a failed profile must not lose the run
                log(f"profiling failed: {problem!r}")
        last_run_end = time.monotonic()

        # --- Did Sluice bill what it answered? -------------------------------------------------
        log("billing check: counting usage rows and holds, reconcile")
        # Calls still settling finish within a second; PostgreSQL flushes an idle backend's
        # statistics within 10 s. Wait both out before reading the counters, and read the
        # database's counters before this check's own queries add to them.
        time.sleep(max(0.0, 11 - (time.monotonic() - last_run_end)))
        pg_after = postgres_counters(args.database_url)
        counts = tagged(manage(sluice_env, "shell", "-c", COUNT_SCRIPT), "COUNT_RESULT")
        reconcile = run(
            [str(SLUICE_VENV / "bin/python"), "manage.py", "reconcile"],
            env=sluice_env,
            check=False,
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
        redis_per_call = {
            k: median(
                [m.per_call[k] for m in bench.measurements if m.per_call and m.connections > 1]
            )
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
