"""The smaller endpoints through the running relay: moderations (free unless priced), rerank
(billed by the upstream's tokens, or by local counts when it reports search units), one model
(``GET /v1/models/{id}``, OpenAI's and Anthropic's shapes), Anthropic's token counting, the
501 of the endpoints this relay does not serve, and the tolerant paths clients produce.
"""

from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from accounts.services import create_api_key
from billing.models import ModelPrice, UsageLog
from billing.operations import UsageFlag
from relay import tokens
from relay.admission import _rerank_tokens
from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import add_channel, settled_usage, wait_until_settled

pytestmark = pytest.mark.django_db(transaction=True)

MODERATION = "omni-moderation-latest"
RERANKER = "jina-reranker-v2-base-multilingual"
CLAUDE = "claude-sonnet-4-5"


@pytest.fixture
def moderation_channel(mock_upstream, db):
    return add_channel(mock_upstream.url, name="moderation", models=(MODERATION,))


@pytest.fixture
def rerank_channel(mock_upstream, db):
    ModelPrice.objects.create(model=RERANKER, model_ratio=Decimal("0.025"))  # $0.05 / 1M
    return add_channel(mock_upstream.url, name="jina", models=(RERANKER,))


def _post(relay_url, key, path, body, **headers):
    answer = httpx.post(
        f"{relay_url}{path}", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    )
    wait_until_settled()  # a call settles just after its answer is sent
    return answer


# --- Moderations ------------------------------------------------------------------------------


def test_a_moderation_is_relayed_and_free_when_the_model_has_no_price(
    alice, alice_key, moderation_channel, make_openai, mock_upstream, books_balance
):
    assert not ModelPrice.objects.filter(model=MODERATION).exists()
    answer = make_openai(alice_key).moderations.create(
        model=MODERATION, input=["I will kill the process", "hello there"]
    )

    assert [result.flagged for result in answer.results] == [True, False]
    assert answer.results[0].categories.violence is True
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/moderations"
    assert sent["json"]["input"] == ["I will kill the process", "hello there"]
    log = UsageLog.objects.get()
    assert (log.endpoint, log.model, log.quota) == ("moderations", MODERATION, 0)
    assert_billed_once_each(1)
    books_balance()


def test_a_moderation_names_the_default_model_when_the_client_names_none(
    alice, alice_key, moderation_channel, relay_url, mock_upstream
):
    answer = _post(relay_url, alice_key, "/v1/moderations", {"input": "hello"})

    assert answer.status_code == 200, answer.text
    assert mock_upstream.requests[0]["json"]["model"] == MODERATION
    assert UsageLog.objects.get().model == MODERATION


def test_a_priced_moderation_model_is_billed_for_its_input(
    alice, alice_key, moderation_channel, make_openai, mock_upstream, books_balance
):
    ModelPrice.objects.create(model=MODERATION, model_ratio=Decimal("0.1"))
    parts = [{"type": "text", "text": "Is this all right to say?"}]
    make_openai(alice_key).moderations.create(model=MODERATION, input=parts)

    log = UsageLog.objects.get()
    counted = tokens.count_input(["Is this all right to say?"], MODERATION)
    assert log.input_tokens == counted > 0
    assert log.quota == expected_charge(MODERATION, input=counted) > 0
    books_balance()


def test_a_malformed_moderation_is_refused_naming_the_field(
    alice, alice_key, moderation_channel, relay_url, mock_upstream
):
    answer = _post(relay_url, alice_key, "/v1/moderations", {"model": MODERATION, "input": 5})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "input"
    assert mock_upstream.requests == []


# --- Rerank -----------------------------------------------------------------------------------


