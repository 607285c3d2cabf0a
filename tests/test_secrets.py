"""The three secrets every node shares: a node on a server database never makes up its own.

Each case starts a real process with the environment an operator would give it; none needs
the database to answer (settings refuse before any connection is made).
"""

import io
import os
import subprocess
import sys

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command

from config import shared_secrets

# A server database nothing listens on: the settings must decide before connecting.
SERVER_DATABASE = "postgresql://sluice@127.0.0.1:9/sluice"


def manage(*args: str, data_dir, **environment: str) -> subprocess.CompletedProcess:
    """``manage.py args`` with none of the secrets in its environment, on SQLite unless
    ``environment`` names a DATABASE_URL."""
    chosen_here = {*shared_secrets.NAMES, "SLUICE_GENERATE_SECRETS", "DATABASE_URL", "REDIS_URL"}
    inherited = {name: value for name, value in os.environ.items() if name not in chosen_here}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={
            **inherited,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SLUICE_DATA_DIR": str(data_dir),
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def secret_files(data_dir) -> list[str]:
    """The secrets kept in ``data_dir`` (embedded mode's, or a node that opted in)."""
    return [name for name in shared_secrets.NAMES if (data_dir / f".{name.lower()}").exists()]


def parse(lines: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines.splitlines() if line)


def test_a_node_on_a_server_database_without_its_secrets_refuses_to_start(tmp_path):
    done = manage(
        "check",
        data_dir=tmp_path,
        DATABASE_URL=SERVER_DATABASE,
        KEY_LOOKUP_SECRET="set-on-this-node-only",
    )

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "SECRET_KEY, KEY_ENCRYPTION_KEYS are not set" in done.stderr
    assert "KEY_LOOKUP_SECRET," not in done.stderr  # the one that is set is not named
    assert "manage.py generate_secrets" in done.stderr
    assert "set-on-this-node-only" not in done.stderr
    assert secret_files(tmp_path) == []


def test_generate_secrets_runs_without_them_and_its_lines_start_the_node(tmp_path):
    generated = manage("generate_secrets", data_dir=tmp_path, DATABASE_URL=SERVER_DATABASE)
    assert generated.returncode == 0, generated.stderr
    values = parse(generated.stdout)
    assert list(values) == list(shared_secrets.NAMES)
    Fernet(values["KEY_ENCRYPTION_KEYS"].encode())  # a usable encryption key
    assert secret_files(tmp_path) == []  # printed, never written

    started = manage("check", data_dir=tmp_path, DATABASE_URL=SERVER_DATABASE, **values)

    assert started.returncode == 0, started.stderr
    assert secret_files(tmp_path) == []


def test_a_single_node_may_opt_in_to_secrets_kept_in_its_data_folder(tmp_path):
    done = manage(
        "check", data_dir=tmp_path, DATABASE_URL=SERVER_DATABASE, SLUICE_GENERATE_SECRETS="1"
    )

    assert done.returncode == 0, done.stderr
    assert secret_files(tmp_path) == list(shared_secrets.NAMES)


def test_an_embedded_site_still_makes_its_secrets_once_in_its_data_folder(tmp_path):
    first = manage("check", data_dir=tmp_path)
    kept = (tmp_path / ".key_lookup_secret").read_text()
    second = manage("check", data_dir=tmp_path)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (tmp_path / ".key_lookup_secret").read_text() == kept


def test_generate_secrets_prints_fresh_values_every_time():
    runs = []
    for _ in range(2):
        out = io.StringIO()
        call_command("generate_secrets", stdout=out, stderr=io.StringIO())
        runs.append(parse(out.getvalue()))

    assert list(runs[0]) == ["SECRET_KEY", "KEY_LOOKUP_SECRET", "KEY_ENCRYPTION_KEYS"]
    for name in shared_secrets.NAMES:
        assert runs[0][name] != runs[1][name]
        assert runs[0][name] not in (settings.SECRET_KEY, settings.KEY_LOOKUP_SECRET)
        # Pasted into a shell or an environment file as they are: no quoting needed.
        assert all(character.isalnum() or character in "-_=" for character in runs[0][name])
