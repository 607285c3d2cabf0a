"""Faults under load: PostgreSQL and Redis restarted, stopped and frozen, a server worker
killed, while clients send ~100 calls/s (half streams); then, call by call, who got what and
who paid for what.

    .venv/bin/python bench/faults.py                  # every scenario, about 5 minutes
    .venv/bin/python bench/faults.py --only pg-stop   # one scenario

Everything runs on loopback against services of its own (tests/private_services.py): a
PostgreSQL and a redis-server started on free ports in /tmp, a mock upstream
(tests/mock_upstream.py) in a process of its own, Sluice as production runs it (scripts/serve,
two uvicorn workers) and a Celery worker with beat (the hold sweep). Nothing shared is touched.

How each call is told apart afterwards without storing anything about it: every call asks for
a different ``max_tokens`` (BASE + its number), and the model is priced at ratio 1 and
completion ratio 1, so its hold is exactly (input counted locally) + max_tokens quota: the
hold's amount names the call. After a scenario (once no hold is left open, or the sweep had
its chance), each call's client outcome is set beside its hold and usage row:

- answered and never billed: the client read a whole 200 answer, and no usage row charged it;
- charged for what it did not get: a plain call whose client timed out or saw an error, but
  whose usage row charged it as a success;
- errors by status, the slowest call, and recovery: seconds from the end of the fault to the
  first of an unbroken run of successful calls;
- reconcile's findings and open holds after the scenario.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.private_services import (  # noqa: E402 - the repository's root is on the path first
    PYTHON,
    SluiceStack,
    missing_binaries,
    private_stack,
    stop_group,
)

MODEL = "bench-faults"
BASE_TOKENS = 1000  # a call's max_tokens is this plus its number
PROMPT = [{"role": "user", "content": "hi"}]

SETUP = """
import json, sys
from accounts.services import create_api_key, create_user
from billing import services as billing
from billing.models import ModelPrice
from relay.models import Channel
upstream, model = sys.argv[1:3]
ModelPrice.objects.update_or_create(
    model=model, defaults={"model_ratio": 1, "completion_ratio": 1}
)
user = create_user(username="bench", password="bench-password")
billing.grant(user=user, amount=10**12, note="bench credit")
keys = [create_api_key(user=user, name=f"bench {n}")[1] for n in range(20)]
channel = Channel(type="openai", name="mock", base_url=upstream, served_models=[model],
                  groups=["default"])
channel.set_key("upstream-test-key")
channel.save()
print(json.dumps({"keys": keys}))
"""

CALLS = """
import json, sys
from django.db import connection
first = int(sys.argv[1])
with connection.cursor() as cursor:
    cursor.execute(
        "SELECT h.amount, h.status, u.status, u.quota FROM billing_hold h "
        "LEFT JOIN billing_usagelog u ON u.hold_id = h.id WHERE h.id > %s",
        [first],
    )
    rows = cursor.fetchall()
    cursor.execute("SELECT coalesce(max(id), 0) FROM billing_hold")
    last = cursor.fetchone()[0]
print(json.dumps({"rows": rows, "last": last}))
"""

UPSTREAM = """
import sys, time
from tests.mock_upstream import MockUpstream
server = MockUpstream().start()
print(server.url, flush=True)
while True:
    time.sleep(3600)
