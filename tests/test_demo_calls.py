"""A first call with no upstream account: the demo channel through the running relay, with the
official SDKs, free, journaled and with balanced books."""

import io

import pytest
from django.core.management import call_command

from accounts.models import User
from billing.models import Hold, UsageLog
from tests.conftest import ALICE_CREDIT, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Is the relay up?"
ASK = [{"role": "user", "content": QUESTION}]


@pytest.fixture
def demo_channel(db):
    call_command("demo", stdout=io.StringIO())


def assert_free(log: UsageLog, user: User, *, stream: bool) -> None:
    assert (log.model, log.status, log.is_stream) == ("demo-echo", "success", stream)
    assert log.quota == 0 and log.output_tokens > 0
    user.refresh_from_db()
    assert (user.quota, user.used_quota, user.request_count) == (ALICE_CREDIT, 0, 1)
    assert Hold.objects.get().status == Hold.Status.SETTLED


def test_a_new_operator_makes_a_first_call_with_the_commands_readme_gives(
    relay_url, make_openai, books_balance
):
    def run(*args) -> str:
        out = io.StringIO()
        call_command(*args, stdout=out, stderr=io.StringIO())
        return out.getvalue()

    run("demo")
    run("create_user", "dana", "--password", "a-long-password")
    run("grant", "dana", "1")
    key = run("create_key", "dana").strip()

    answer = make_openai(key).chat.completions.create(model="demo-echo", messages=ASK)

    assert answer.choices[0].message.content == QUESTION
    assert settled_usage()[0].quota == 0
    assert User.objects.get(username="dana").quota == 1
    books_balance()


def test_demo_echo_answers_the_echo_for_free(
    alice, alice_key, demo_channel, make_openai, books_balance
):
    answer = make_openai(alice_key).chat.completions.create(model="demo-echo", messages=ASK)

    assert answer.choices[0].message.content == QUESTION
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens > 0
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    assert_free(log, alice, stream=False)
    books_balance()


def test_a_demo_echo_stream_answers_the_echo_for_free(
    alice, alice_key, demo_channel, make_openai, books_balance
):
    chunks = list(
        make_openai(alice_key).chat.completions.create(
            model="demo-echo",
            messages=ASK,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == QUESTION
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    [log] = settled_usage()
    assert_free(log, alice, stream=True)
    books_balance()


def test_a_demo_stream_gives_usage_only_to_a_client_that_asked(
    alice, alice_key, demo_channel, make_openai
):
    chunks = list(
        make_openai(alice_key).chat.completions.create(model="demo-echo", messages=ASK, stream=True)
    )

    assert all(chunk.choices for chunk in chunks)
    assert settled_usage()[0].output_tokens > 0  # billed (at zero) from the demo's usage


def test_the_output_limit_and_n_reach_the_demo(alice, alice_key, demo_channel, make_openai):
    answer = make_openai(alice_key).chat.completions.create(
        model="demo-lorem", messages=ASK, max_tokens=4, n=2
    )

    assert [c.finish_reason for c in answer.choices] == ["length", "length"]
    assert answer.usage.completion_tokens <= 8
    assert answer.choices[0].message.content.startswith("Lorem")


def test_an_anthropic_client_is_answered_by_the_demo(
    alice, alice_key, demo_channel, make_anthropic, books_balance
):
    client = make_anthropic(alice_key)
    message = client.messages.create(model="demo-echo", max_tokens=64, messages=ASK)
    with client.messages.stream(model="demo-echo", max_tokens=64, messages=ASK) as stream:
        streamed = "".join(stream.text_stream)

    assert message.content[0].text == QUESTION and streamed == QUESTION
    assert [log.quota for log in settled_usage(2)] == [0, 0]
    books_balance()


def test_demo_models_are_listed_for_the_key(alice, alice_key, demo_channel, make_openai):
    listed = {model.id for model in make_openai(alice_key).models.list()}

    assert {"demo-echo", "demo-lorem"} <= listed
