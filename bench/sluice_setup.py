"""The benchmark's people, channels, prices and keys, made in Sluice's database.

Run by bench/sluice.py in Sluice's environment (DATABASE_URL, REDIS_URL, SLUICE_DATA_DIR of the
run) after ``migrate``, with a JSON spec on stdin::

    {"user": "bench", "credit": 10**12, "models": {"plain": "bench-plain", ...},
     "upstream": "http://127.0.0.1:PORT", "upstream_key": "...", "keys": 200}

It goes through the project's management commands, as an operator would: a user with the
credit, one channel per upstream path (``{upstream}/{mode}/v1``), both models priced (ratio 1,
completion ratio 2), one key for the single-key case, ``keys`` more keys of that user, and as
many users with one key each (so calls share no balance row). Prints one line,
``SETUP_RESULT {"single": key, "many": [keys], "users": [keys]}``.
"""

import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_setup() -> None:
    """Import the project as manage.py does (the project root first on the path, not bench/)."""
    sys.path[0] = str(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def command(*args, **options) -> str:
    """A management command's output."""
    from django.core.management import call_command

    out = io.StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue().strip()


def main() -> None:
    django_setup()
    from accounts.models import User
    from accounts.services import create_api_key

    spec = json.loads(sys.stdin.read())
    command("create_user", spec["user"])
    command("grant", spec["user"], spec["credit"], note="benchmark credit")
    for mode, model in spec["models"].items():
        command("set_price", model, ratio="1", completion_ratio="2")
        command(
            "add_channel",
            name=model,
            base_url=f"{spec['upstream']}/{mode}/v1",  # as an OpenAI SDK would be given it
            key=spec["upstream_key"],
            models=model,
        )
    single = command("create_key", spec["user"], name="single")
    user = User.objects.get(username=spec["user"])
    many = [create_api_key(user=user, name=f"bench-{i}")[1] for i in range(spec["keys"])]
    users = []
    for i in range(spec["keys"]):
        name = f"{spec['user']}-{i}"
        command("create_user", name)
        command("grant", name, spec["credit"] // 1000, note="benchmark credit")
        users.append(create_api_key(user=User.objects.get(username=name), name="bench")[1])
    print("SETUP_RESULT " + json.dumps({"single": single, "many": many, "users": users}))


if __name__ == "__main__":
    main()
