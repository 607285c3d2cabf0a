"""/v1/completions and /v1/embeddings billed through the openai SDK, and /v1/models per key."""

import openai
import pytest

from accounts.services import create_api_key
from billing.models import Hold, UsageLog
from relay.models import Channel
from tests.charges import expected_charge
from tests.conftest import ALICE_CREDIT, UPSTREAM_KEY, add_channel, settled_usage
from tests.mock_upstream import embedding_vector

pytestmark = pytest.mark.django_db(transaction=True)

INSTRUCT = "gpt-3.5-turbo-instruct"
EMBEDDING = "text-embedding-3-small"
CLAUDE = "claude-sonnet-4-5"
SENTENCES = ["The quick brown fox", "jumps over", "the lazy dog"]


# --- /v1/completions ------------------------------------------------------------------------


def test_a_completion_is_answered_and_billed(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    answer = make_openai(alice_key).completions.create(
        model=INSTRUCT, prompt="Say hello", max_tokens=16
    )

    assert answer.object == "text_completion"
    assert answer.choices[0].text == "hello hello hello "
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 3)
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/completions"
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["json"] == {"model": INSTRUCT, "prompt": "Say hello", "max_tokens": 16}
    log = UsageLog.objects.get()
    assert (log.endpoint, log.model, log.is_stream) == ("completions", INSTRUCT, False)
    assert (log.input_tokens, log.output_tokens) == (11, 3)
    expected = expected_charge(INSTRUCT, input=11, output=3)
    assert log.quota == expected
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - expected
    assert Hold.objects.get().status == Hold.Status.SETTLED
    books_balance()


def test_a_completion_stream_is_billed_from_the_usage_sluice_asked_for(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 4})
    chunks = list(
        make_openai(alice_key).completions.create(model=INSTRUCT, prompt="Say hello", stream=True)
    )

    assert "".join(c.choices[0].text for c in chunks) == "hello " * 4
    # The client did not ask for usage: it gets none, but the upstream was asked.
    assert all(c.choices and c.usage is None for c in chunks)
    assert mock_upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    [log] = settled_usage()
    assert log.is_stream and log.status == "success" and log.endpoint == "completions"
    assert (log.input_tokens, log.output_tokens) == (11, 4)
    assert log.quota == expected_charge(INSTRUCT, input=11, output=4)
    books_balance()


def test_a_completion_stream_with_include_usage_ends_with_the_usage_chunk(
    alice, alice_key, openai_channel, make_openai, books_balance
):
    chunks = list(
        make_openai(alice_key).completions.create(
            model=INSTRUCT,
            prompt="Say hello",
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 3)
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens) == (11, 3)
    books_balance()


# --- /v1/embeddings -------------------------------------------------------------------------


def test_embeddings_in_the_sdks_default_base64_are_billed_on_input_only(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    result = make_openai(alice_key).embeddings.create(model=EMBEDDING, input=SENTENCES)

    # The SDK asks for base64 and decodes it; the vectors arrive intact.
    assert mock_upstream.requests[-1]["json"]["encoding_format"] == "base64"
    assert mock_upstream.requests[-1]["json"]["input"] == SENTENCES
    assert [item.index for item in result.data] == [0, 1, 2]
    assert [item.embedding for item in result.data] == [embedding_vector(i) for i in range(3)]
    assert result.usage.prompt_tokens == 11
    log = UsageLog.objects.get()
    assert (log.endpoint, log.model, log.is_stream) == ("embeddings", EMBEDDING, False)
    assert (log.input_tokens, log.output_tokens) == (11, 0)
    expected = expected_charge(EMBEDDING, input=11, output=0)
    assert log.quota == expected > 0
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT - expected
    books_balance()


def test_embeddings_as_floats(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"usage": {"prompt_tokens": 42}})
    result = make_openai(alice_key).embeddings.create(
        model=EMBEDDING, input=SENTENCES, encoding_format="float"
    )

    assert mock_upstream.requests[-1]["json"]["encoding_format"] == "float"
    assert [item.embedding for item in result.data] == [embedding_vector(i) for i in range(3)]
    log = UsageLog.objects.get()
    assert (log.input_tokens, log.output_tokens) == (42, 0)
    assert log.quota == expected_charge(EMBEDDING, input=42, output=0)
    books_balance()


