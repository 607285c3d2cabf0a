#!/usr/bin/env python3
"""The floor under Sluice's added latency on this machine: a relay that only relays.

    .venv/bin/python bench/floor.py [--rounds 3] [--seconds 4]

Serves a bare ASGI pass-through with the parts Sluice's /v1 path is built on (uvicorn with
uvloop and httptools, httpx over the aiohttp transport, one worker) and none of its work (no
key, no parsing, no hold, no settlement), in front of the nginx mock upstream, and measures at
one connection, round after round, the upstream directly and through the pass-through, for
plain and streamed calls, as bench/latency.py does for Sluice. What the pass-through adds is
what any relay on this stack pays on this machine before it does anything of its own: read
Sluice's added latency against it.
"""

import argparse
import os
import tempfile
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport
from measure import added_p50, one_connection_rounds
from processes import BENCH, SLUICE_VENV, Processes, free_port, log, wait_for_port
from targets import start_upstream
from workload import MODELS

UPSTREAM_ENV = "FLOOR_UPSTREAM"


class PassThrough:
    """The ASGI app: each request's method, path and body to the upstream, its answer back
    chunk by chunk (a stream's events as they come)."""

    def __init__(self) -> None:
        self.upstream = os.environ.get(UPSTREAM_ENV, "")
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.client is None:
            self.client = httpx.AsyncClient(transport=AiohttpTransport())
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = self.client.build_request(
            scope["method"],
            self.upstream + scope["path"],
            content=body,
            headers={"content-type": "application/json"},
        )
        response = await self.client.send(request, stream=True)
        kind = response.headers.get("content-type", "application/json").encode()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", kind)],
            }
        )
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await response.aclose()
        await send({"type": "http.response.body", "body": b""})


app = PassThrough()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sluice-floor-"))
    logs = workdir / "logs"
    logs.mkdir()
    procs = Processes()
    try:
        _, upstream_url = start_upstream("nginx", procs, workdir, logs)
        port = free_port()
        log_path = logs / "floor.log"
        server = procs.start(
            "pass-through",
            [
                str(SLUICE_VENV / "bin/uvicorn"),
                "floor:app",
                "--app-dir",
                str(BENCH),
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
            ],
            log_path=log_path,
            env=dict(os.environ, **{UPSTREAM_ENV: upstream_url}),
        )
        wait_for_port(port, server, "the pass-through", log_path, timeout=30)
        bases = {"upstream": upstream_url, "pass-through": f"http://127.0.0.1:{port}"}
        latencies = one_connection_rounds(
            {
                name: {mode: f"{base}/{mode}/v1/chat/completions" for mode in MODELS}
                for name, base in bases.items()
            },
            {name: "-" for name in bases},
            workdir,
            rounds=options.rounds,
            seconds=options.seconds,
        )
        for mode in MODELS:
            upstream_p50, rounds, added = added_p50(latencies, "pass-through", mode)
            log(
                f"{mode}: upstream p50 {upstream_p50:.3f} ms, pass-through p50 by round "
                f"{[round(p, 2) for p in rounds]} ms, added p50 (median) {added:.2f} ms"
            )
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
