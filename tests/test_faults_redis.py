"""Redis restarted, or stopped for seconds, under a stream of calls: not one call fails.

Redis is only a cache for the relay (config.cache): while it is away, keys, prices and group
ratios come from each process's copies and the database; the operator sees it in the log and
in /readyz (200, "degraded"); redeeming codes stays closed (billing.redemption counts wrong
guesses there and refuses every attempt it cannot count).

The Redis and PostgreSQL are this module's own (tests/private_services.py); the relay runs
as production does (scripts/serve, two uvicorn workers).
"""

import json
import re
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import need_service
from tests.mock_upstream import DEFAULT_KEY, MockUpstream
from tests.private_services import missing_binaries, private_stack

pytestmark = [pytest.mark.postgres]

HELLO = [{"role": "user", "content": "hi"}]

REDEEM_SCRIPT = """
from accounts.models import User
from billing.redemption import RedemptionRefused, redeem_code
try:
    redeem_code(user=User.objects.get(username="faults"), code="SLC-" + "A" * 26, ip="10.0.0.1")
except RedemptionRefused as refusal:
    print(refusal.reason)
"""


@pytest.fixture(scope="module")
def stack():
    reason = missing_binaries()
    if reason:
        need_service("private PostgreSQL and Redis", f"missing {reason}")
    upstream = MockUpstream().start()
    try:
        with private_stack() as stack:
            stack.account = stack.setup(
                upstream=upstream.url, upstream_key=DEFAULT_KEY, models="gpt-4o", credit=50_000_000
            )
            stack.serve(workers=2)
            yield stack
            assert "unhandled error" not in stack.server_log(), stack.server_log()[-4000:]
    finally:
        upstream.stop()


@pytest.fixture
def running(stack):
    yield stack
    if stack.redis.process is None or stack.redis.process.poll() is not None:
        stack.redis.start()
    stack.redis.thaw()


def call_steadily(stack, stop: threading.Event, failures: list, served: list, stream: bool):
    client = openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.account["key"], max_retries=0, timeout=20
    )
    while not stop.is_set():
        try:
            if stream:
                chunks = list(
                    client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
                )
                assert chunks[-1].choices[0].finish_reason == "stop"
            else:
                answer = client.chat.completions.create(model="gpt-4o", messages=HELLO)
                assert answer.choices[0].message.content
            served.append(time.monotonic())
        except Exception as problem:  # noqa: BLE001 - every failure is what the test counts
            failures.append(repr(problem))


def under_calls(stack, fault) -> tuple[list, list]:
    stop, failures, served = threading.Event(), [], []
    threads = [
        threading.Thread(target=call_steadily, args=(stack, stop, failures, served, n % 2 == 1))
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        fault()
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return failures, served


def test_a_redis_restart_under_calls_fails_no_call(running):
    stack = running
    failures, served = under_calls(stack, stack.redis.restart)
    assert failures == []
    assert len(served) > 20
    books = stack.books()
    assert books["problems"] == [] and books["open_holds"] == 0, books


def test_redis_stopped_for_seconds_under_calls_fails_no_call_and_the_operator_sees_it(running):
    stack = running
    seen = {}

    def outage():
        stack.redis.stop()
        time.sleep(1)
        ready = httpx.get(f"{stack.url}/readyz", timeout=10)
        seen["readyz"] = (ready.status_code, ready.json())
        seen["redeem"] = stack.python(REDEEM_SCRIPT).strip()
        time.sleep(1)
        stack.redis.start()

    failures, served = under_calls(stack, outage)

    assert failures == []
    assert len(served) > 20
    status, body = seen["readyz"]
    assert status == 200, body
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["cache.shared"] == "failed"
    # Redemption guesses stay closed while their counter cannot be read.
    assert seen["redeem"] == "too_many_attempts"
    log = stack.server_log()
    warnings = log.count("shared cache unreachable")
    assert 1 <= warnings <= 4, log[-3000:]  # rate-limited: per worker, not per call
    assert "shared cache answers again" in log
    assert httpx.get(f"{stack.url}/readyz", timeout=10).json()["status"] == "ok"
    books = stack.books()
    assert books["problems"] == [] and books["open_holds"] == 0, json.dumps(books)


def test_a_frozen_redis_slows_no_call_past_its_timeout(running):
    stack = running
    client = openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.account["key"], max_retries=0, timeout=20
    )
    stack.redis.freeze()
    try:
        slowest = 0.0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            began = time.monotonic()
            client.chat.completions.create(model="gpt-4o", messages=HELLO)
            slowest = max(slowest, time.monotonic() - began)
    finally:
        stack.redis.thaw()
    # One socket timeout (REDIS_TIMEOUT, 0.5 s) per worker at most, then the cache is left
    # alone for CACHE_RETRY_SECONDS.
    assert slowest < 2.0


LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ "
    r"\[(-|req_[0-9a-f]+)\] "
)


def test_every_server_log_line_names_its_time_level_logger_and_request(running):
    stack = running
    stack.redis.stop()
    time.sleep(1.2)  # the workers' copies of the shared versions expire: the call reads Redis
    try:
        answer = httpx.post(
            f"{stack.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {stack.account['key']}"},
            json={"model": "gpt-4o", "messages": HELLO},
            timeout=10,
        )
        assert answer.status_code == 200
    finally:
        stack.redis.start()
    lines = [line for line in stack.server_log().splitlines() if line.strip()]
    # uvicorn's supervisor and workers, Django's and the relay's loggers: one format. Only a
    # traceback's own lines (after the line that logged it) may look otherwise.
    records = [line for line in lines if LINE.match(line)]
    assert LINE.match(lines[0]) and "uvicorn.error" in lines[0], lines[0]
    in_traceback, strays = False, []
    for line in lines:
        if LINE.match(line):
            in_traceback = False
        elif line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif not in_traceback:
            strays.append(line)
    assert strays == []
    assert any(" uvicorn.error [-] " in line for line in records)
    # A line written while a call was served carries that call's id.
    warned = [line for line in records if "shared cache unreachable" in line]
    assert warned and all("[req_" in line for line in warned), warned
