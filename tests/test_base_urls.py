"""A channel's base URL, with or without its own path prefix, reaches the right endpoint.

Operators paste the base URL a vendor publishes for its SDK: a bare host, ``.../v1``, or a
prefix of the vendor's own (Zhipu's ``/api/paas/v4``, Doubao's ``/api/v3``, Gemini's
``/v1beta/openai``). The rule is ``relay.providers.base.join_url``'s.
"""

import asyncio
import threading

import pytest
from aiohttp import web
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import UsageLog
from relay.providers import provider_for
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, join_url
from tests.conftest import add_channel, settled_usage

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.mark.parametrize(
    ("base_url", "url"),
    [
        ("https://api.openai.com", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions"),
        (
            "https://open.bigmodel.cn/api/paas/v4",
            "https://open.bigmodel.cn/api/paas/v4/chat/completions",
        ),
        (
            "https://ark.cn-beijing.volces.com/api/v3/",
            "https://ark.cn-beijing.volces.com/api/v3/chat/completions",
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
        ),
        ("http://10.0.0.5:8080/v1", "http://10.0.0.5:8080/v1/chat/completions"),
        (
            "https://gw.example/openai?tenant=a",
            "https://gw.example/openai/chat/completions?tenant=a",
        ),
    ],
)
def test_an_openai_base_url_is_read_the_way_openais_sdk_reads_it(base_url, url):
    assert join_url(base_url, "/v1/chat/completions") == url


@pytest.mark.parametrize(
    ("base_url", "url"),
    [
        ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
        ("https://api.deepseek.com/anthropic", "https://api.deepseek.com/anthropic/v1/messages"),
        (
            "https://open.bigmodel.cn/api/anthropic/",
            "https://open.bigmodel.cn/api/anthropic/v1/messages",
        ),
    ],
)
def test_an_anthropic_base_url_is_read_the_way_anthropics_sdk_reads_it(base_url, url):
    assert join_url(base_url, "/v1/messages", convention="anthropic") == url


@pytest.mark.parametrize(
    ("operation", "path"),
    [(CHAT, "/chat/completions"), (COMPLETIONS, "/completions"), (EMBEDDINGS, "/embeddings")],
)
def test_every_openai_operation_follows_a_vendor_prefix(operation, path):
    openai = provider_for("openai")
    assert openai.url("https://open.bigmodel.cn/api/paas/v4", operation) == (
        "https://open.bigmodel.cn/api/paas/v4" + path
    )
    assert openai.url("https://api.openai.com", operation) == "https://api.openai.com/v1" + path


@pytest.mark.parametrize("base_url", ["https://api.anthropic.com", "https://api.anthropic.com/v1"])
def test_anthropic_is_reached_from_its_host_or_its_v1(base_url):
    assert provider_for("anthropic").url(base_url, MESSAGES) == (
        "https://api.anthropic.com/v1/messages"
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.openai.com/v1/chat/completions",
        "https://api.anthropic.com/v1/messages/",
        "https://open.bigmodel.cn/api/paas/v4/embeddings",
    ],
)
def test_a_base_url_pasted_with_its_endpoint_is_refused(base_url):
    with pytest.raises(CommandError, match="without the endpoint"):
        call_command(
            "add_channel", "--name", "n", "--base-url", base_url, "--key", "k", "--models", "m"
        )


# --- Through the relay -------------------------------------------------------------------------


class PrefixedUpstream:
    """A loopback upstream that answers OpenAI chat and Anthropic messages at any path ending
    in their operation, and records the paths it was asked for."""

    def __init__(self):
        self.paths: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> "PrefixedUpstream":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _answer(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        body = await request.json()
        if request.path.endswith("/v1/messages"):
            return web.json_response(
                {
                    "id": "msg_prefixed",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": "from the prefix"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 9, "output_tokens": 3},
                }
            )
        if request.path.endswith("/chat/completions"):
            return web.json_response(
                {
                    "id": "chatcmpl-prefixed",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "from the prefix"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
                }
            )
        return web.json_response({"error": {"message": "no such endpoint"}}, status=404)


@pytest.fixture(scope="module")
def prefixed_upstream():
    server = PrefixedUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def prefixed(prefixed_upstream):
    prefixed_upstream.paths.clear()
    return prefixed_upstream


@pytest.mark.django_db(transaction=True)
def test_a_call_reaches_an_upstream_under_its_own_prefix(
    alice, alice_key, make_openai, prefixed, books_balance
):
    add_channel(prefixed.url("/api/paas/v4"), models=["gpt-4o"])

    answer = make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)

    assert answer.choices[0].message.content == "from the prefix"
    assert prefixed.paths == ["/api/paas/v4/chat/completions"]
    [log] = settled_usage()
    assert (log.status, log.input_tokens, log.output_tokens) == (UsageLog.Status.SUCCESS, 9, 3)
    books_balance()


@pytest.mark.django_db(transaction=True)
def test_an_anthropic_call_reaches_a_vendor_prefix_ending_in_v1(
    alice, alice_key, make_anthropic, prefixed, books_balance
):
    add_channel(prefixed.url("/api/anthropic/v1"), type="anthropic", models=["claude-haiku-4-5"])

    message = make_anthropic(alice_key).messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=HELLO
    )

    assert message.content[0].text == "from the prefix"
    assert prefixed.paths == ["/api/anthropic/v1/messages"]
    settled_usage()
    books_balance()


@pytest.mark.django_db(transaction=True)
def test_base_urls_ending_in_v1_keep_working(
    alice, alice_key, make_openai, make_anthropic, mock_upstream, books_balance
):
    add_channel(mock_upstream.url + "/v1/", models=["gpt-4o"])
    add_channel(mock_upstream.url + "/v1", type="anthropic", models=["claude-haiku-4-5"])

    answer = make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)
    message = make_anthropic(alice_key).messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=HELLO
    )

    assert answer.choices[0].message.content == "hello hello hello "
    assert message.content[0].text == "hello hello hello "
    assert [request["path"] for request in mock_upstream.requests] == [
        "/v1/chat/completions",
        "/v1/messages",
    ]
    settled_usage(2)
    books_balance()


def test_an_anthropic_vendor_base_url_gets_v1_messages():
    assert provider_for("anthropic").url("https://api.deepseek.com/anthropic", MESSAGES) == (
        "https://api.deepseek.com/anthropic/v1/messages"
    )


@pytest.mark.django_db(transaction=True)
def test_an_anthropic_call_reaches_a_vendor_prefix_without_v1(
    alice, alice_key, make_anthropic, prefixed, books_balance
):
    add_channel(prefixed.url("/api/anthropic"), type="anthropic", models=["claude-haiku-4-5"])

    message = make_anthropic(alice_key).messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=HELLO
    )

    assert message.content[0].text == "from the prefix"
    assert prefixed.paths == ["/api/anthropic/v1/messages"]
    settled_usage()
    books_balance()
