"""Google's Gemini API through the relay: /v1beta generateContent, streamGenerateContent (SSE
and the JSON array), countTokens and the model list, with Google's own ``google-genai`` SDK as
the client, served by Gemini channels natively and by OpenAI and Anthropic channels through
conversion; and OpenAI and Anthropic clients served by Gemini channels. Each call is billed
exactly once, from the upstream's usage, and the books balance.
"""

import json

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from accounts.services import create_api_key, create_user
from billing import services as billing
from billing.models import UsageLog
from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import ANTHROPIC_MODELS, OPENAI_MODELS, UPSTREAM_KEY, add_channel, settled_usage

pytestmark = pytest.mark.django_db(transaction=True)

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
GEMINI_MODELS = (FLASH, PRO)
WEATHER_TOOL = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="The weather in a city.",
            parameters=types.Schema(
                type="OBJECT", properties={"city": types.Schema(type="STRING")}
            ),
        )
    ]
)


@pytest.fixture
def gemini_channel(mock_upstream, db):
    return add_channel(mock_upstream.url, type="gemini", models=GEMINI_MODELS)


@pytest.fixture
def make_genai(relay_url):
    made = []  # kept for the test's length: a client closes its connections when collected

    def make(key: str) -> genai.Client:
        client = genai.Client(
            api_key=key, http_options=types.HttpOptions(base_url=relay_url, api_version="v1beta")
        )
        made.append(client)
        return client

    return make


def _stream_text(chunks) -> str:
    return "".join(chunk.text or "" for chunk in chunks)


# --- Gemini client, Gemini channel ------------------------------------------------------------


def test_generate_content_on_a_gemini_channel_is_relayed_and_billed(
    alice, alice_key, gemini_channel, make_genai, mock_upstream, books_balance
):
    mock_upstream.script({"usage": {"thoughtsTokenCount": 5, "cachedContentTokenCount": 4}})
    answer = make_genai(alice_key).models.generate_content(
        model=FLASH,
        contents="Say hello",
        config=types.GenerateContentConfig(
            system_instruction="You are terse.", max_output_tokens=100
        ),
    )

    assert answer.text == "hello hello hello "
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata.prompt_token_count == 11
    [sent] = mock_upstream.requests
    assert sent["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert sent["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    assert sent["query"] == {}  # the upstream key never travels in the URL
    # The URL's parts are not in the body Google gets; the output limit is the client's.
    assert not {"model", "stream", "alt"} & set(sent["json"])
    assert sent["json"]["generationConfig"]["maxOutputTokens"] == 100
    assert sent["json"]["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    [log] = settled_usage()
    assert (log.endpoint, log.model, log.is_stream) == ("generate_content", FLASH, False)
    # Cached input is inside promptTokenCount; thinking is apart from candidatesTokenCount.
    assert (log.input_tokens, log.cached_input_tokens) == (7, 4)
    assert (log.output_tokens, log.reasoning_tokens) == (8, 5)
    assert log.quota == expected_charge(FLASH, input=7, cached=4, output=8)
    assert_billed_once_each(1)
    books_balance()


def test_stream_generate_content_with_sse_on_a_gemini_channel(
    alice, alice_key, gemini_channel, make_genai, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 4, "usage": {"candidatesTokenCount": 9}})
    chunks = list(
        make_genai(alice_key).models.generate_content_stream(model=PRO, contents="Say hello")
    )

    assert _stream_text(chunks) == "hello " * 4
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    sent = mock_upstream.requests[-1]
    assert sent["path"] == f"/v1beta/models/{PRO}:streamGenerateContent"
    assert sent["query"] == {"alt": "sse"}
    [log] = settled_usage()
    assert log.is_stream and log.status == "success"
    # Every chunk carries the counts so far: the last one's are billed.
    assert (log.input_tokens, log.output_tokens) == (11, 9)
    assert log.quota == expected_charge(PRO, input=11, output=9)
    books_balance()


def test_a_stream_without_alt_sse_is_one_json_array(
    alice, alice_key, gemini_channel, relay_url, mock_upstream, books_balance
):
    response = httpx.post(
        f"{relay_url}/v1beta/models/{FLASH}:streamGenerateContent",
        params={"key": alice_key},
        json={"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]},
        timeout=10,
    )

    assert response.status_code == 200
    chunks = json.loads(response.text)
    assert isinstance(chunks, list) and len(chunks) == 4
    text = "".join(
        part.get("text", "")
        for chunk in chunks
        for part in chunk["candidates"][0]["content"]["parts"]
    )
    assert text == "hello " * 3
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert mock_upstream.requests[-1]["query"] == {"alt": "sse"}  # the relay reads SSE upstream
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens, log.status) == (11, 3, "success")
    books_balance()


def test_snake_case_fields_are_read_as_google_reads_them(
    alice, alice_key, gemini_channel, relay_url, mock_upstream
):
    response = httpx.post(
        f"{relay_url}/v1beta/models/{FLASH}:generateContent",
        headers={"x-goog-api-key": alice_key},
        json={
            "system_instruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"parts": [{"text": "Say hello"}]}],
            "generation_config": {"max_output_tokens": 2},
        },
        timeout=10,
    )

    assert response.status_code == 200, response.text
    assert response.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"
    sent = mock_upstream.requests[-1]["json"]
    assert sent["generationConfig"]["maxOutputTokens"] == 2
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


# --- Gemini client, OpenAI and Anthropic channels --------------------------------------------


@pytest.mark.parametrize(
    ("channel_type", "model", "upstream_path"),
    [
        ("openai", "gpt-4o-mini", "/v1/chat/completions"),
        ("anthropic", "claude-sonnet-4-5", "/v1/messages"),
    ],
)
def test_generate_content_on_another_formats_channel(
    channel_type,
    model,
    upstream_path,
    alice,
    alice_key,
    make_genai,
    mock_upstream,
    books_balance,
):
    models = OPENAI_MODELS if channel_type == "openai" else ANTHROPIC_MODELS
    add_channel(mock_upstream.url, type=channel_type, models=models)
    answer = make_genai(alice_key).models.generate_content(
        model=model,
        contents="Say hello",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=50),
    )

    assert answer.text == "hello hello hello "
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata.prompt_token_count == 11
    assert answer.usage_metadata.candidates_token_count == 3
    [sent] = mock_upstream.requests
    assert sent["path"] == upstream_path
    assert sent["json"]["max_tokens"] == 50
    [log] = settled_usage()
    assert (log.endpoint, log.input_tokens, log.output_tokens) == ("generate_content", 11, 3)
    assert log.quota == expected_charge(model, input=11, output=3)
    books_balance()


