"""POST /v1/chat/completions through the official openai SDK, billed exactly."""

import base64

import pytest

from accounts.models import User
from billing.models import Hold, ModelPrice, UsageLog
from tests.charges import expected_charge
from tests.conftest import ALICE_CREDIT, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello"}]


def test_it_answers_and_charges_the_listed_price(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    answer = make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)

    assert answer.choices[0].message.content == "hello hello hello "
    assert answer.usage.prompt_tokens == 11 and answer.usage.completion_tokens == 3
    expected = expected_charge("gpt-4o", input=11, output=3)
    log = UsageLog.objects.get()
    assert (log.model, log.input_tokens, log.output_tokens, log.quota) == (
        "gpt-4o",
        11,
        3,
        expected,
    )
    assert log.status == "success" and not log.is_stream
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - expected
    assert alice.used_quota == expected and alice.request_count == 1
    assert Hold.objects.get().status == Hold.Status.SETTLED
    # The upstream got the channel's key, not alice's.
    assert mock_upstream.requests[-1]["headers"]["authorization"] == "Bearer upstream-test-key"
    books_balance()


def test_a_cookie_an_upstream_sets_never_rides_along_on_another_call(
    alice, alice_key, bob, openai_channel, make_openai, mock_upstream
):
    """The upstream client is shared by every user's calls: it must keep no cookie jar."""
    from accounts.services import create_api_key

    _, bob_key = create_api_key(user=bob)
    mock_upstream.script({"set_cookie": "alice-session"})
    make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)
    make_openai(bob_key).chat.completions.create(model="gpt-4o", messages=HELLO)

    assert "cookie" not in mock_upstream.requests[-1]["headers"]


def test_cached_input_is_billed_at_the_cache_read_ratio(
    alice, alice_key, openai_channel, make_openai, mock_upstream
):
    mock_upstream.script(
        {"usage": {"prompt_tokens": 1000, "prompt_tokens_details": {"cached_tokens": 800}}}
    )
    make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)

    log = UsageLog.objects.get()
    assert (log.input_tokens, log.cached_input_tokens) == (200, 800)
    assert log.quota == expected_charge("gpt-4o", input=200, cached=800, output=3)


def test_a_stream_arrives_in_pieces_and_is_billed_from_upstream_usage(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 5})
    stream = make_openai(alice_key).chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello " * 5
    # The client did not ask for usage, so the usage chunk Sluice asked for is withheld...
    assert all(c.choices for c in chunks)
    # ...but the upstream was asked for it, and the bill uses it.
    assert mock_upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    [log] = settled_usage()
    assert log.is_stream and (log.input_tokens, log.output_tokens) == (11, 5)
    assert log.quota == expected_charge("gpt-4o", input=11, output=5)
    books_balance()


def test_a_stream_with_include_usage_ends_with_the_usage_chunk(
    alice, alice_key, openai_channel, make_openai
):
    stream = make_openai(alice_key).chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 3


def test_the_stream_is_sent_as_server_sent_events_without_buffering(
    alice, alice_key, openai_channel, relay_url
):
    import httpx

    with httpx.stream(
        "POST",
        f"{relay_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
    ) as response:
        body = response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers
    assert body.rstrip().endswith(b"data: [DONE]")


def test_an_image_larger_than_djangos_form_limit_goes_through(
    alice, alice_key, openai_channel, make_openai, mock_upstream
):
    image = base64.b64encode(b"\x89PNG" + b"\0" * 3_000_000).decode()  # ~4 MB as base64
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
            ],
        }
    ]
    answer = make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=messages)

    assert answer.choices[0].message.content
    sent = mock_upstream.requests[-1]["json"]["messages"][0]["content"][1]
    assert sent["image_url"]["url"].endswith(image[-20:])


def test_a_mapped_model_is_priced_by_the_name_the_client_asked_for(
    alice, alice_key, mock_upstream, make_openai
):
    from tests.conftest import add_channel

    add_channel(
        mock_upstream.url,
        models=["gpt-4o-mini"],
        model_mapping={"gpt-4o-mini": "cheap-upstream-model"},
    )
    make_openai(alice_key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert mock_upstream.requests[-1]["json"]["model"] == "cheap-upstream-model"
    log = UsageLog.objects.get()
    assert (log.model, log.upstream_model) == ("gpt-4o-mini", "cheap-upstream-model")
    assert log.quota == expected_charge("gpt-4o-mini", input=11, output=3)


def test_a_group_ratio_multiplies_the_charge(alice, alice_key, openai_channel, make_openai):
    from billing.models import GroupRatio

    GroupRatio.objects.create(name="default", ratio="0.5")
    make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)

    assert UsageLog.objects.get().quota == expected_charge(
        "gpt-4o", input=11, output=3, group_ratio="0.5"
    )


def test_a_free_model_costs_nothing_but_is_logged(alice, alice_key, openai_channel, make_openai):
    ModelPrice.objects.filter(model="gpt-4o").update(is_free=True)
    make_openai(alice_key).chat.completions.create(model="gpt-4o", messages=HELLO)

    assert UsageLog.objects.get().quota == 0
    assert User.objects.get(id=alice.id).quota == ALICE_CREDIT


def test_no_prompt_or_answer_text_is_stored(alice, alice_key, openai_channel, make_openai):
    from django.db import connection

    secret_prompt = "my-very-private-prompt-words"
    make_openai(alice_key).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": secret_prompt}]
    )
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                assert secret_prompt not in repr(row) and "hello hello" not in repr(row)


def test_an_upstream_that_reports_no_usage_is_billed_on_local_counts(
    alice, alice_key, openai_channel, make_openai, mock_upstream
):
    from relay import tokens

    mock_upstream.script({"no_usage": True, "chunks": 4}, {"no_usage": True, "chunks": 4})
    client = make_openai(alice_key)
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))

    plain, streamed = settled_usage(2)
    answer_tokens = tokens.count_text("hello " * 4, "gpt-4o")
    prompt_tokens = tokens.count_messages(HELLO, "gpt-4o")
    for log in (plain, streamed):
        assert (log.input_tokens, log.output_tokens) == (prompt_tokens, answer_tokens)
        assert log.quota == expected_charge("gpt-4o", input=prompt_tokens, output=answer_tokens)