"""


class Load:
    """Open-loop calls at ``rate`` per second, alternating plain and stream, each numbered."""

    def __init__(self, url: str, keys: list[str], rate: float, timeout: float):
        self.url, self.keys, self.rate, self.timeout = url, keys, rate, timeout
        self.calls: list[dict] = []
        self.number = 0

    async def run(self, seconds: float, started: float) -> None:
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            tasks = []
            began = next_at = time.monotonic()
            while time.monotonic() - began < seconds:
                self.number += 1
                tasks.append(asyncio.create_task(self.call(client, self.number, started)))
                next_at += 1 / self.rate  # by the clock: a slow loop does not lower the rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)

    async def call(self, client: httpx.AsyncClient, number: int, started: float) -> None:
        stream = number % 2 == 0
        body = {"model": MODEL, "messages": PROMPT, "max_tokens": BASE_TOKENS + number}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        record = {"n": number, "stream": stream, "at": time.monotonic() - started}
        began = time.monotonic()
        headers = {"authorization": f"Bearer {self.keys[number % len(self.keys)]}"}
        try:
            async with client.stream(
                "POST", f"{self.url}/v1/chat/completions", json=body, headers=headers
            ) as response:
                data = await response.aread()
                record["status"] = response.status_code
                if response.status_code == 200:
                    whole = data.rstrip().endswith(b"[DONE]") if stream else b'"choices"' in data
                    record["outcome"] = "ok" if whole else "cut"
                else:
                    record["outcome"] = str(response.status_code)
                    record["retry"] = response.headers.get("x-should-retry")
        except httpx.TimeoutException:
            record["outcome"] = "timeout"
        except httpx.HTTPError as problem:
            record["outcome"] = type(problem).__name__
        record["seconds"] = time.monotonic() - began
        self.calls.append(record)


def start_upstream() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [PYTHON, "-c", UPSTREAM],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def start_celery(stack: SluiceStack) -> subprocess.Popen:
    log = (stack.folder / "celery.log").open("ab")
    return subprocess.Popen(
        [str(Path(PYTHON).parent / "celery"), "-A", "config", "worker", "-B", "--pool", "solo",
         "--loglevel", "warning"],
        cwd=ROOT, env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


# name -> (seconds of load, seconds into it when the fault starts, the fault, client timeout)
def scenarios(stack: SluiceStack) -> dict:
    def pg_restart():
        stack.postgres.restart("fast")

    def pg_stop():
        stack.postgres.stop("fast")
        time.sleep(10)
        stack.postgres.start()

    def pg_freeze():
        stack.postgres.freeze()
        time.sleep(20)
        stack.postgres.thaw()

    def redis_restart():
        stack.redis.stop()
        time.sleep(5)
        stack.redis.start()

    def kill_worker():
        workers = [pid for pid in stack.worker_pids() if b"spawn_main" in cmdline(pid)]
        os.kill(workers[0], signal.SIGKILL)

    return {
        "pg-restart": (15, 5, pg_restart, 30),
        "pg-stop": (25, 5, pg_stop, 30),
        "pg-freeze": (35, 5, pg_freeze, 8),
        "redis-restart": (20, 5, redis_restart, 30),
        "kill-worker": (15, 5, kill_worker, 30),
    }


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def run_scenario(stack, keys, name, spec, rate: float, input_tokens: int) -> dict:
    seconds, fault_at, fault, timeout = spec
    first = json.loads(stack.python(CALLS, "0").strip().splitlines()[-1])["last"]
    load = Load(stack.url, keys, rate, timeout)
    started = time.monotonic()
    window = {}

    async def inject():
        await asyncio.sleep(fault_at)
        window["from"] = time.monotonic() - started
        await asyncio.to_thread(fault)
        window["to"] = time.monotonic() - started

    await asyncio.gather(load.run(seconds, started), inject())
    # Let settlements land and the sweep release what nobody will settle (HOLD_TTL_SECONDS).
    deadline = time.monotonic() + 60
    while True:
        books = stack.books()
        if books["open_holds"] == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    return judge(name, load.calls, holds_since(stack, first), books, window, input_tokens)


def calibrate(stack: SluiceStack, key: str) -> int:
    """The local input count of the benchmark's prompt: one call's hold minus its max_tokens."""
    first = json.loads(stack.python(CALLS, "0").strip().splitlines()[-1])["last"]
    answer = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": MODEL, "messages": PROMPT, "max_tokens": BASE_TOKENS},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    answer.raise_for_status()
    [(amount, *_)] = holds_since(stack, first)
    return amount - BASE_TOKENS


def holds_since(stack, first: int) -> list:
    return json.loads(stack.python(CALLS, str(first)).strip().splitlines()[-1])["rows"]


def judge(
    name: str, calls: list[dict], holds: list, books: dict, window: dict, input_tokens: int
) -> dict:
    # A hold's amount is the call's local input count (the same for every call) + max_tokens.
    by_number = {
        amount - input_tokens - BASE_TOKENS: (status, usage, quota)
        for amount, status, usage, quota in holds
    }
    unbilled, charged_not_received, cut_streams_billed = [], [], 0
    for call in calls:
        hold = by_number.get(call["n"])
        billed = hold is not None and hold[1] == "success" and (hold[2] or 0) > 0
        if call["outcome"] == "ok" and not billed:
            unbilled.append(call["n"])
        if call["outcome"] not in ("ok", "cut") and billed:
            if call["stream"]:
                cut_streams_billed += 1  # paid for what it was sent, by the rules
            else:
                charged_not_received.append(call["n"])
    outcomes = Counter(call["outcome"] for call in calls)
    errors = [call for call in calls if call["outcome"] != "ok"]
    recovered_at = max((call["at"] + call["seconds"] for call in errors), default=None)
    return {
        "scenario": name,
        "calls": len(calls),
        "outcomes": dict(outcomes),
        "answered_never_billed": len(unbilled),
        "charged_not_received": len(charged_not_received),
        "failed_streams_billed_for_what_was_sent": cut_streams_billed,
        "errors_without_retry_header": sum(
            1 for call in errors if call.get("status", 0) >= 500 and call.get("retry") != "true"
        ),
        "slowest_seconds": round(max((call["seconds"] for call in calls), default=0), 2),
        "slowest_started_at": round(max(calls, key=lambda call: call["seconds"])["at"], 2)
        if calls
        else None,
        "p99_seconds": round(
            sorted(call["seconds"] for call in calls)[int(len(calls) * 0.99)] if calls else 0, 2
        ),
        "fault": {key: round(value, 2) for key, value in window.items()},
        "last_failure_ended_at": round(recovered_at, 2) if recovered_at is not None else None,
        "recovery_seconds": round(max(0.0, recovered_at - window["to"]), 2)
        if recovered_at is not None and "to" in window
        else 0.0,
        "holds_matched": len(by_number),
        "reconcile_problems": len(books["problems"]),
        "open_holds": books["open_holds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--rate", type=float, default=100, help="calls per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "faults.json"))
    options = parser.parse_args()
    missing = missing_binaries()
    if missing:
        sys.exit(f"missing {missing}")
    upstream, upstream_url = start_upstream()
    results = []
    try:
        # No holds placed ahead (relay.ready_holds): each call is told apart by its own hold's
        # amount, so every call must place its own.
        extra = {
            "HOLD_TTL_SECONDS": "20",
            "HOLD_SWEEP_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            "RELAY_READY_HOLDS": "0",
        }
        with private_stack(extra_env=extra) as stack:
            made = stack.python(SETUP, upstream_url, MODEL).strip().splitlines()[-1]
            keys = json.loads(made)["keys"]
            stack.serve(workers=options.workers)
            celery = start_celery(stack)
            try:
                input_tokens = calibrate(stack, keys[0])
                for name, spec in scenarios(stack).items():
                    if options.only and name not in options.only:
                        continue
                    print(f"== {name}", flush=True)
                    result = asyncio.run(
                        run_scenario(stack, keys, name, spec, options.rate, input_tokens)
                    )
                    print(json.dumps(result), flush=True)
                    results.append(result)
            finally:
                stop_group(celery)
                log = stack.server_log()
                print(
                    f"server log: {log.count(' ERROR ')} ERROR lines, "
                    f"{log.count('unhandled error')} unhandled errors",
                    flush=True,
                )
    finally:
        stop_group(upstream)
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    Path(options.out).write_text(json.dumps(results, indent=1))
    print(table(results))


def table(results: list[dict]) -> str:
    lines = [
        "| scenario | calls | answered, never billed | charged, not received | errors "
        "| slowest | recovery | reconcile | open holds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        errors = ", ".join(f"{k} × {v}" for k, v in r["outcomes"].items() if k != "ok") or "0"
        lines.append(
            f"| {r['scenario']} | {r['calls']} | {r['answered_never_billed']} "
            f"| {r['charged_not_received']} | {errors} | {r['slowest_seconds']} s "
            f"| {r['recovery_seconds']} s | {r['reconcile_problems']} problems "
            f"| {r['open_holds']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
