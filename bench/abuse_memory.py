"""Memory of a Sluice worker under abuse: unique bogus model names, stalled bodies, slow headers.

Starts Sluice as bench/run.py does (production mode, PostgreSQL, Redis, one uvicorn worker with
the guarded protocol), then, watching the worker's resident memory (RSS):

1. 1,000 calls, each with a unique bogus model name of 100 KB inside a 1 MB JSON body
   (refused with a 400: names are capped at 256 characters);
2. 1,000 calls with unique short bogus model names (404; unpriced names are not remembered);
3. 100 connections that declare a 15 MB JSON body with a valid key and send 1 KB of it, then
   stall, and 100 that do the same without a key;
4. 300 connections that send half their headers and stall (slowloris).

Prints RSS before, after each phase, and at the end, and whether the stalled connections
were answered or closed. Everything runs on 127.0.0.1 and stops by itself.

    .venv/bin/python bench/abuse_memory.py
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import Processes, child_pids
from sluice import setup_sluice, start_sluice
from targets import start_upstream
from workload import post, request_body


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pid(leader: int) -> int:
    """The uvicorn worker (the leader's child), or the leader itself with one process."""
    children = child_pids(leader)
    return children[0] if children else leader


def request_head(path: str, length: int, key: str | None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def bogus_models(url: str, key: str, count: int, name_bytes: int) -> dict:
    import httpx

    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(timeout=60) as client:
        for index in range(count):
            name = f"bogus-{index}-" + "x" * name_bytes
            body = {"model": name, "messages": [{"role": "user", "content": "y" * 900_000}]}
            if name_bytes < 1000:
                body["messages"][0]["content"] = "hi"
            response = await client.post(
                f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return statuses


async def stalled_bodies(port: int, key: str | None, count: int, rss) -> tuple[float, dict]:
    """Open ``count`` stalled uploads at once; the peak RSS while they stall, and how each
    ended (answered with a status, or closed)."""
    head = request_head("/v1/chat/completions", 15 * 1024 * 1024, key)
    peak = 0.0

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + b'{"model": "bench-plain", "messages": [' + b" " * 1000)
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(200), timeout=75)
        except TimeoutError:
            answer = b"(still open)"
        writer.close()
        return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)"

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    while not all(task.done() for task in tasks):
        peak = max(peak, rss())
        await asyncio.sleep(0.5)
    outcomes: dict[str, int] = {}
    for task in tasks:
        outcomes[task.result()] = outcomes.get(task.result(), 0) + 1
    return peak, outcomes


async def slowloris(port: int, count: int, wait: float) -> dict:
    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(200), timeout=wait)
            return "closed" if not data else "answered"
        except TimeoutError:
            return "still open"
        finally:
            writer.close()

    results = await asyncio.gather(*[one() for _ in range(count)])
    return {outcome: results.count(outcome) for outcome in set(results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/sluice_bench"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    args.keys = 1
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="sluice-abuse-"))
    logs = workdir / "logs"
    logs.mkdir()
    try:
        _, upstream_url = start_upstream("aiohttp", procs, workdir, logs)
        env, keys = setup_sluice(args, workdir, upstream_url)
        process, url = start_sluice(procs, env, logs, workers=1)
        port = int(url.rsplit(":", 1)[1])
        key = keys["single"]
        time.sleep(1)
        pid = worker_pid(process.pid)
        post(f"{url}/v1/chat/completions", request_body("plain"), key)  # warm up
        print(f"worker RSS at rest: {rss_mb(pid):.0f} MB")

        statuses = asyncio.run(bogus_models(url, key, 1000, 100_000))
        print(
            f"1,000 unique 100 KB model names (1 MB bodies): {statuses}; RSS {rss_mb(pid):.0f} MB"
        )
        statuses = asyncio.run(bogus_models(url, key, 1000, 10))
        print(f"1,000 unique short bogus model names: {statuses}; RSS {rss_mb(pid):.0f} MB")

        for who, presented in (("a valid key", key), ("no key", None)):
            peak, outcomes = asyncio.run(stalled_bodies(port, presented, 100, lambda: rss_mb(pid)))
            print(
                f"100 stalled 15 MB uploads with {who}: peak RSS {peak:.0f} MB, "
                f"ended as {outcomes}; RSS after {rss_mb(pid):.0f} MB"
            )
        outcomes = asyncio.run(slowloris(port, 300, wait=30))
        print(f"300 half-sent header sets, after 30 s: {outcomes}; RSS {rss_mb(pid):.0f} MB")
        print(f"worker RSS at the end: {rss_mb(pid):.0f} MB")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
