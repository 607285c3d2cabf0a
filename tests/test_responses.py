"""POST /v1/responses through the running relay with the official openai SDK: served natively
by an OpenAI channel, converted for an Anthropic channel and for the demo channel (chat only),
streams included, tools round trip, billed exactly; and the stored responses read back
through the channel that made them.
"""

import httpx
import openai
import pytest

from billing.models import ModelPrice, UsageLog
from relay import tokens
from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import add_channel, settled_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

CLAUDE = "claude-sonnet-4-5"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


# --- OpenAI channel: native ---------------------------------------------------------------------


def test_a_response_is_relayed_natively_and_billed_from_its_usage(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script(
        {
            "usage": {
                "input_tokens": 40,
                "input_tokens_details": {"cached_tokens": 30},
                "output_tokens": 9,
                "output_tokens_details": {"reasoning_tokens": 6},
            }
        }
    )
    response = make_openai(alice_key).responses.create(
        model="gpt-4o", instructions="Be terse.", input="Say hello", max_output_tokens=50
    )

    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "hello hello hello "
    assert (response.usage.input_tokens, response.usage.output_tokens) == (40, 9)
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/responses"
    # Unconverted: the client's body, with exactly the limit the hold covers.
    assert sent["json"] == {
        "model": "gpt-4o",
        "instructions": "Be terse.",
        "input": "Say hello",
        "max_output_tokens": 50,
    }
    log = UsageLog.objects.get()
    assert (log.endpoint, log.model, log.is_stream) == ("responses", "gpt-4o", False)
    # input_tokens includes the cached ones; reasoning is inside the output.
    assert (log.input_tokens, log.cached_input_tokens, log.output_tokens) == (10, 30, 9)
    assert log.quota == expected_charge("gpt-4o", input=10, cached=30, output=9)
    assert_billed_once_each(1)
    books_balance()


def test_a_native_stream_passes_through_and_is_billed_from_response_completed(
    alice, alice_key, openai_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 4, "usage": {"output_tokens": 4}})
    stream = make_openai(alice_key).responses.create(model="gpt-4o", input="Hi", stream=True)
    events = list(stream)

    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == ["hello "] * 4
    assert events[-1].response.usage.output_tokens == 4
    [log] = settled_usage()
    assert log.is_stream and log.status == "success" and log.endpoint == "responses"
    assert (log.input_tokens, log.output_tokens) == (11, 4)
    assert log.quota == expected_charge("gpt-4o", input=11, output=4)
    books_balance()


def test_the_hold_takes_max_output_tokens_and_the_model_maximum_without_it(
    alice, alice_key, openai_channel, make_openai, mock_upstream
):
    client = make_openai(alice_key)
    client.responses.create(model="gpt-4o", input="Hi", max_output_tokens=77)
    client.responses.create(model="gpt-4o", input="Hi")

    first, second = (request["json"] for request in mock_upstream.requests)
    assert first["max_output_tokens"] == 77
    # No limit named: the upstream gets the limit the hold covered, or none at all.
    most = ModelPrice.objects.get(model="gpt-4o").max_output_tokens
    assert second.get("max_output_tokens") in (None, most)


def test_a_native_tool_round_trip(alice, alice_key, openai_channel, make_openai, mock_upstream):
    client = make_openai(alice_key)
    first = client.responses.create(
        model="gpt-4o", input="What is the weather in Paris?", tools=[WEATHER_TOOL]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')

    second = client.responses.create(
        model="gpt-4o",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
        ],
    )
    assert second.output_text == "hello hello hello "
    assert mock_upstream.requests[-1]["json"]["input"][-1]["output"] == "Sunny, 21 C"