@pytest.mark.parametrize(
    ("channel_type", "model"),
    [("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")],
)
def test_stream_generate_content_on_another_formats_channel(
    channel_type, model, alice, alice_key, make_genai, mock_upstream, books_balance
):
    models = OPENAI_MODELS if channel_type == "openai" else ANTHROPIC_MODELS
    add_channel(mock_upstream.url, type=channel_type, models=models)
    mock_upstream.script({"chunks": 5})
    chunks = list(
        make_genai(alice_key).models.generate_content_stream(model=model, contents="Say hello")
    )

    assert _stream_text(chunks) == "hello " * 5
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.prompt_token_count == 11
    assert chunks[-1].usage_metadata.candidates_token_count == 5
    assert mock_upstream.requests[-1]["json"]["stream"] is True
    [log] = settled_usage()
    assert (log.is_stream, log.status, log.input_tokens, log.output_tokens) == (
        True,
        "success",
        11,
        5,
    )
    assert log.quota == expected_charge(model, input=11, output=5)
    books_balance()


def test_a_function_call_round_trip_through_an_openai_channel(
    alice, alice_key, openai_channel, make_genai, mock_upstream
):
    client = make_genai(alice_key)
    config = types.GenerateContentConfig(tools=[WEATHER_TOOL])
    question = types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")])
    first = client.models.generate_content(model="gpt-4o-mini", contents=[question], config=config)

    [call] = first.function_calls
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    sent_tool = mock_upstream.requests[-1]["json"]["tools"][0]["function"]
    assert sent_tool["name"] == "get_weather"
    # Google's capitalised schema types became JSON Schema's.
    assert sent_tool["parameters"] == {"type": "object", "properties": {"city": {"type": "string"}}}

    result = types.Part.from_function_response(name="get_weather", response={"temp": 21})
    second = client.models.generate_content(
        model="gpt-4o-mini",
        contents=[
            question,
            first.candidates[0].content,
            types.Content(role="user", parts=[result]),
        ],
        config=config,
    )
    assert second.text == "hello hello hello "
    messages = mock_upstream.requests[-1]["json"]["messages"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[2] == {
        "role": "tool",
        "tool_call_id": messages[1]["tool_calls"][0]["id"],
        "content": json.dumps({"temp": 21}),
    }


# --- OpenAI and Anthropic clients, Gemini channel -----------------------------------------------


def test_a_chat_completion_is_answered_by_a_gemini_channel(
    alice, alice_key, gemini_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"usage": {"thoughtsTokenCount": 2}})
    answer = make_openai(alice_key).chat.completions.create(
        model=FLASH,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=40,
    )

    assert answer.choices[0].message.content == "hello hello hello "
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 5)
    assert answer.usage.completion_tokens_details.reasoning_tokens == 2
    [sent] = mock_upstream.requests
    assert sent["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert sent["json"] == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 40},
    }
    [log] = settled_usage()
    assert (log.endpoint, log.output_tokens, log.reasoning_tokens) == ("chat", 5, 2)
    assert log.quota == expected_charge(FLASH, input=11, output=5)
    books_balance()


