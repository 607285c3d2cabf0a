#!/usr/bin/env python3
"""Where a Sluice worker's time goes, from py-spy ``--format raw`` files (collapsed stacks).

    python bench/profile_phases.py --rate 1000 --requests 1039 bench/results/*-profile-*.txt

Each sample is put in two buckets: the relay step it belongs to (key lookup, price, hold,
settlement, upstream call, ...: see STEPS) and the library doing the work (the innermost
matching frame: the Redis client, psycopg, the ORM, the HTTP client, thread hops, ...). With
the sampling rate and the number of requests answered meanwhile, shares become milliseconds
per request. py-spy samples threads that are not idle, so time a thread spends
blocked in a database or Redis round trip shows up too: this is wall time per thread, summed
over threads, not CPU time (``--gil`` profiles are CPU time of Python code).
"""

import argparse
import collections
import sys

# Looked for first, anywhere in the stack: handing work to a thread and back (Django gives each
# request its own executor and thread; every sync_to_async call is a hop).
HOPS = (
    "ThreadSensitiveContext",
    "ThreadPoolExecutor.submit",
    "Thread.start (threading.py",
    "_chain_future",
    "Future.set_result",
    "Semaphore.release",
    "_restore_context",
)
# The first step (in this order) with a frame anywhere in the stack wins: settlement runs inside
# the stream's generator, the cache inside price_for, everything inside relay.http.serve.
STEPS = [
    # billing.writer's thread: holds placed, settled and released for many calls at once.
    ("ledger writer (holds, settlements, usage rows)", ("_work (billing/writer.py",)),
    ("price", ("price_for (billing/pricing.py",)),
    ("group ratio", ("group_ratio_for (billing/pricing.py",)),
    (
        "token count",
        ("_count_input (relay/proxy.py", "count_messages (relay/tokens.py", "count_text"),
    ),
    (
        "key lookup",
        (
            "authenticate (relay/auth.py",
            "key_info (relay/auth.py",
            "find_key (relay/auth.py",
            "_load (relay/auth.py",
        ),
    ),
    ("channels", ("enabled_channels (relay/routing.py", "channels_for (relay/routing.py")),
    # cache.aget/aset run RedisCache.get/set in a worker thread, where the caller's frames are
    # not on the stack: the key and channels-version lookups.
    ("cache.aget/aset (key, channels version)", ("RedisCache.",)),
    (
        "upstream call + answer",
        (
            "_forward (relay/proxy.py",
            "_stream (relay/proxy.py",
            "_finish_plain (relay/proxy.py",
            # aiohttp's own tasks: writing the request, reading the answer
            "ClientRequest.write_bytes (aiohttp",
            "ResponseHandler.data_received (aiohttp",
        ),
    ),
    ("request body / admit (rest)", ("_admit (relay/proxy.py", "_parse_body (relay/proxy.py")),
    ("relay front (relay/http.py)", ("serve (relay/http.py", "stream (relay/http.py")),
    ("uvicorn (HTTP server)", ("uvicorn/protocols/",)),
]
# Innermost match wins: the library doing the work.
LIBRARIES = [
    ("Redis client (connect, commands)", ("redis/", "django/core/cache/backends/redis.py")),
    ("psycopg (PostgreSQL round trips)", ("psycopg/", "psycopg_pool/")),
    ("Django ORM (building SQL, models)", ("django/db/",)),
    ("importlib.metadata", ("importlib/metadata",)),
    ("upstream HTTP client (httpx, aiohttp)", ("httpx/", "httpx_aiohttp/", "aiohttp/")),
    ("tiktoken", ("tiktoken/",)),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    (
        "thread hops (asgiref, executor, threads)",
        ("asgiref/", "concurrent/futures/", "threading.py"),
    ),
    ("uvicorn", ("uvicorn/",)),
    ("Django request/response", ("django/",)),
    ("Sluice code", ("relay/", "billing/", "accounts/", "config/")),
]
# Leaves that are a thread waiting for work, not doing any.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)", "Condition.wait (threading.py")
# The event loop's own frame as a leaf: uvloop waiting in epoll, or its C code doing socket I/O;
# py-spy cannot tell these apart, so they are counted apart.
LOOP_LEAVES = ("Runner.run (asyncio/runners.py", "run_forever (asyncio/base_events.py")


def classify_step(frames) -> str:
    if any(hop in frame for frame in frames for hop in HOPS):
        return "thread hops (per-request thread, hand-overs)"
    for name, needles in STEPS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return "other"


def classify(frames, table, innermost: bool):
    if table is STEPS:
        return classify_step(frames)
    order = reversed(frames) if innermost else frames
    for frame in order:
        for name, needles in table:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarize(paths, rate: float, requests: int | None):
    steps = collections.Counter()
    libraries = collections.Counter()
    total = idle = loop = 0
    for path in paths:
        with open(path) as handle:
            for line in handle:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack or not count.isdigit():
                    continue  # a frame name torn by a non-blocking sample spans lines
                count = int(count)
                frames = stack.split(";")
                if frames[-1].startswith(IDLE_LEAVES):
                    idle += count
                    continue
                if frames[-1].startswith(LOOP_LEAVES):
                    loop += count
                    continue
                total += count
                steps[classify(frames, STEPS, innermost=False)] += count
                libraries[classify(frames, LIBRARIES, innermost=True)] += count
    return total, idle, loop, steps, libraries


def report(paths, rate: float, requests: int | None, title: str = "") -> str:
    total, idle, loop, steps, libraries = summarize(paths, rate, requests)
    lines = [title] if title else []
    per_request = (1000 / rate / requests) if requests else None
    lines.append(
        f"{total} busy samples at {rate:g} Hz"
        + (f", {requests} requests: {total * per_request:.2f} ms per request" if requests else "")
        + f" (left out: {idle} idle-thread samples, {loop} in the event loop's C code or"
        + (f" idle in epoll, {loop * per_request:.2f} ms per request)" if requests else " idle)")
    )
    for heading, counter in (("by relay step", steps), ("by library", libraries)):
        lines.append(f"  {heading}:")
        for name, count in counter.most_common():
            ms = f"{count * per_request:6.2f} ms/req" if per_request else ""
            lines.append(f"    {count / max(total, 1) * 100:5.1f}%  {ms}  {name}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rate", type=float, default=100, help="py-spy --rate used")
    parser.add_argument("--requests", type=int, help="requests answered during the profile")
    args = parser.parse_args()
    print(report(args.files, args.rate, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