def test_a_rerank_is_billed_by_the_tokens_the_upstream_reports(
    alice, alice_key, rerank_channel, relay_url, mock_upstream, books_balance
):
    body = {
        "model": RERANKER,
        "query": "Which is a fruit?",
        "documents": ["An apple", "A car", {"text": "A banana"}],
        "top_n": 2,
    }
    answer = _post(relay_url, alice_key, "/v1/rerank", body)

    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["index"] for r in results] == [0, 1]
    assert results[0]["document"] == {"text": "An apple"}
    assert answer.json()["usage"] == {"total_tokens": 33}
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/rerank" and sent["json"] == body
    log = UsageLog.objects.get()
    assert (log.endpoint, log.input_tokens, log.output_tokens) == ("rerank", 33, 0)
    assert log.usage_flag == UsageFlag.TRUSTED
    assert log.quota == expected_charge(RERANKER, input=33)
    assert_billed_once_each(1)
    books_balance()


def test_a_rerank_whose_upstream_reports_search_units_is_billed_by_local_counts(
    alice, alice_key, rerank_channel, relay_url, mock_upstream, books_balance
):
    mock_upstream.script({"no_usage": True})  # Cohere's shape: meta.billed_units
    body = {"model": RERANKER, "query": "fruit", "documents": ["An apple", "A car"]}
    answer = _post(relay_url, alice_key, "/v1/rerank", body)

    assert answer.status_code == 200, answer.text
    assert answer.json()["meta"] == {"billed_units": {"search_units": 1}}
    log = UsageLog.objects.get()
    counted = _rerank_tokens(body, RERANKER)
    assert log.input_tokens == counted > 0
    assert log.quota == expected_charge(RERANKER, input=counted)
    books_balance()


def test_a_rerank_of_a_model_no_channel_offers_is_a_404(
    alice, alice_key, rerank_channel, relay_url, mock_upstream
):
    body = {"model": "some-other-reranker", "query": "q", "documents": ["d"]}
    answer = _post(relay_url, alice_key, "/v1/rerank", body)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found"
    assert mock_upstream.requests == []


