"""A PostgreSQL and a Redis of a test's own, on free loopback ports, for injecting faults.

The machine's shared PostgreSQL and Redis serve every engineer's tests: a fault test must
never stop, restart or freeze them. These helpers start private ones from the binaries
Debian's packages install (``/usr/lib/postgresql/<version>/bin``, ``redis-server``) in
folders under /tmp, and give a test what it needs to hurt them: ``stop``, ``start``,
``restart``, ``freeze`` (SIGSTOP to every process of the service) and ``thaw`` (SIGCONT).
Every step is bounded in time, and ``close`` (or leaving the ``with`` block) kills what is
left and removes the folder.

``SluiceStack`` runs the app itself against them, the way production runs it (scripts/serve:
uvicorn workers; the database migrated with ``manage.py migrate``), and sets up a user, a key
and a channel to a given upstream through ``manage.py shell``.

PostgreSQL's ``initdb`` refuses to run as root: as root, the cluster belongs to the
``postgres`` user (``runuser``), which Debian's package creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(Path(sys.executable))
STEP_SECONDS = 30  # no single start, stop or command may take longer than this


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries folder, or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def redis_server() -> str | None:
    return shutil.which("redis-server")


def missing_binaries() -> str | None:
    """Why private services cannot be started here, or None when they can."""
    if postgres_bin() is None:
        return "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin, Debian's postgresql)"
    if redis_server() is None:
        return "redis-server (Debian's redis-server)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "a 'postgres' user to run PostgreSQL as (initdb refuses root)"
    return None


def _children(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started in a session of its own, with everything it started: TERM,
    then KILL after 15 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


class PrivatePostgres:
    """A PostgreSQL cluster of one test's own, listening on 127.0.0.1:``port``."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        assert self.bin is not None, missing_binaries()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="sluice-faults-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = STEP_SECONDS, check: bool = True) -> str:
        done = subprocess.run(
            [*self._as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            # A throwaway cluster: durability costs time and proves nothing here.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(STEP_SECONDS),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self.thaw()  # a frozen server cannot stop
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "20", "stop"
        )

    def restart(self, mode: str = "fast") -> float:
        """``pg_ctl restart -m mode``; the seconds it took."""
        began = time.monotonic()
        self.stop(mode)
        self.start()
        return time.monotonic() - began

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _pids(self) -> list[int]:
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [postmaster, *_children(postmaster)]

    def freeze(self) -> None:
        """Stop every process of the server (SIGSTOP): connections stay open, nothing answers."""
        _signal_all(self._pids(), signal.SIGSTOP)

    def thaw(self) -> None:
        _signal_all(self._pids(), signal.SIGCONT)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            str(self.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-Atc",
            sql,
        ).strip()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
            if self.running:
                self._run(
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop",
                    check=False, timeout=20,
                )  # fmt: skip
        _signal_all(self._pids(), signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PrivateRedis:
    """A redis-server of one test's own on 127.0.0.1:``port``, keeping nothing on disk (a
    restart starts it empty, as a Redis used only as a cache may well be)."""

    def __init__(self) -> None:
        binary = redis_server()
        assert binary is not None, missing_binaries()
        self.binary = binary
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="sluice-faults-redis-"))
        self.process: subprocess.Popen | None = None

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self._answers, STEP_SECONDS, "redis-server did not answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def restart(self) -> float:
        began = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - began

    def freeze(self) -> None:
        if self.process is not None:
            _signal_all([self.process.pid], signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            _signal_all([self.process.pid], signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# What SluiceStack.setup runs in the stack's own Django (manage.py shell): a user with credit,
# an unlimited key and an OpenAI channel to the given upstream; prints the key and ids as JSON.
SETUP_SCRIPT = """
import json, sys
from accounts.services import create_api_key, create_user
from billing import services as billing
from relay.models import Channel
upstream, upstream_key, models, credit = sys.argv[1:5]
models, credit = models.split(","), int(credit)
user = create_user(username="faults", password="faults-password")
billing.grant(user=user, amount=credit, note="fault test credit")
row, key = create_api_key(user=user, name="faults")
channel = Channel(type="openai", name="mock", base_url=upstream, served_models=models,
                  groups=["default"])
channel.set_key(upstream_key)
channel.save()
print(json.dumps({"key": key, "user_id": user.id, "key_id": row.id}))
"""

# Open holds and the books, from the stack's own Django: printed as JSON.
BOOKS_SCRIPT = """
import json
from billing.models import Hold, UsageLog
from billing.reconcile import reconcile
print(json.dumps({
    "problems": [str(problem) for problem in reconcile()],
    "open_holds": Hold.objects.filter(status=Hold.Status.OPEN).count(),
    "holds": {status: Hold.objects.filter(status=status).count() for status in Hold.Status.values},
    "usage_rows": UsageLog.objects.count(),
    "usage_by_status": {
        status: UsageLog.objects.filter(status=status).count()
        for status in UsageLog.objects.values_list("status", flat=True).distinct()
    },
}))
"""


class SluiceStack:
    """Sluice in production mode against a private PostgreSQL and Redis: scripts/serve with
    ``workers`` uvicorn processes (started and stopped by ``serve`` / ``stop_server``), and
    ``manage.py`` commands in the same environment."""

    def __init__(
        self,
        postgres: PrivatePostgres,
        redis: PrivateRedis,
        *,
        database: str = "sluice",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.postgres, self.redis = postgres, redis
        self.folder = Path(tempfile.mkdtemp(prefix="sluice-faults-app-"))
        self.port = free_port()
        self.database = database
        self.server: subprocess.Popen | None = None
        self.log = self.folder / "server.log"
        # Secrets of the stack's own (a throwaway run), shared by its server and commands.
        from config import shared_secrets

        self.env = {
            **{
                name: value
                for name, value in os.environ.items()
                if name not in {"DATABASE_URL", "REDIS_URL", "SLUICE_GENERATE_SECRETS"}
            },
            "DATABASE_URL": postgres.url(database),
            "REDIS_URL": redis.url(0),
            "SLUICE_DATA_DIR": str(self.folder),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            # The fault tests and bench/faults.py follow each call's own hold and count the holds
            # left open: no holds placed ahead (relay.ready_holds) unless a caller asks.
            "RELAY_READY_HOLDS": "0",
            **{name: shared_secrets.fresh(name) for name in shared_secrets.missing({})},
            **(extra_env or {}),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def python(self, script: str, *args: str) -> str:
        """Run ``script`` in the stack's Django (settings loaded) and return what it prints."""
        done = subprocess.run(
            [PYTHON, "-c", "import django; django.setup()\n" + script, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"script failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def migrate(self) -> None:
        self.postgres.psql(f"CREATE DATABASE {self.database}")
        self.manage("migrate", "--no-input", timeout=300)

    def setup(self, *, upstream: str, upstream_key: str, models: str, credit: int) -> dict:
        """A user with ``credit``, their key, a channel to ``upstream``: {key, user_id, key_id}."""
        out = self.python(SETUP_SCRIPT, upstream, upstream_key, models, str(credit))
        return json.loads(out.strip().splitlines()[-1])

    def books(self) -> dict:
        """{problems: reconcile's findings, open_holds, holds by status, usage_rows, ...}."""
        return json.loads(self.python(BOOKS_SCRIPT).strip().splitlines()[-1])

    def serve(self, workers: int = 1) -> None:
        assert self.server is None or self.server.poll() is not None, "already serving"
        with self.log.open("ab") as log:
            self.server = subprocess.Popen(
                [str(ROOT / "scripts" / "serve")],
                cwd=ROOT,
                env={**self.env, "HOST": "127.0.0.1", "PORT": str(self.port),
                     "WORKERS": str(workers)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(self._answers, STEP_SECONDS, "the server did not come up")

    def _answers(self) -> bool:
        assert self.server is not None
        if self.server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{self.server_log()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                return b" 200 " in connection.recv(64)
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the server), when it runs several."""
        assert self.server is not None
        return _children(self.server.pid)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop_server(self) -> None:
        if self.server is not None:
            stop_group(self.server)

    def close(self) -> None:
        self.stop_server()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def private_stack(**stack_options) -> Iterator[SluiceStack]:
    """A private PostgreSQL and Redis with a migrated Sluice database (not yet serving)."""
    with PrivatePostgres() as postgres, PrivateRedis() as redis:
        stack = SluiceStack(postgres, redis, **stack_options)
        try:
            stack.migrate()
            yield stack
        finally:
            stack.close()
