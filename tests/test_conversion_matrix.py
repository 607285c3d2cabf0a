"""Every client format against every channel type, whole answers and streams: the OpenAI Chat,
OpenAI Responses, Anthropic Messages and Gemini generateContent formats, each served by an
OpenAI, an Anthropic and a Gemini channel (natively or through the hub), over real HTTP.

One call with a system prompt and the sampling fields (output limit, temperature, top_p, stop
sequences where the client's format has them) checks that each reached the upstream in its own
spelling, that the text came back with a "stopped" reason and the upstream's usage, and that the
call was billed once from that usage. One call with a tool checks the tool definition's way to
the upstream and the tool call's way back, its arguments streamed as deltas where the upstream
streams them so. The formats' own tests (test_responses, test_gemini, test_conversion_calls,
test_conversions) go deeper into each pair.
"""

import json

import httpx
import pytest

from billing.models import Hold, UsageLog
from billing.operations import UsageFlag
from tests.charges import assert_billed_once_each, expected_charge
from tests.conftest import add_channel, settled_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

MODELS = {"openai": "gpt-4o", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
CLIENTS = ("chat", "responses", "messages", "gemini")
SYSTEM = "You are terse."
LIMIT, TEMPERATURE, TOP_P, STOP = 50, 0.5, 0.9, "END"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
MATRIX = [
    pytest.param(
        client, channel, stream, id=f"{client}-{channel}-{'stream' if stream else 'whole'}"
    )
    for client in CLIENTS
    for channel in MODELS
    for stream in (False, True)
]


@pytest.fixture
def channel_of(mock_upstream, db):
    def make(kind: str):
        return add_channel(mock_upstream.url, type=kind, models=(MODELS[kind],))

    return make


# --- What each client sends ---------------------------------------------------------------------


def request_for(client: str, model: str, stream: bool, prompt: str, tool: bool) -> tuple:
    """(path, JSON body) of a call in the client's format."""
    if client == "chat":
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": LIMIT,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "stop": [STOP],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if tool:
            body["tools"] = [
                {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
            ]
        return "/v1/chat/completions", body
    if client == "responses":
        body = {
            "model": model,
            "instructions": SYSTEM,
            "input": prompt,
            "max_output_tokens": LIMIT,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "stream": stream,
        }
        if tool:
            body["tools"] = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
        return "/v1/responses", body
    if client == "messages":
        body = {
            "model": model,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": LIMIT,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "stop_sequences": [STOP],
            "stream": stream,
        }
        if tool:
            body["tools"] = [{"name": "get_weather", "input_schema": SCHEMA}]
        return "/v1/messages", body
    body = {
        "systemInstruction": {"parts": [{"text": SYSTEM}]},
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {
            "maxOutputTokens": LIMIT,
            "temperature": TEMPERATURE,
            "topP": TOP_P,
            "stopSequences": [STOP],
        },
    }
    if tool:
        declaration = {"name": "get_weather", "parameters": SCHEMA}
        body["tools"] = [{"functionDeclarations": [declaration]}]
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{model}:{method}", body


# --- What the upstream got, in its own spelling ------------------------------------------------


def _texts(parts) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(part.get("text", "") for part in parts or [])


def upstream_fields(channel: str, sent: dict) -> dict:
    body = sent["json"]
    if channel == "gemini":
        config = body.get("generationConfig", {})
        return {
            "system": _texts(body.get("systemInstruction", {}).get("parts")),
            "limit": config.get("maxOutputTokens"),
            "temperature": config.get("temperature"),
            "top_p": config.get("topP"),
            "stop": config.get("stopSequences"),
            "tools": [d["name"] for t in body.get("tools", []) for d in t["functionDeclarations"]],
        }
    if channel == "anthropic":
        return {
            "system": _texts(body.get("system")),
            "limit": body.get("max_tokens"),
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "stop": body.get("stop_sequences"),
            "tools": [tool["name"] for tool in body.get("tools", [])],
        }
    if sent["path"] == "/v1/responses":
        return {
            "system": body.get("instructions"),
            "limit": body.get("max_output_tokens"),
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "stop": None,
            "tools": [tool["name"] for tool in body.get("tools", [])],
        }
    system = [m for m in body["messages"] if m["role"] in ("system", "developer")]
    stop = body.get("stop")
    return {
        "system": "".join(_texts(m["content"]) for m in system),
        "limit": body.get("max_completion_tokens", body.get("max_tokens")),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": [stop] if isinstance(stop, str) else stop,
        "tools": [tool["function"]["name"] for tool in body.get("tools", [])],
    }


UPSTREAM_PATHS = {
    "anthropic": {"/v1/messages"},
    "openai": {"/v1/chat/completions", "/v1/responses"},
}


# --- What the client got back, read in its format ----------------------------------------------


def sse_payloads(text: str) -> list:
    payloads = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            payloads.append(json.loads(line[5:]))
    return payloads


def read_answer(client: str, stream: bool, response: httpx.Response) -> dict:
    """text, finish ("stop" or "tool"), tool (name), arguments (joined), pieces (argument
    deltas), input and output (usage)."""
    got = {"text": "", "finish": None, "tool": None, "arguments": "", "pieces": 0}
    got |= {"input": None, "output": None}
    if client == "chat":
        chunks = sse_payloads(response.text) if stream else [response.json()]
        for chunk in chunks:
            for choice in chunk.get("choices") or []:
                part = choice.get("delta") if stream else choice["message"]
                got["text"] += part.get("content") or ""
                for call in part.get("tool_calls") or []:
                    got["tool"] = call["function"].get("name") or got["tool"]
                    if call["function"].get("arguments"):
                        got["arguments"] += call["function"]["arguments"]
                        got["pieces"] += 1
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
                    got["finish"] = {"stop": "stop", "tool_calls": "tool"}.get(reason, reason)
            if chunk.get("usage"):
                got["input"] = chunk["usage"]["prompt_tokens"]
                got["output"] = chunk["usage"]["completion_tokens"]
        return got
    if client == "responses":
        if stream:
            events = sse_payloads(response.text)
            for event in events:
                if event["type"] == "response.output_text.delta":
                    got["text"] += event["delta"]
                elif event["type"] == "response.function_call_arguments.delta":
                    got["arguments"] += event["delta"]
                    got["pieces"] += 1
            [done] = [e["response"] for e in events if e["type"] == "response.completed"]
        else:
            done = response.json()
            for item in done["output"]:
                if item["type"] == "message":
                    got["text"] += _texts(item["content"])
                elif item["type"] == "function_call":
                    got["arguments"] += item["arguments"]
        calls = [item for item in done["output"] if item["type"] == "function_call"]
        if calls:
            got["tool"], got["finish"] = calls[0]["name"], "tool"
        elif done["status"] == "completed":
            got["finish"] = "stop"
        got["input"], got["output"] = done["usage"]["input_tokens"], done["usage"]["output_tokens"]
        return got
    if client == "messages":
        if stream:
            for event in sse_payloads(response.text):
                if event["type"] == "message_start":
                    got["input"] = event["message"]["usage"]["input_tokens"]
                elif event["type"] == "content_block_start":
                    if event["content_block"]["type"] == "tool_use":
                        got["tool"] = event["content_block"]["name"]
                elif event["type"] == "content_block_delta":
                    delta = event["delta"]
                    if delta["type"] == "text_delta":
                        got["text"] += delta["text"]
                    elif delta["type"] == "input_json_delta" and delta["partial_json"]:
                        got["arguments"] += delta["partial_json"]
                        got["pieces"] += 1
                elif event["type"] == "message_delta":
                    reason = event["delta"]["stop_reason"]
                    got["output"] = event["usage"]["output_tokens"]
                    # Cumulative, as Anthropic's API sends them: a converted stream learns the
                    # input count only at its end, after message_start said 0.
                    got["input"] = event["usage"].get("input_tokens", got["input"])
                    got["finish"] = {"end_turn": "stop", "tool_use": "tool"}.get(reason, reason)
            return got
        message = response.json()
        for block in message["content"]:
            if block["type"] == "text":
                got["text"] += block["text"]
            elif block["type"] == "tool_use":
                got["tool"], got["arguments"] = block["name"], json.dumps(block["input"])
        reason = message["stop_reason"]
        got["finish"] = {"end_turn": "stop", "tool_use": "tool"}.get(reason, reason)
        got["input"] = message["usage"]["input_tokens"]
        got["output"] = message["usage"]["output_tokens"]
        return got
    chunks = sse_payloads(response.text) if stream else [response.json()]
    for chunk in chunks:
        for candidate in chunk.get("candidates") or []:
            for part in candidate.get("content", {}).get("parts", []):
                got["text"] += part.get("text", "")
                if "functionCall" in part:
                    got["tool"] = part["functionCall"]["name"]
                    got["arguments"] += json.dumps(part["functionCall"]["args"])
                    got["pieces"] += 1
            if candidate.get("finishReason"):
                got["finish"] = "tool" if got["tool"] else candidate["finishReason"].lower()
        if chunk.get("usageMetadata"):
            got["input"] = chunk["usageMetadata"]["promptTokenCount"]
            got["output"] = chunk["usageMetadata"].get("candidatesTokenCount")
    return got


def call(relay_url: str, key: str, client: str, path: str, body: dict) -> httpx.Response:
    headers = {"x-goog-api-key": key} if client == "gemini" else {"Authorization": f"Bearer {key}"}
    response = httpx.post(f"{relay_url}{path}", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response


# --- The matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("client", "channel", "stream"), MATRIX)
def test_text_with_a_system_prompt_and_sampling_fields(
    client, channel, stream, alice, alice_key, channel_of, relay_url, mock_upstream, books_balance
):
    channel_of(channel)
    model = MODELS[channel]
    path, body = request_for(client, model, stream, "Say hello", tool=False)

    got = read_answer(client, stream, call(relay_url, alice_key, client, path, body))

    assert (got["text"], got["finish"]) == ("hello hello hello ", "stop")
    assert (got["input"], got["output"]) == (11, 3)
    [sent] = mock_upstream.requests
    if channel == "gemini":
        assert sent["path"].startswith(f"/v1beta/models/{model}:")
        assert sent["path"].endswith("streamGenerateContent" if stream else "generateContent")
    else:
        assert sent["path"] in UPSTREAM_PATHS[channel]
        assert bool(sent["json"].get("stream")) == stream
    fields = upstream_fields(channel, sent)
    assert fields["system"] == SYSTEM
    assert (fields["limit"], fields["temperature"], fields["top_p"]) == (LIMIT, TEMPERATURE, TOP_P)
    # Stop sequences travel where both formats have them (the Responses API has none).
    native_responses = sent["path"] == "/v1/responses"
    expected_stop = None if client == "responses" or native_responses else [STOP]
    assert fields["stop"] == expected_stop
    [log] = settled_usage()
    assert (log.model, log.is_stream, log.input_tokens, log.output_tokens) == (model, stream, 11, 3)
    assert log.quota == expected_charge(model, input=11, output=3)
    assert_billed_once_each(1)
    books_balance()


@pytest.mark.parametrize(("client", "channel", "stream"), MATRIX)
def test_a_tool_call_and_its_streamed_arguments(
    client, channel, stream, alice, alice_key, channel_of, relay_url, mock_upstream, books_balance
):
    channel_of(channel)
    model = MODELS[channel]
    path, body = request_for(client, model, stream, "What is the weather in Paris?", tool=True)

    got = read_answer(client, stream, call(relay_url, alice_key, client, path, body))

    assert (got["tool"], got["finish"]) == ("get_weather", "tool")
    assert json.loads(got["arguments"]) == {"city": "Paris"}
    if stream and channel != "gemini" and client != "gemini":
        # Arguments arrive in pieces as the upstream streams them (Gemini sends a whole call).
        assert got["pieces"] > 1
    [sent] = mock_upstream.requests
    assert upstream_fields(channel, sent)["tools"] == ["get_weather"]
    [log] = settled_usage()
    assert log.quota == expected_charge(model, input=log.input_tokens, output=log.output_tokens)
    assert log.input_tokens == 11 and log.output_tokens > 0
    assert_billed_once_each(1)
    books_balance()


# --- Structured output -------------------------------------------------------------------------

# Google's OpenAPI-style schema (upper-case types), the spelling google-genai sends.
GEMINI_SCHEMA = {
    "type": "OBJECT",
    "properties": {"city": {"type": "STRING"}},
    "required": ["city"],
}
JSON_MODE = [
    pytest.param(client, channel, stream, mode, id=f"{client}-{channel}-{mode}-{kind}")
    for client in CLIENTS
    for channel in MODELS
    for stream, kind in ((False, "whole"), (True, "stream"))
    # Anthropic's format has no JSON mode without a schema.
    for mode in (("schema",) if client == "messages" else ("schema", "json"))
]


def with_output_format(client: str, body: dict, mode: str) -> dict:
    """The request asking for JSON output: following SCHEMA ("schema") or any JSON ("json")."""
    if client == "chat":
        body["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}
            if mode == "schema"
            else {"type": "json_object"}
        )
    elif client == "responses":
        body["text"] = {
            "format": {"type": "json_schema", "name": "weather", "schema": SCHEMA}
            if mode == "schema"
            else {"type": "json_object"}
        }
    elif client == "messages":
        body["output_config"] = {"format": {"type": "json_schema", "schema": SCHEMA}}
    else:
        body["generationConfig"]["responseMimeType"] = "application/json"
        if mode == "schema":
            body["generationConfig"]["responseSchema"] = GEMINI_SCHEMA
    return body


def upstream_output_format(channel: str, sent: dict) -> tuple:
    """("schema", the schema) or ("json", None) as the upstream got it, or None."""
    body = sent["json"]
    if channel == "gemini":
        config = body.get("generationConfig", {})
        if config.get("responseMimeType") != "application/json":
            return None
        schema = config.get("responseJsonSchema", config.get("responseSchema"))
        return ("json", None) if schema is None else ("schema", schema)
    if channel == "anthropic":
        output_format = body.get("output_config", {}).get("format")
        return output_format and ("schema", output_format["schema"])
    if sent["path"] == "/v1/responses":
        output_format = body.get("text", {}).get("format")
    else:
        output_format = body.get("response_format")
    if output_format is None:
        return None
    if output_format["type"] == "json_object":
        return ("json", None)
    assert output_format["type"] == "json_schema"
    return ("schema", output_format.get("schema") or output_format["json_schema"]["schema"])


def error_message(response: httpx.Response) -> str:
    body = response.json()
    return body["error"]["message"]


@pytest.mark.parametrize(("client", "channel", "stream", "mode"), JSON_MODE)
def test_json_output_reaches_the_upstream_in_its_spelling_or_is_refused(
    client,
    channel,
    stream,
    mode,
    alice,
    alice_key,
    channel_of,
    relay_url,
    mock_upstream,
    books_balance,
):
    channel_of(channel)
    model = MODELS[channel]
    path, body = request_for(client, model, stream, "Where is the Louvre?", tool=False)
    body = with_output_format(client, body, mode)
    headers = {"x-goog-api-key": alice_key} if client == "gemini" else {}
    headers |= {} if client == "gemini" else {"Authorization": f"Bearer {alice_key}"}

    response = httpx.post(f"{relay_url}{path}", json=body, headers=headers, timeout=30)

    if mode == "json" and channel == "anthropic":
        # Anthropic constrains output only to a schema: JSON mode is refused, never dropped.
        assert response.status_code == 400, response.text
        message = error_message(response)
        assert "json_object" in message and "responseMimeType" in message
        assert mock_upstream.requests == []
        # Logged as a failed call, charged nothing; the hold went back.
        rows = list(UsageLog.objects.values_list("status", "quota", "error"))
        assert rows == [("failed", 0, "invalid_request")]
        assert list(Hold.objects.values_list("status", flat=True)) == [Hold.Status.RELEASED]
        books_balance()
        return
    assert response.status_code == 200, response.text
    got = read_answer(client, stream, response)
    assert (got["text"], got["finish"]) == ("hello hello hello ", "stop")
    [sent] = mock_upstream.requests
    native_gemini = client == "gemini" and channel == "gemini"
    expected_schema = GEMINI_SCHEMA if native_gemini else SCHEMA
    expected = ("schema", expected_schema) if mode == "schema" else ("json", None)
    assert upstream_output_format(channel, sent) == expected
    [log] = settled_usage()
    assert log.quota == expected_charge(model, input=11, output=3)
    assert_billed_once_each(1)
    books_balance()


# --- Images in the input -----------------------------------------------------------------------

IMAGE_URL = "https://images.example/cat.png"
# A 1x1 PNG.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Er"
    "kJggg=="
)
IMAGES = [
    pytest.param(client, channel, stream, source, id=f"{client}-{channel}-{source}-{kind}")
    for client in CLIENTS
    for channel in MODELS
    for stream, kind in ((False, "whole"), (True, "stream"))
    for source in ("url", "base64")
]


def with_image(client: str, body: dict, source: str) -> dict:
    """The request's user turn with the image after its text, in the client's spelling."""
    url = IMAGE_URL if source == "url" else f"data:image/png;base64,{PNG_BASE64}"
    if client == "chat":
        image = {"type": "image_url", "image_url": {"url": url}}
        turn = body["messages"][-1]
        turn["content"] = [{"type": "text", "text": turn["content"]}, image]
    elif client == "responses":
        image = {"type": "input_image", "image_url": url}
        text = {"type": "input_text", "text": body["input"]}
        body["input"] = [{"role": "user", "content": [text, image]}]
    elif client == "messages":
        image = {
            "type": "image",
            "source": {"type": "url", "url": IMAGE_URL}
            if source == "url"
            else {"type": "base64", "media_type": "image/png", "data": PNG_BASE64},
        }
        turn = body["messages"][-1]
        turn["content"] = [{"type": "text", "text": turn["content"]}, image]
    else:
        image = (
            {"fileData": {"mimeType": "image/png", "fileUri": IMAGE_URL}}
            if source == "url"
            else {"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}
        )
        body["contents"][-1]["parts"].append(image)
    return body


def upstream_images(channel: str, sent: dict) -> list:
    """Each image the upstream got: ("url", url) or ("base64", media type, data)."""
    body = sent["json"]
    found = []
    if channel == "gemini":
        for content in body["contents"]:
            for part in content["parts"]:
                if "fileData" in part:
                    assert part["fileData"]["mimeType"] == "image/png"
                    found.append(("url", part["fileData"]["fileUri"]))
                elif "inlineData" in part:
                    inline = part["inlineData"]
                    found.append(("base64", inline["mimeType"], inline["data"]))
        return found
    if channel == "anthropic":
        for message in body["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block["type"] == "image":
                    source = block["source"]
                    if source["type"] == "url":
                        found.append(("url", source["url"]))
                    else:
                        found.append(("base64", source["media_type"], source["data"]))
        return found
    if sent["path"] == "/v1/responses":
        messages, kind = body["input"], "input_image"
    else:
        messages, kind = body["messages"], "image_url"
    for message in messages:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part["type"] == kind:
                url = part["image_url"] if kind == "input_image" else part["image_url"]["url"]
                if url.startswith("data:"):
                    media_type, data = url[5:].split(";base64,")
                    found.append(("base64", media_type, data))
                else:
                    found.append(("url", url))
    return found


@pytest.mark.parametrize(("client", "channel", "stream", "source"), IMAGES)
def test_an_image_in_the_input_reaches_the_upstream_in_its_spelling(
    client,
    channel,
    stream,
    source,
    alice,
    alice_key,
    channel_of,
    relay_url,
    mock_upstream,
    books_balance,
):
    channel_of(channel)
    model = MODELS[channel]
    path, body = request_for(client, model, stream, "What is in this picture?", tool=False)

    got = read_answer(
        client, stream, call(relay_url, alice_key, client, path, with_image(client, body, source))
    )

    assert (got["text"], got["finish"]) == ("hello hello hello ", "stop")
    [sent] = mock_upstream.requests
    expected = ("url", IMAGE_URL) if source == "url" else ("base64", "image/png", PNG_BASE64)
    assert upstream_images(channel, sent) == [expected]
    [log] = settled_usage()
    assert log.quota == expected_charge(model, input=11, output=3)
    assert_billed_once_each(1)
    books_balance()


# --- Usage with cached and reasoning tokens ----------------------------------------------------

# One call's usage in each upstream's own accounting: 100 input tokens of which 40 read from the
# cache, 30 output tokens of which 20 reasoning. Anthropic counts cache reads apart from
# input_tokens and reports no reasoning figure; Gemini counts thoughts apart from candidates.
REPORTED = {
    "chat": {
        "prompt_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens": 30,
        "completion_tokens_details": {"reasoning_tokens": 20},
    },
    "responses": {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 20},
    },
    "anthropic": {"input_tokens": 60, "cache_read_input_tokens": 40, "output_tokens": 30},
    "gemini": {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 40,
        "candidatesTokenCount": 10,
        "thoughtsTokenCount": 20,
    },
}


def client_usage(client: str, stream: bool, response: httpx.Response) -> tuple:
    """(input with cached, cached, output with reasoning, reasoning) as the client was told."""
    if client == "chat":
        chunks = sse_payloads(response.text) if stream else [response.json()]
        usage = [chunk["usage"] for chunk in chunks if chunk.get("usage")][-1]
        return (
            usage["prompt_tokens"],
            usage["prompt_tokens_details"]["cached_tokens"],
            usage["completion_tokens"],
            # Optional in OpenAI's usage: absent when the upstream gave no reasoning figure.
            (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0),
        )
    if client == "responses":
        if stream:
            events = sse_payloads(response.text)
            [usage] = [e["response"]["usage"] for e in events if e["type"] == "response.completed"]
        else:
            usage = response.json()["usage"]
        return (
            usage["input_tokens"],
            usage["input_tokens_details"]["cached_tokens"],
            usage["output_tokens"],
            usage["output_tokens_details"]["reasoning_tokens"],
        )
    if client == "messages":
        if stream:
            usage = {}
            for event in sse_payloads(response.text):
                if event["type"] == "message_start":
                    usage |= event["message"]["usage"]
                elif event["type"] == "message_delta":
                    usage |= event["usage"]
        else:
            usage = response.json()["usage"]
        cached = usage.get("cache_read_input_tokens") or 0
        # Anthropic's format has no reasoning figure.
        return (usage["input_tokens"] + cached, cached, usage["output_tokens"], None)
    chunks = sse_payloads(response.text) if stream else [response.json()]
    usage = [chunk["usageMetadata"] for chunk in chunks if chunk.get("usageMetadata")][-1]
    thoughts = usage.get("thoughtsTokenCount", 0)
    return (
        usage["promptTokenCount"],
        usage.get("cachedContentTokenCount", 0),
        usage["candidatesTokenCount"] + thoughts,
        thoughts,
    )


@pytest.mark.parametrize(("client", "channel", "stream"), MATRIX)
def test_cached_and_reasoning_tokens_are_normalized_and_billed(
    client, channel, stream, alice, alice_key, channel_of, relay_url, mock_upstream, books_balance
):
    channel_of(channel)
    model = MODELS[channel]
    path, body = request_for(client, model, stream, "Think, then say hello", tool=False)
    native_responses = client == "responses" and channel == "openai"
    if channel == "openai":
        reported = REPORTED["responses" if native_responses else "chat"]
    else:
        reported = REPORTED[channel]
    mock_upstream.script({"usage": reported})

    response = call(relay_url, alice_key, client, path, body)

    reasoning = 0 if channel == "anthropic" else 20
    told = client_usage(client, stream, response)
    assert told == (100, 40, 30, None if client == "messages" else reasoning)
    [log] = settled_usage()
    assert (log.input_tokens, log.cached_input_tokens) == (60, 40)
    assert (log.output_tokens, log.reasoning_tokens) == (30, reasoning)
    assert log.usage_flag == UsageFlag.TRUSTED
    assert log.quota == expected_charge(model, input=60, cached=40, output=30)
    assert_billed_once_each(1)
    books_balance()