def test_a_stored_response_is_read_back_from_its_channel_and_only_by_its_owner(
    alice, alice_key, bob, openai_channel, make_openai, mock_upstream, relay_url
):
    from accounts.services import create_api_key

    # Another OpenAI channel, tried first: reading back must still reach the one that made it.
    client = make_openai(alice_key)
    made = client.responses.create(model="gpt-4o", input="Hi")
    add_channel("http://127.0.0.1:9", name="elsewhere", models=("gpt-4o",), priority=5)

    again = client.responses.retrieve(made.id)
    assert (again.id, again.output_text) == (made.id, "hello hello hello ")
    assert mock_upstream.requests[-1]["path"] == f"/v1/responses/{made.id}"
    assert mock_upstream.requests[-1]["method"] == "GET"

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(made.id)
    assert "background" in refused.value.message

    _, bob_key = create_api_key(user=bob, name="bob's key")
    with pytest.raises(openai.NotFoundError):
        make_openai(bob_key).responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_never_made")
    # Free: only the one call that made the response was billed.
    assert UsageLog.objects.count() == 1

    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_a_response_not_stored_is_not_remembered(
    alice, alice_key, openai_channel, make_openai, mock_upstream
):
    client = make_openai(alice_key)
    made = client.responses.create(model="gpt-4o", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_previous_response_id_reaches_a_native_channel(
    alice, alice_key, openai_channel, make_openai, mock_upstream
):
    client = make_openai(alice_key)
    first = client.responses.create(model="gpt-4o", input="Hi")
    client.responses.create(model="gpt-4o", input="And then?", previous_response_id=first.id)
    assert mock_upstream.requests[-1]["json"]["previous_response_id"] == first.id


# --- Anthropic channel: converted ---------------------------------------------------------------


def test_a_response_is_answered_by_an_anthropic_channel(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"usage": {"cache_read_input_tokens": 40}})
    response = make_openai(alice_key).responses.create(
        model=CLAUDE,
        instructions="Be terse.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
        max_output_tokens=64,
    )

    assert response.object == "response" and response.status == "completed"
    assert response.model == CLAUDE
    assert response.output_text == "hello hello hello "
    assert (response.usage.input_tokens, response.usage.output_tokens) == (51, 3)
    assert response.usage.input_tokens_details.cached_tokens == 40
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/messages"
    assert sent["json"]["system"] == "Be terse."
    assert sent["json"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
    ]
    assert sent["json"]["max_tokens"] == 64
    log = UsageLog.objects.get()
    assert (log.endpoint, log.input_tokens, log.cached_input_tokens, log.output_tokens) == (
        "responses",
        11,
        40,
        3,
    )
    assert log.quota == expected_charge(CLAUDE, input=11, cached=40, output=3)
    assert_billed_once_each(1)
    books_balance()


def test_an_anthropic_stream_becomes_the_responses_event_sequence(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 5, "usage": {"output_tokens": 5}})
    client = make_openai(alice_key)
    with client.responses.stream(model=CLAUDE, input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()

    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.output_text == "hello " * 5
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 5)
    [log] = settled_usage()
    assert log.is_stream and log.status == "success"
    assert (log.input_tokens, log.output_tokens) == (11, 5)
    assert log.quota == expected_charge(CLAUDE, input=11, output=5)
    books_balance()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_tool_round_trip_through_an_anthropic_channel(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance, stream
):
    client = make_openai(alice_key)
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    if stream:
        with client.responses.stream(model=CLAUDE, input=[ask], tools=[WEATHER_TOOL]) as events:
            arguments = [
                e.delta for e in events if e.type == "response.function_call_arguments.delta"
            ]
            first = events.get_final_response()
        assert "".join(arguments) == '{"city": "Paris"}'
    else:
        first = client.responses.create(model=CLAUDE, input=[ask], tools=[WEATHER_TOOL])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments.replace(" ", "") == '{"city":"Paris"}'
    sent = mock_upstream.requests[-1]["json"]
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": WEATHER_TOOL["parameters"],
        }
    ]

    second = client.responses.create(
        model=CLAUDE,
        tools=[WEATHER_TOOL],
        input=[
            ask,
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
        ],
    )
    assert second.output_text == "hello hello hello "
    messages = mock_upstream.requests[-1]["json"]["messages"]
    assert messages[1]["content"][0]["type"] == "tool_use"
    assert messages[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": messages[1]["content"][0]["id"],
        "content": "Sunny",
    }
    settled_usage(2)
    books_balance()


