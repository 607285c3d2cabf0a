"""Real Responses API clients through the running relay, billed exactly: the OpenAI Agents SDK
(``openai-agents``: ``Runner.run`` with its default model, pointed at the relay with
``set_default_openai_client``, a tool round trip included) and LangChain's ``ChatOpenAI``
(``langchain-openai``) with ``use_responses_api=True`` and with ``reasoning=``.

litellm is not among them: its wheel brings boto3, huggingface_hub and tokenizers, too heavy
for a test dependency.
"""

import openai
import pytest
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import get_default_model
from langchain_openai import ChatOpenAI

from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import add_channel, settled_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def agents_model(mock_upstream, db):
    """The Agents SDK's default model, at the shipped price (tests/test_default_prices.py
    checks it has one), offered by an OpenAI channel."""
    model = get_default_model()
    add_channel(mock_upstream.url, name="agents", models=(model,))
    return model


@pytest.fixture
def agents_client(relay_url, alice_key):
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = openai.AsyncOpenAI(base_url=f"{relay_url}/v1", api_key=alice_key, max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    yield client
    set_default_openai_client(openai.AsyncOpenAI(api_key="unset"), use_for_tracing=False)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def test_the_agents_sdk_runs_an_agent_with_its_default_model(
    alice, agents_model, agents_client, mock_upstream, books_balance
):
    agent = Agent(name="Assistant", instructions="Be terse.")
    result = Runner.run_sync(agent, "Say hello")

    assert result.final_output == "hello hello hello "
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/responses"
    assert (sent["json"]["model"], sent["json"]["instructions"]) == (agents_model, "Be terse.")
    [log] = settled_usage()
    assert (log.endpoint, log.model, log.input_tokens, log.output_tokens) == (
        "responses",
        agents_model,
        11,
        3,
    )
    assert log.quota == expected_charge(agents_model, input=11, output=3)
    assert_billed_once_each(1)
    books_balance()


def test_the_agents_sdk_calls_a_tool_and_answers_from_its_result(
    alice, agents_model, agents_client, mock_upstream, books_balance
):
    agent = Agent(name="Assistant", tools=[get_weather])
    result = Runner.run_sync(agent, "What is the weather in Paris?")

    assert result.final_output == "hello hello hello "
    first, second = (request["json"] for request in mock_upstream.requests)
    assert first["tools"][0]["name"] == "get_weather"
    outputs = [item for item in second["input"] if item.get("type") == "function_call_output"]
    assert [item["output"] for item in outputs] == ["Sunny in Paris"]
    logs = settled_usage(2)
    assert [log.quota for log in logs] == [
        expected_charge(agents_model, input=11, output=3),
        expected_charge(agents_model, input=11, output=3),
    ]
    books_balance()


def test_langchain_chat_openai_with_the_responses_api(
    alice, alice_key, openai_channel, relay_url, mock_upstream, books_balance
):
    chat = ChatOpenAI(
        model="gpt-4o",
        base_url=f"{relay_url}/v1",
        api_key=alice_key,
        use_responses_api=True,
        max_retries=0,
    )
    answer = chat.invoke("Say hello")
    streamed = "".join(chunk.text for chunk in chat.stream("Say hello again"))

    assert answer.text == "hello hello hello "
    assert streamed == "hello hello hello "
    assert [request["path"] for request in mock_upstream.requests] == ["/v1/responses"] * 2
    logs = settled_usage(2)
    assert [log.is_stream for log in logs] == [False, True]
    assert all(log.quota == expected_charge("gpt-4o", input=11, output=3) for log in logs)
    books_balance()


def test_langchain_chat_openai_with_reasoning_goes_through_responses(
    alice, alice_key, relay_url, mock_upstream, books_balance
):
    add_channel(mock_upstream.url, name="gpt-5", models=("gpt-5",))
    mock_upstream.script(
        {"usage": {"output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 37}}}
    )
    chat = ChatOpenAI(
        model="gpt-5",
        base_url=f"{relay_url}/v1",
        api_key=alice_key,
        reasoning={"effort": "low", "summary": "auto"},
        max_retries=0,
    )
    answer = chat.invoke("Think, then say hello")

    assert answer.text == "hello hello hello "
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/responses"
    assert sent["json"]["reasoning"] == {"effort": "low", "summary": "auto"}
    [log] = settled_usage()
    assert (log.input_tokens, log.output_tokens, log.reasoning_tokens) == (11, 40, 37)
    assert log.quota == expected_charge("gpt-5", input=11, output=40)
    books_balance()
