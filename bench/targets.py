"""What the benchmark measures: the mock upstream (started here) and the relays in front of it,
each a ``Target`` with its URLs, the keys the load rotates through and the process group its
CPU time is read from; and a sanity check of each before the load starts."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mock_upstream
from processes import BENCH, SLUICE_VENV, Processes, free_port, wait_for_port
from workload import MODELS, post


def start_upstream(kind: str, procs: Processes, workdir: Path, logs: Path) -> tuple:
    port = free_port()
    if kind == "nginx":
        prefix = workdir / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(mock_upstream.nginx_conf(port=port, prefix=str(prefix)))
        log_path = logs / "upstream-nginx.log"
        process = procs.start(
            "nginx",
            [shutil.which("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(log_path)],
            log_path=log_path,
        )
    else:
        log_path = logs / "upstream-aiohttp.log"
        process = procs.start(
            "aiohttp upstream",
            [str(SLUICE_VENV / "bin/python"), str(BENCH / "mock_upstream.py"), str(port)],
            log_path=log_path,
        )
    wait_for_port(port, process, "the mock upstream", log_path, timeout=30)
    return process, f"http://127.0.0.1:{port}"


@dataclass
class Target:
    name: str  # "upstream", "sluice", "sluice-1key", "sluice-users", "litellm"
    label: str
    urls: dict  # mode -> URL
    keys_file: str  # "-" for none
    first_key: str | None
    pgid: int  # process group whose CPU time is charged to this target
    relay: bool = True


def measured_targets(args, workdir: Path, keys: dict, upstream, sluice, litellm=None):
    """The upstream directly (the floor), Sluice three ways (``args.keys`` keys of one user,
    one key, ``args.keys`` users with a key each) and, when it runs, LiteLLM. ``upstream``,
    ``sluice`` and ``litellm`` are (process, base URL); ``keys`` is sluice_setup.py's."""
    from litellm_proxy import LITELLM_MASTER_KEY

    key_files = {}
    for name, lines in (
        ("many", keys["many"]),
        ("single", [keys["single"]]),
        ("users", keys["users"]),
        ("litellm", [LITELLM_MASTER_KEY]),
    ):
        key_files[name] = workdir / f"keys-{name}.txt"
        key_files[name].write_text("\n".join(lines) + "\n")

    def relay_urls(base):
        return {mode: f"{base}/v1/chat/completions" for mode in MODELS}

    upstream_proc, upstream_url = upstream
    sluice_proc, sluice_url = sluice
    targets = [
        Target(
            "upstream",
            "upstream directly",
            {mode: f"{upstream_url}/{mode}/v1/chat/completions" for mode in MODELS},
            "-",
            None,
            upstream_proc.pid,
            relay=False,
        ),
        Target(
            "sluice",
            f"Sluice ({args.keys} keys)",
            relay_urls(sluice_url),
            str(key_files["many"]),
            keys["many"][0],
            sluice_proc.pid,
        ),
        Target(
            "sluice-1key",
            "Sluice (1 key)",
            relay_urls(sluice_url),
            str(key_files["single"]),
            keys["single"],
            sluice_proc.pid,
        ),
        Target(
            "sluice-users",
            f"Sluice ({args.keys} users)",
            relay_urls(sluice_url),
            str(key_files["users"]),
            keys["users"][0],
            sluice_proc.pid,
        ),
    ]
    if litellm:
        litellm_proc, litellm_url = litellm
        targets.append(
            Target(
                "litellm",
                "LiteLLM",
                relay_urls(litellm_url),
                str(key_files["litellm"]),
                LITELLM_MASTER_KEY,
                litellm_proc.pid,
            )
        )
    return targets


def sanity_check(target: Target, mode: str, body: bytes) -> int:
    """One request by hand: a 200 with the mock's answer, a stream that ends in [DONE]."""
    status, answer = post(target.urls[mode], body, target.first_key)
    if status != 200:
        raise SystemExit(f"{target.label} {mode}: HTTP {status}: {answer[:500]!r}")
    if mode == "plain":
        content = json.loads(answer)["choices"][0]["message"]["content"]
        if content != "".join(mock_upstream.WORDS):
            raise SystemExit(f"{target.label} {mode}: unexpected answer {answer[:500]!r}")
    else:
        text = answer.decode()
        if "data: [DONE]" not in text or '"usage"' not in text:
            raise SystemExit(f"{target.label} {mode}: stream without usage or [DONE]: {text!r}")
        words = "".join(
            (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
            for line in text.splitlines()
            if line.startswith("data: {")
        )
        if words != "".join(mock_upstream.WORDS):
            raise SystemExit(f"{target.label} {mode}: unexpected stream {text!r}")
    return len(answer)