def test_a_rerank_without_documents_is_refused(alice, alice_key, rerank_channel, relay_url):
    answer = _post(relay_url, alice_key, "/v1/rerank", {"model": RERANKER, "query": "q"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "documents"


# --- One model, and Anthropic's model list ----------------------------------------------------


def test_a_model_the_key_may_call_is_retrieved_and_others_are_404(
    alice, alice_key, openai_channel, make_openai
):
    client = make_openai(alice_key)
    found = client.models.retrieve("gpt-4o")
    assert (found.id, found.object) == ("gpt-4o", "model")

    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("claude-sonnet-4-5")  # priced, but no channel offers it
    assert missing.value.code == "model_not_found"

    _, narrow = create_api_key(user=alice, name="narrow", allowed_models=["gpt-4o-mini"])
    with pytest.raises(openai.NotFoundError):
        make_openai(narrow).models.retrieve("gpt-4o")
    assert make_openai(narrow).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"


def test_retrieving_a_model_needs_a_key(relay_url, openai_channel):
    answer = httpx.get(f"{relay_url}/v1/models/gpt-4o")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"]


def test_an_anthropic_client_gets_the_models_in_anthropic_s_shape(
    alice, alice_key, openai_channel, anthropic_channel, make_anthropic
):
    client = make_anthropic(alice_key)
    listed = [model.id for model in client.models.list()]
    assert "claude-sonnet-4-5" in listed and "gpt-4o" in listed
    one = client.models.retrieve("claude-sonnet-4-5")
    assert (one.type, one.id, one.display_name) == ("model", "claude-sonnet-4-5", CLAUDE)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["error"]["type"] == "not_found_error"


# --- Anthropic's count_tokens -----------------------------------------------------------------


def test_count_tokens_is_counted_locally_and_free(
    alice, alice_key, anthropic_channel, make_anthropic, mock_upstream, books_balance
):
    messages = [{"role": "user", "content": "How many tokens is this sentence?"}]
    tool = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    counted = make_anthropic(alice_key).messages.count_tokens(
        model=CLAUDE, system="Be terse.", messages=messages, tools=[tool]
    )

    expected = tokens.count_messages(
        messages, CLAUDE, system="Be terse.", tools=[tool], media="anthropic"
    )
    assert counted.input_tokens == expected > 0
    assert mock_upstream.requests == []
    assert UsageLog.objects.count() == 0
    books_balance()


def test_count_tokens_refuses_a_model_the_key_cannot_use_and_a_bad_key(
    alice, alice_key, anthropic_channel, make_anthropic
):
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.raises(anthropic.NotFoundError):
        make_anthropic(alice_key).messages.count_tokens(model="gpt-4o", messages=messages)
    with pytest.raises(anthropic.AuthenticationError):
        make_anthropic("sk-not-a-key").messages.count_tokens(model=CLAUDE, messages=messages)
    with pytest.raises(anthropic.BadRequestError):
        make_anthropic(alice_key).messages.count_tokens(model=CLAUDE, messages=[])


# --- Endpoints not relayed: 501 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/files"),
        ("POST", "/v1/batches"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("POST", "/v1/assistants"),
        ("POST", "/v1/threads/thread_1/runs"),
        ("GET", "/v1/vector_stores"),
        ("POST", "/v1/uploads"),
        ("GET", "/v1/evals"),
        ("POST", "/v1/containers"),
    ],
)
def test_an_openai_endpoint_not_relayed_is_a_501_naming_it(
    alice, alice_key, relay_url, method, path
):
    answer = httpx.request(
        method, f"{relay_url}{path}", headers={"Authorization": f"Bearer {alice_key}"}, json={}
    )
    assert answer.status_code == 501
    error = answer.json()["error"]
    assert path in error["message"]
    assert error["code"] == "not_implemented"


def test_the_sdk_sees_a_501_for_files_and_anthropic_batches_in_their_formats(
    alice, alice_key, make_openai, make_anthropic
):
    with pytest.raises(openai.APIStatusError) as refused:
        make_openai(alice_key).files.list()
    assert refused.value.status_code == 501
    with pytest.raises(anthropic.APIStatusError) as refused_too:
        make_anthropic(alice_key).messages.batches.list()
    assert refused_too.value.status_code == 501
    assert refused_too.value.body["type"] == "error"


def test_an_unknown_path_is_still_a_404(alice_key, relay_url):
    answer = httpx.get(f"{relay_url}/v1/no-such-thing")
    assert answer.status_code == 404


# --- Tolerant paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["/v1/v1", "", "/v1/"], ids=["doubled", "bare", "slash"])
def test_openai_clients_with_a_base_url_one_v1_off_reach_chat_and_responses(
    alice, alice_key, openai_channel, relay_url, mock_upstream, books_balance, base
):
    client = openai.OpenAI(base_url=f"{relay_url}{base}", api_key=alice_key, max_retries=0)
    chat = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
    )
    response = client.responses.create(model="gpt-4o", input="Hi")
    listed = client.models.list()

    assert chat.choices[0].message.content == "hello hello hello "
    assert response.output_text == "hello hello hello "
    assert "gpt-4o" in [model.id for model in listed]
    assert [request["path"] for request in mock_upstream.requests] == [
        "/v1/chat/completions",
        "/v1/responses",
    ]
    settled_usage(2)
    books_balance()


def test_an_anthropic_client_pointed_at_v1_reaches_messages(
    alice, alice_key, anthropic_channel, relay_url, mock_upstream, books_balance
):
    client = anthropic.Anthropic(base_url=f"{relay_url}/v1", api_key=alice_key, max_retries=0)
    message = client.messages.create(
        model=CLAUDE, max_tokens=32, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == "hello hello hello "
    assert mock_upstream.requests[0]["path"] == "/v1/messages"
    settled_usage(1)
    books_balance()


def test_a_trailing_slash_reaches_the_endpoint(alice, alice_key, openai_channel, relay_url):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    for path in ("/v1/chat/completions/", "/chat/completions/", "/v1/v1/chat/completions/"):
        answer = _post(relay_url, alice_key, path, body)
        assert answer.status_code == 200, (path, answer.text)


def test_the_site_keeps_its_own_pages(relay_url):
    assert httpx.get(f"{relay_url}/pricing").headers["content-type"].startswith("text/html")
    # /chat is the site's chat page; only /chat/completions is the relay's.
    assert httpx.get(f"{relay_url}/chat").status_code in (200, 302)
    assert httpx.get(f"{relay_url}/nothing-here").status_code == 404
