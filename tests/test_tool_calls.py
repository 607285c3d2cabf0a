"""A tool round trip on every route: an OpenAI or Anthropic client, served by a channel of
either type, plain and streamed, through the official SDKs, billed once per call.

The mock upstream calls its first tool (``get_weather`` with ``{"city": "Paris"}``) when the
conversation ends with the user asking about the weather, and answers with text once the
tool's result comes back; its call id tells which upstream format answered.
"""

import json
from dataclasses import dataclass

import pytest

from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import settled_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
RESULT = "Sunny, 21C"
PARIS = {"city": "Paris"}  # the arguments the mock always calls the tool with
PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}}
# The same tool in each format, keyed by format ("openai", "anthropic").
TOOL = {
    "openai": {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": PARAMETERS,
        },
    },
    "anthropic": {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": PARAMETERS,
    },
}
MODEL = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5"}  # by channel type
UPSTREAM_CALL_ID = {"openai": "call_mock1", "anthropic": "toolu_mock1"}  # by channel type
TOOL_STOP = {"openai": "tool_calls", "anthropic": "tool_use"}  # by client format
TEXT_STOP = {"openai": "stop", "anthropic": "end_turn"}  # by client format

# (client format, channel type): native both ways, converted both ways.
ROUTES = [
    pytest.param("openai", "openai", id="openai-client-openai-channel"),
    pytest.param("openai", "anthropic", id="openai-client-anthropic-channel"),
    pytest.param("anthropic", "openai", id="anthropic-client-openai-channel"),
    pytest.param("anthropic", "anthropic", id="anthropic-client-anthropic-channel"),
]


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the client saw it, whatever its format."""

    id: str
    name: str
    input: dict
    stop: str


class OpenAIClient:
    def __init__(self, client):
        self.client = client

    def ask(self, model: str) -> tuple[ToolCall, list]:
        """The tool call, and the conversation that sends its result back."""
        answer = self.client.chat.completions.create(
            model=model, messages=WEATHER, tools=[TOOL["openai"]]
        )
        choice = answer.choices[0]
        [call] = choice.message.tool_calls
        assert call.type == "function"
        history = [
            *WEATHER,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": RESULT},
        ]
        found = ToolCall(
            call.id, call.function.name, json.loads(call.function.arguments), choice.finish_reason
        )
        return found, history

    def follow_up(self, model: str, history: list) -> tuple[str, str]:
        answer = self.client.chat.completions.create(
            model=model, messages=history, tools=[TOOL["openai"]]
        )
        return answer.choices[0].message.content, answer.choices[0].finish_reason

    def stream(self, model: str) -> ToolCall:
        chunks = list(
            self.client.chat.completions.create(
                model=model, messages=WEATHER, tools=[TOOL["openai"]], stream=True
            )
        )
        deltas = [
            chunk.choices[0].delta.tool_calls[0]
            for chunk in chunks
            if chunk.choices and chunk.choices[0].delta.tool_calls
        ]
        first = deltas[0]
        assert first.index == 0 and first.type == "function"
        arguments = "".join(delta.function.arguments or "" for delta in deltas)
        stop = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        return ToolCall(first.id, first.function.name, json.loads(arguments), stop)


class AnthropicClient:
    def __init__(self, client):
        self.client = client

    def ask(self, model: str) -> tuple[ToolCall, list]:
        message = self.client.messages.create(
            model=model, max_tokens=256, tools=[TOOL["anthropic"]], messages=WEATHER
        )
        [call] = message.content
        assert call.type == "tool_use"
        history = [
            *WEATHER,
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": RESULT}],
            },
        ]
        return ToolCall(call.id, call.name, call.input, message.stop_reason), history

    def follow_up(self, model: str, history: list) -> tuple[str, str]:
        message = self.client.messages.create(
            model=model, max_tokens=256, tools=[TOOL["anthropic"]], messages=history
        )
        return message.content[0].text, message.stop_reason

    def stream(self, model: str) -> ToolCall:
        with self.client.messages.stream(
            model=model, max_tokens=256, tools=[TOOL["anthropic"]], messages=WEATHER
        ) as stream:
            fragments = [event.partial_json for event in stream if event.type == "input_json"]
            final = stream.get_final_message()
        [call] = final.content
        assert call.type == "tool_use"
        assert json.loads("".join(fragments)) == call.input
        assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 3)
        return ToolCall(call.id, call.name, call.input, final.stop_reason)


def client_for(request, client_format: str, channel_type: str, key: str):
    """The route's client with ``key``, after creating the route's channel."""
    request.getfixturevalue(f"{channel_type}_channel")
    if client_format == "openai":
        return OpenAIClient(request.getfixturevalue("make_openai")(key))
    return AnthropicClient(request.getfixturevalue("make_anthropic")(key))


def sent_back(channel_type: str, call_id: str, messages: list) -> None:
    """The upstream got the call and its result in its own format."""
    if channel_type == "anthropic":
        tool_use = {"type": "tool_use", "id": call_id, "name": "get_weather", "input": PARIS}
        assert messages[1] == {"role": "assistant", "content": [tool_use]}
        assert messages[2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": RESULT}],
        }
    else:
        [call] = messages[1]["tool_calls"]
        assert messages[1]["role"] == "assistant"
        assert (call["id"], call["type"], call["function"]["name"]) == (
            call_id,
            "function",
            "get_weather",
        )
        assert json.loads(call["function"]["arguments"]) == PARIS
        assert messages[2] == {"role": "tool", "tool_call_id": call_id, "content": RESULT}


@pytest.mark.parametrize(("client_format", "channel_type"), ROUTES)
def test_a_tool_is_called_and_its_result_goes_back_to_the_upstream(
    request, client_format, channel_type, alice, alice_key, mock_upstream, books_balance
):
    client = client_for(request, client_format, channel_type, alice_key)
    model = MODEL[channel_type]

    call, history = client.ask(model)
    assert call == ToolCall(
        UPSTREAM_CALL_ID[channel_type], "get_weather", PARIS, TOOL_STOP[client_format]
    )
    assert mock_upstream.requests[-1]["json"]["tools"] == [TOOL[channel_type]]

    text, stop = client.follow_up(model, history)
    assert (text, stop) == ("hello hello hello ", TEXT_STOP[client_format])
    sent_back(channel_type, call.id, mock_upstream.requests[-1]["json"]["messages"])
    assert_billed_once_each(2)
    books_balance()


@pytest.mark.parametrize(("client_format", "channel_type"), ROUTES)
def test_a_streamed_tool_call_arrives_whole_and_is_billed_once(
    request, client_format, channel_type, alice, alice_key, books_balance
):
    client = client_for(request, client_format, channel_type, alice_key)
    model = MODEL[channel_type]

    call = client.stream(model)

    assert call == ToolCall(
        UPSTREAM_CALL_ID[channel_type], "get_weather", PARIS, TOOL_STOP[client_format]
    )
    [log] = settled_usage()
    assert log.is_stream and (log.input_tokens, log.output_tokens) == (11, 3)
    assert log.quota == expected_charge(model, input=11, output=3)
    assert_billed_once_each(1)
    books_balance()