def test_a_converted_stream_cut_midway_is_billed_for_what_was_sent(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 6, "cut_after": 2})
    stream = make_openai(alice_key).responses.create(model=CLAUDE, input="Hi", stream=True)
    events = list(stream)

    assert events[-1].type == "error"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == ["hello "] * 2
    [log] = settled_usage()
    assert log.status == "upstream_error"
    # The upstream's input count, and the output the client was sent, counted locally.
    sent = tokens.count_text("hello " * 2, CLAUDE)
    assert (log.input_tokens, log.output_tokens) == (11, sent)
    assert log.quota == expected_charge(CLAUDE, input=11, output=sent)
    books_balance()


def test_previous_response_id_is_refused_when_the_channel_converts(
    alice, alice_key, anthropic_channel, make_openai, mock_upstream, books_balance
):
    with pytest.raises(openai.BadRequestError) as refused:
        make_openai(alice_key).responses.create(
            model=CLAUDE, input="And then?", previous_response_id="resp_abc"
        )
    assert "previous_response_id" in refused.value.message
    assert mock_upstream.requests == []
    books_balance()


# --- The demo channel: chat only, converted -----------------------------------------------------


def test_a_chat_only_channel_serves_responses_through_the_hub(
    alice, alice_key, make_openai, relay_url, books_balance
):
    import io

    from django.core.management import call_command

    call_command("demo", stdout=io.StringIO())  # a demo channel: chat only, priced at zero
    client = make_openai(alice_key)
    plain = client.responses.create(model="demo-echo", input="echo me")
    with client.responses.stream(model="demo-echo", input="echo me too") as stream:
        final = stream.get_final_response()

    assert plain.output_text == "echo me"
    assert final.output_text == "echo me too"
    first, second = settled_usage(2)
    assert first.output_tokens == plain.usage.output_tokens > 0
    assert second.output_tokens == final.usage.output_tokens > 0
    assert (first.endpoint, second.is_stream) == ("responses", True)
    books_balance()


# --- Refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_what_cannot_be_served_is_refused_naming_the_field(
    alice, alice_key, openai_channel, relay_url, mock_upstream, fields, param
):
    body = {"model": "gpt-4o", "input": "Hi", **fields}
    answer = httpx.post(
        f"{relay_url}/v1/responses", json=body, headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert mock_upstream.requests == []


def test_a_hosted_tool_is_refused_by_name_and_client_run_tools_pass_through(
    alice, alice_key, openai_channel, relay_url, mock_upstream
):
    headers = {"Authorization": f"Bearer {alice_key}"}
    namespace = {"type": "namespace", "name": "agents", "tools": [{"type": "function"}]}
    custom = {"type": "custom", "name": "apply_patch", "format": {"type": "text"}}
    body = {"model": "gpt-4o", "input": "Hi"}
    hosted = httpx.post(
        f"{relay_url}/v1/responses",
        json={**body, "tools": [custom, {"type": "web_search"}]},
        headers=headers,
    )
    assert hosted.status_code == 400
    assert hosted.json()["error"]["param"] == "tools[1].type"
    assert "'web_search' are not offered" in hosted.json()["error"]["message"]
    assert mock_upstream.requests == []

    served = httpx.post(
        f"{relay_url}/v1/responses", json={**body, "tools": [namespace, custom]}, headers=headers
    )
    assert served.status_code == 200
    [sent] = mock_upstream.requests
    assert sent["json"]["tools"] == [namespace, custom]
    settled_usage()


def test_a_client_run_tool_other_than_a_function_is_not_converted(
    alice, alice_key, anthropic_channel, relay_url, mock_upstream
):
    custom = {"type": "custom", "name": "apply_patch"}
    answer = httpx.post(
        f"{relay_url}/v1/responses",
        json={"model": "claude-haiku-4-5", "input": "Hi", "tools": [custom]},
        headers={"Authorization": f"Bearer {alice_key}"},
    )
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "tools[0]: tools of type 'custom' cannot be converted" in message
    assert mock_upstream.requests == []
