"""Production mode, started as README describes (scripts/serve): PostgreSQL, Redis, Celery,
several workers."""

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.models import ApiKey
from billing import services as billing
from billing.models import Hold, UsageLog
from tests.conftest import eventually, flush_test_redis, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def database_url() -> str:
    s = connection.settings_dict
    user, host, port = s["USER"] or "postgres", s["HOST"] or "127.0.0.1", s["PORT"] or 5432
    return f"postgresql://{user}@{host}:{port}/{s['NAME']}"


@pytest.fixture
def production_env(redis_url):
    """The stack's environment: the test's PostgreSQL database and the tests' own Redis
    database (``TEST_REDIS_URL``), emptied first so no cache entry of an earlier run leaks in."""
    flush_test_redis(redis_url)
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        REDIS_URL=redis_url,
        # As README asks of every node: the same three secrets, from the environment (the
        # test process's, so the keys and channels the fixtures made work on the stack).
        SECRET_KEY=settings.SECRET_KEY,
        KEY_LOOKUP_SECRET=settings.KEY_LOOKUP_SECRET,
        KEY_ENCRYPTION_KEYS=",".join(settings.KEY_ENCRYPTION_KEYS),
        HOLD_SWEEP_SECONDS="1",
        DATABASE_POOL_MAX="4",
    )
    return env


def start(args, env) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.stderr.read().decode(errors="replace")[-3000:]


def test_the_production_stack_relays_bills_and_sweeps_holds(
    production_env, alice, alice_key, openai_channel, mock_upstream, books_balance
):
    port = free_port()
    server = start(
        [str(ROOT / "scripts/serve")],
        dict(production_env, HOST="127.0.0.1", PORT=str(port), WORKERS="2"),
    )
    worker = start(
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-B",
            "--pool",
            "solo",
            "--loglevel",
            "warning",
        ],
        production_env,
    )
    try:

        def up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
            except httpx.HTTPError:
                return False

        assert eventually(up, timeout=30), "the server did not come up"

        # A hold left open by a worker that died long ago: beat's sweep must release it.
        key = ApiKey.objects.find(alice_key).get()
        orphan = billing.reserve_quota(
            user_id=alice.id, api_key_id=key.id, unlimited_key=True, amount=777
        )
        Hold.objects.filter(id=orphan.id).update(expires_at=timezone.now() - timedelta(1))

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=alice_key, max_retries=0
        )
        for _ in range(6):
            answer = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == "hello hello hello "
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage.completion_tokens == 3

        assert eventually(lambda: UsageLog.objects.count() == 7), UsageLog.objects.count()
        assert eventually(
            lambda: Hold.objects.get(id=orphan.id).status == Hold.Status.RELEASED, timeout=30
        ), "beat did not release the expired hold"
        books_balance()
    finally:
        server_log = stop(server)
        worker_log = stop(worker)
    assert "Traceback" not in server_log, server_log
    assert "Traceback" not in worker_log, worker_log