def test_a_chat_stream_is_answered_by_a_gemini_channel(
    alice, alice_key, gemini_channel, make_openai, mock_upstream, books_balance
):
    chunks = list(
        make_openai(alice_key).chat.completions.create(
            model=FLASH,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello " * 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 11
    assert mock_upstream.requests[-1]["path"] == f"/v1beta/models/{FLASH}:streamGenerateContent"
    [log] = settled_usage()
    assert (log.status, log.input_tokens, log.output_tokens) == ("success", 11, 3)
    assert log.quota == expected_charge(FLASH, input=11, output=3)
    books_balance()


def test_an_anthropic_message_is_answered_by_a_gemini_channel(
    alice, alice_key, gemini_channel, make_anthropic, mock_upstream, books_balance
):
    client = make_anthropic(alice_key)
    answer = client.messages.create(
        model=FLASH, max_tokens=30, messages=[{"role": "user", "content": "Hi"}]
    )
    assert answer.content[0].text == "hello hello hello "
    assert answer.stop_reason == "end_turn"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 3)

    with client.messages.stream(
        model=FLASH, max_tokens=30, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "hello " * 3
    assert final.usage.output_tokens == 3
    assert [r["json"]["generationConfig"]["maxOutputTokens"] for r in mock_upstream.requests] == [
        30,
        30,
    ]
    rows = settled_usage(2)
    assert [(r.endpoint, r.is_stream, r.output_tokens) for r in rows] == [
        ("messages", False, 3),
        ("messages", True, 3),
    ]
    assert all(r.quota == expected_charge(FLASH, input=11, output=3) for r in rows)
    books_balance()


# --- Keys, errors, countTokens and the model list -------------------------------------------


def test_the_key_may_come_as_a_query_parameter_or_a_bearer_token(
    alice, alice_key, gemini_channel, relay_url
):
    body = {"contents": [{"parts": [{"text": "Hi"}]}]}
    url = f"{relay_url}/v1beta/models/{FLASH}:generateContent"
    by_query = httpx.post(url, params={"key": alice_key}, json=body, timeout=10)
    by_bearer = httpx.post(
        url, headers={"Authorization": f"Bearer {alice_key}"}, json=body, timeout=10
    )
    assert (by_query.status_code, by_bearer.status_code) == (200, 200)


def test_a_bad_key_is_refused_in_googles_shape(alice, gemini_channel, make_genai, mock_upstream):
    with pytest.raises(genai_errors.ClientError) as refused:
        make_genai("sk-not-a-key").models.generate_content(model=FLASH, contents="Hi")

    assert refused.value.code == 401
    assert refused.value.status == "UNAUTHENTICATED"
    assert "API key" in refused.value.message
    assert mock_upstream.requests == []


def test_an_unknown_model_is_a_404_in_googles_shape(alice, alice_key, gemini_channel, relay_url):
    response = httpx.post(
        f"{relay_url}/v1beta/models/gemini-9-ultra:generateContent",
        headers={"x-goog-api-key": alice_key},
        json={"contents": [{"parts": [{"text": "Hi"}]}]},
        timeout=10,
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND")
    assert error["details"][0]["reason"] == "MODEL_NOT_FOUND"


def test_a_spent_balance_is_resource_exhausted(
    gemini_channel, make_genai, mock_upstream, books_balance
):
    poor = create_user(username="dan", password="dan-password")
    billing.grant(user=poor, amount=5, note="almost nothing")
    _, key = create_api_key(user=poor, name="dan's key")
    with pytest.raises(genai_errors.ClientError) as refused:
        make_genai(key).models.generate_content(model=PRO, contents="Hi")

    assert (refused.value.code, refused.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert refused.value.details["error"]["details"][0]["reason"] == "INSUFFICIENT_QUOTA"
    assert mock_upstream.requests == []
    books_balance()


def test_an_unsupported_part_is_a_400_naming_it(
    alice, alice_key, openai_channel, relay_url, mock_upstream
):
    response = httpx.post(
        f"{relay_url}/v1beta/models/gpt-4o-mini:generateContent",
        headers={"x-goog-api-key": alice_key},
        json={"contents": [{"parts": [{"executableCode": {"code": "print(1)"}}]}]},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert "contents[0].parts[0]: executableCode" in error["message"]
    assert mock_upstream.requests == []


def test_count_tokens_is_local_and_free(
    alice, alice_key, gemini_channel, make_genai, mock_upstream
):
    counted = make_genai(alice_key).models.count_tokens(
        model=FLASH, contents="How many tokens is this sentence?"
    )

    assert 5 < counted.total_tokens < 30
    assert mock_upstream.requests == []
    assert UsageLog.objects.count() == 0
    alice.refresh_from_db()
    assert alice.quota == 10_000_000


def test_the_model_list_names_what_the_key_may_call(
    alice, alice_key, gemini_channel, openai_channel, make_genai
):
    client = make_genai(alice_key)
    names = {model.name for model in client.models.list()}
    assert {f"models/{FLASH}", f"models/{PRO}", "models/gpt-4o-mini"} <= names
    flash = client.models.get(model=FLASH)
    assert flash.output_token_limit == 65_536
    assert "generateContent" in flash.supported_actions


@pytest.mark.parametrize(
    "path", ["/v1beta", "/V1BETA/models/gemini-pro:generateContent", "/v1beta/files"]
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_near_miss_under_v1beta_gets_a_404_in_googles_shape(relay_url, alice_key, path, method):
    response = httpx.request(
        method,
        relay_url + path,
        json={"contents": []} if method == "POST" else None,
        headers={"x-goog-api-key": alice_key},
    )

    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND")
    assert path in error["message"]
