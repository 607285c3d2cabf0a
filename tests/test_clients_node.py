"""JavaScript clients through the running relay, run by Node from the packages locked in
tests/node (installed by ``scripts/install test`` with ``npm ci``; nothing is downloaded here).

- The Vercel AI SDK (``ai`` + ``@ai-sdk/openai``): ``generateText`` and ``streamText`` with
  the default ``openai('model')``, which speaks the Responses API.
- Codex CLI (``@openai/codex``, its Linux binary comes from npm too): ``codex exec`` with a
  model provider pointed at the relay; it streams from ``/v1/responses``.

Without Node or without the installed packages these tests skip, or fail under
``REQUIRE_SERVICES=1`` like the other services.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import need_service, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if not node:
        need_service("Node", "install Node.js (>= 18) and run scripts/install test")
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        need_service("tests/node packages", "run scripts/install test (npm ci in tests/node)")
    return node


def run_node(node: str, *args: str, timeout: float = 60) -> dict:
    done = subprocess.run(
        [node, *args], cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_vercel_ai_sdk_generates_and_streams_text_through_responses(
    node, alice, alice_key, openai_channel, relay_url, mock_upstream, books_balance
):
    got = run_node(node, "vercel_ai.mjs", f"{relay_url}/v1", alice_key, "gpt-4o")

    assert got["generate"]["text"] == "hello hello hello "
    assert got["generate"]["finishReason"] == "stop"
    assert (got["generate"]["usage"]["inputTokens"], got["generate"]["usage"]["outputTokens"]) == (
        11,
        3,
    )
    assert got["stream"]["text"] == "hello hello hello "
    assert got["stream"]["deltas"] == 3
    assert got["stream"]["finishReason"] == "stop"
    assert got["stream"]["usage"]["outputTokens"] == 3
    sent = [(sent["path"], bool(sent["json"].get("stream"))) for sent in mock_upstream.requests]
    assert sent == [("/v1/responses", False), ("/v1/responses", True)]
    logs = settled_usage(2)
    assert [(log.endpoint, log.is_stream) for log in logs] == [
        ("responses", False),
        ("responses", True),
    ]
    assert all(log.quota == expected_charge("gpt-4o", input=11, output=3) for log in logs)
    assert_billed_once_each(2)
    books_balance()


def test_codex_cli_runs_a_turn_through_the_relay(
    node, alice, alice_key, openai_channel, relay_url, mock_upstream, books_balance, tmp_path
):
    """``codex exec`` with the relay as its model provider. Codex sends its own tools (function
    tools and a ``namespace`` group, run by the client) and, unless told not to, OpenAI's hosted
    web search, which the site refuses (it bills at OpenAI): ``web_search="disabled"``."""
    codex = NODE_DIR / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
    provider = (
        f'{{ name = "Sluice", base_url = "{relay_url}/v1", env_key = "SLUICE_API_KEY", '
        'wire_api = "responses" }'
    )
    settings = ['web_search="disabled"', 'model_provider="sluice"']
    settings.append(f"model_providers.sluice={provider}")
    command = [node, str(codex), "exec", "--json", "--skip-git-repo-check"]
    command += ["--sandbox", "read-only", "-m", "gpt-4o"]
    command += [option for setting in settings for option in ("-c", setting)]
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(tmp_path),
        "SLUICE_API_KEY": alice_key,
    }
    done = subprocess.run(
        [*command, "Say hello"],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    messages = [
        event["item"]["text"]
        for event in events
        if event.get("type") == "item.completed" and event["item"].get("type") == "agent_message"
    ]
    assert messages == ["hello hello hello "]
    [sent] = mock_upstream.requests
    assert (sent["path"], sent["json"]["stream"]) == ("/v1/responses", True)
    assert {tool["type"] for tool in sent["json"]["tools"]} == {"function", "namespace"}
    [log] = settled_usage()
    assert (log.endpoint, log.model, log.is_stream, log.output_tokens) == (
        "responses",
        "gpt-4o",
        True,
        3,
    )
    assert log.quota == expected_charge("gpt-4o", input=log.input_tokens, output=3)
    assert_billed_once_each(1)
    books_balance()