@pytest.mark.parametrize(
    "path, call",
    [
        ("/v1/embeddings", lambda client: client.embeddings.create(model=CLAUDE, input="hello")),
        ("/v1/completions", lambda client: client.completions.create(model=CLAUDE, prompt="hi")),
    ],
    ids=["embeddings", "completions"],
)
def test_a_model_only_an_anthropic_channel_serves_is_refused_cleanly(
    path, call, alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    with pytest.raises(openai.NotFoundError) as refused:
        call(make_openai(alice_key, max_retries=2))

    error = refused.value
    assert error.status_code == 404 and error.code == "model_not_found"
    # The channel does offer the model (for chat), so the message names the endpoint instead.
    assert error.message.endswith(f"The model '{CLAUDE}' cannot be used with {path}.")
    assert error.response.headers["x-should-retry"] == "false"
    # Refused before any hold or upstream call: nothing charged, nothing held.
    assert mock_upstream.requests == []
    assert not UsageLog.objects.exists() and not Hold.objects.exists()
    alice.refresh_from_db()
    assert alice.quota == ALICE_CREDIT
    books_balance()


def test_a_model_nobody_offers_is_refused_as_not_offered(alice, alice_key, make_openai):
    with pytest.raises(openai.NotFoundError) as refused:
        make_openai(alice_key).embeddings.create(model=EMBEDDING, input="hello")

    assert refused.value.code == "model_not_found"
    assert "No channel offers the model" in refused.value.message


# --- /v1/models -----------------------------------------------------------------------------


@pytest.fixture
def other_channels(mock_upstream, db):
    """Channels whose models alice's keys must not see, for one reason each."""
    add_channel(mock_upstream.url, name="off", models=["gpt-4.1"], status=Channel.Status.DISABLED)
    add_channel(mock_upstream.url, name="vip only", models=["gpt-5"], groups=["vip"])
    add_channel(mock_upstream.url, name="unpriced", models=["house-model-unpriced"])


def test_models_lists_what_the_key_may_call_in_openais_shape(
    alice, alice_key, openai_channel, anthropic_channel, other_channels, relay_url
):
    import httpx

    response = httpx.get(f"{relay_url}/v1/models", headers={"Authorization": f"Bearer {alice_key}"})

    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    for item in listing["data"]:
        assert set(item) == {"id", "object", "created", "owned_by"}
        assert item["object"] == "model"
        assert isinstance(item["created"], int) and isinstance(item["owned_by"], str)
    # Disabled, other-group and unpriced models are left out.
    assert [item["id"] for item in listing["data"]] == sorted(
        [
            "gpt-4o",
            "gpt-4o-mini",
            "text-embedding-3-small",
            "gpt-3.5-turbo-instruct",
            CLAUDE,
            "claude-haiku-4-5",
        ]
    )


def test_models_honours_the_keys_allow_list(
    alice, openai_channel, anthropic_channel, other_channels, make_openai
):
    _, key = create_api_key(
        user=alice,
        name="narrow",
        allowed_models=["gpt-4o", "claude-haiku-4-5", "gpt-5", "house-model-unpriced"],
    )

    models = make_openai(key).models.list()

    assert [model.id for model in models] == ["claude-haiku-4-5", "gpt-4o"]
    assert all(model.object == "model" for model in models)


def test_models_needs_a_valid_key(openai_channel, make_openai):
    with pytest.raises(openai.AuthenticationError) as refused:
        make_openai("sk-not-a-real-key").models.list()

    assert refused.value.code == "invalid_api_key"
