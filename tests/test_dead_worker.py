"""A worker killed mid-call cannot settle its hold: the hold's expiry and the beat task can.

Everything here is the real thing in its own process: the relay served by ``scripts/serve``
(production's uvicorn command line, killed with SIGKILL, so no ``finally`` and no shutdown hook
runs), and a Celery worker with its embedded beat on the filesystem broker, both on the test
database.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.conf import settings
from django.db import connection

from accounts.models import User
from billing.models import Hold, UsageLog
from tests.conftest import ALICE_CREDIT, eventually, free_port

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_TTL_SECONDS = 2


def test_database_url() -> str:
    """The test database as a DATABASE_URL, for processes started by the test."""
    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    if connection.vendor == "postgresql":
        credentials = quote(database["USER"] or "", safe="")
        if database["PASSWORD"]:
            credentials += ":" + quote(database["PASSWORD"], safe="")
        host = database["HOST"] or "127.0.0.1"
        return f"postgresql://{credentials}@{host}:{database['PORT'] or 5432}/{database['NAME']}"
    raise AssertionError(f"no DATABASE_URL for a {connection.vendor} test database")


test_database_url.__test__ = False  # a helper, not a test


class Process:
    """A Sluice process on the test database, its output kept in a log file."""

    def __init__(self, name: str, command: list[str], *, data_dir: Path, **env: str):
        self.log_path = data_dir / f"{name}.log"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": test_database_url(),
            # Its own data folder (broker queue, beat schedule), the test process's secrets:
            # the keys and channels the fixtures made must decrypt and look up the same.
            "SLUICE_DATA_DIR": str(data_dir),
            "SECRET_KEY": settings.SECRET_KEY,
            "KEY_LOOKUP_SECRET": settings.KEY_LOOKUP_SECRET,
            "KEY_ENCRYPTION_KEYS": ",".join(settings.KEY_ENCRYPTION_KEYS),
            "HOLD_TTL_SECONDS": str(HOLD_TTL_SECONDS),
            # The test follows one call's hold: no holds placed ahead (relay.ready_holds).
            "RELAY_READY_HOLDS": "0",
            **env,
        }
        with open(self.log_path, "wb") as log:
            # A session of its own, so that killing its group also ends the beat it forks.
            self.popen = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and whatever it started; nothing gets to clean up."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def serving(url: str, relay: Process) -> bool:
    assert relay.alive(), f"the relay server exited:\n{relay.log()}"
    try:
        httpx.get(f"{url}/v1/models", timeout=1)
    except httpx.TransportError:
        return False
    return True


def open_hold() -> Hold | None:
    return Hold.objects.filter(status=Hold.Status.OPEN).first()


def test_a_hold_left_by_a_killed_worker_is_released_by_the_beat_task(
    alice, alice_key, openai_channel, mock_upstream, books_balance, tmp_path
):
    mock_upstream.script({"chunks": 1000, "chunk_delay": 0.05})  # ~50 s: outlives the worker
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes = []
    try:
        relay = Process(
            "relay",
            [str(settings.BASE_DIR / "scripts/serve")],
            data_dir=tmp_path,
            HOST="127.0.0.1",
            PORT=str(port),
            WORKERS="1",
        )
        processes.append(relay)
        assert eventually(lambda: serving(url, relay), timeout=30), relay.log()

        with httpx.Client(timeout=10) as client:
            with client.stream(
                "POST",
                f"{url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {alice_key}"},
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
                | {"stream": True},
            ) as response:
                assert response.status_code == 200, relay.log()
                # The answer has begun: the call is in flight. (The iterator is kept: dropping
                # it would close the connection, and this client must not leave.)
                answer = response.iter_raw()
                assert next(answer)
                hold = eventually(open_hold, timeout=10)
                assert hold, "no open hold while the call is in flight"
                relay.kill()

        # The worker died with the call: nothing settled or released the hold.
        hold.refresh_from_db()
        assert hold.status == Hold.Status.OPEN
        assert (hold.expires_at - hold.created_at).total_seconds() <= HOLD_TTL_SECONDS + 1
        alice.refresh_from_db()
        assert alice.quota == ALICE_CREDIT - hold.amount
        assert not UsageLog.objects.exists()
        books_balance()
        [event] = mock_upstream.wait_for_events(1, timeout=10)
        assert not event["completed"]

        worker = Process(
            "celery",
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-B", "--pool", "solo"]
            + ["--loglevel", "info"],
            data_dir=tmp_path,
            HOLD_SWEEP_SECONDS="1",
        )
        processes.append(worker)

        def released() -> bool:
            assert worker.alive(), f"the Celery worker exited:\n{worker.log()}"
            hold.refresh_from_db()
            return hold.status != Hold.Status.OPEN

        assert eventually(released, timeout=30), f"the hold is still open:\n{worker.log()}"
        assert hold.status == Hold.Status.RELEASED
        assert User.objects.get(id=alice.id).quota == ALICE_CREDIT
        assert not UsageLog.objects.exists()
        books_balance()
    finally:
        for process in processes:
            process.kill()
