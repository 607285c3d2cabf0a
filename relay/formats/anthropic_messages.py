"""Anthropic's Messages format, and its conversions to and from the hub (OpenAI's Chat
Completions, relay.formats.openai_chat).

Its error body, its SSE framing and the event that ends a broken stream, the reading of its
usage, the checks on its stream events, the translator that passes its streams through, and
the conversions: requests, whole answers and streams, each way. The conversions are pure:
dicts in, dicts out, no Django and no I/O, so the relay owns parsing, serialization,
model-name mapping and billing.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from billing.pricing import TokenUsage
from relay.formats import openai_chat
from relay.formats.common import (
    STREAM_BROKE_OFF,
    ConversionError,
    Event,
    MalformedUpstream,
    Translator,
    UpstreamStreamError,
    UsageProblem,
    json_object,
    malformed,
    reads_upstream,
    stream_ended_with_error,
    token_count,
    usage_part,
)
from relay.formats.openai_chat import (
    check_openai_chunk,
)
from relay.responses import current_request_id, new_request_id

if TYPE_CHECKING:  # relay.errors renders through this module
    from relay.errors import RelayError

ANTHROPIC_TO_OPENAI_FINISH = {
    "end_turn": "stop",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}

OPENAI_TO_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Anthropic rejects a temperature above 1.0, while OpenAI accepts up to 2.0.
ANTHROPIC_MAX_TEMPERATURE = 1.0

# Separates system messages or text blocks that one side keeps apart and the other needs joined.
REQUEST_TEXT_SEPARATOR = "\n\n"

DATA_URL = re.compile(r"^data:(?P<media_type>[^;,]+)[^,]*;base64,(?P<data>.*)$", re.DOTALL)
# Anthropic only accepts tool_use ids made of these characters; some OpenAI-compatible
# upstreams mint ids such as "functions.get_weather:0".
TOOL_ID_FORBIDDEN = re.compile(r"[^a-zA-Z0-9_-]")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_status(error: RelayError) -> int:
    """Anthropic bills through 402; the OpenAI-side 429 for credit maps onto it."""
    if error.code == "insufficient_quota":
        return 402
    return error.status


def error_body(error: RelayError) -> dict:
    """The error as Anthropic spells it: ``{"type": "error", ...}``, with the id of the request
    being served, the one its ``x-request-id`` header and the refusal log carry."""
    status = error_status(error)
    return {
        "type": "error",
        "error": {
            "type": error.error_type
            if error.error_type and error.error_type in ERROR_TYPES.values()
            else ERROR_TYPES.get(status, "api_error"),
            "message": error.message,
        },
        "request_id": current_request_id() or new_request_id(),
    }


def sse(name: str, data: dict) -> bytes:
    payload = json.dumps(data, separators=(",", ":")).encode()
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def stream_error(error_type: str) -> bytes:
    """The event that ends a broken stream; it keeps the kind of error the upstream named
    (``overloaded_error``...) when it is one of Anthropic's."""
    if error_type not in ERROR_TYPES.values():
        error_type = "api_error"
    return sse(
        "error", {"type": "error", "error": {"type": error_type, "message": STREAM_BROKE_OFF}}
    )


def normalize_anthropic_usage(usage: dict | None) -> TokenUsage | None:
    """Anthropic counts cache reads and writes apart from input_tokens: each is billed.

    Cache writes are split into 5-minute and 1-hour ones when ``cache_creation`` gives the
    breakdown (which is then trusted), otherwise all of them are 5-minute writes. None when
    there is no usage; ``UsageProblem`` when a figure is not a token count.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise UsageProblem("usage is not an object", usage)
    cache_writes = token_count(usage, "cache_creation_input_tokens", usage=usage)
    breakdown = usage_part(usage, "cache_creation")
    if breakdown:
        cache_writes = token_count(breakdown, "ephemeral_5m_input_tokens", usage=usage)
        cache_writes_1h = token_count(breakdown, "ephemeral_1h_input_tokens", usage=usage)
    else:
        cache_writes_1h = 0
    server_tools = usage_part(usage, "server_tool_use")
    return TokenUsage(
        input_tokens=token_count(usage, "input_tokens", usage=usage),
        cached_input_tokens=token_count(usage, "cache_read_input_tokens", usage=usage),
        cache_write_tokens=cache_writes,
        cache_write_1h_tokens=cache_writes_1h,
        output_tokens=token_count(usage, "output_tokens", usage=usage),
        web_search_calls=token_count(server_tools, "web_search_requests", usage=usage),
    )


def map_anthropic_stop_reason(reason: str | None) -> str:
    """Return the OpenAI finish_reason for an Anthropic stop_reason ("stop" if unknown)."""
    return ANTHROPIC_TO_OPENAI_FINISH.get(reason or "", "stop")


def map_openai_finish_reason(reason: str | None) -> str:
    """Return the Anthropic stop_reason for an OpenAI finish_reason ("end_turn" if unknown)."""
    return OPENAI_TO_ANTHROPIC_STOP.get(reason or "", "end_turn")


# --- Requests: OpenAI Chat Completions -> Anthropic Messages ---------------------------------


def openai_chat_to_anthropic(body: dict, *, default_max_tokens: int) -> dict:
    """Convert a Chat Completions request body into a Messages request body.

    The model name is carried over unchanged; fields Anthropic has no use for are dropped;
    ``response_format`` becomes ``output_config.format`` (a JSON schema) or is refused.
    """
    system_texts: list[str] = []
    messages: list[dict] = []
    for message in body.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system_texts.extend(_openai_texts(message.get("content")))
            continue
        if role == "user":
            converted = {
                "role": "user",
                "content": _openai_content_to_blocks(message.get("content")),
            }
        elif role == "assistant":
            converted = _openai_assistant_to_anthropic(message)
        elif role == "tool":
            converted = {"role": "user", "content": [_openai_tool_message_to_result(message)]}
        else:
            raise ConversionError(f"Unsupported message role: {role!r}")
        _append_alternating(messages, converted)

    result: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    system = REQUEST_TEXT_SEPARATOR.join(text for text in system_texts if text)
    if system:
        result["system"] = system
    result["max_tokens"] = _first_present(
        body.get("max_completion_tokens"), body.get("max_tokens"), default_max_tokens
    )

    tools = body.get("tools")
    if tools:
        result["tools"] = [_openai_tool_to_anthropic(tool) for tool in tools]
        tool_choice = _openai_tool_choice_to_anthropic(
            body.get("tool_choice"), body.get("parallel_tool_calls")
        )
        if tool_choice is not None:
            result["tool_choice"] = tool_choice

    stop = body.get("stop")
    if stop:
        # Anthropic refuses stop sequences made only of whitespace.
        sequences = [stop] if isinstance(stop, str) else list(stop)
        sequences = [sequence for sequence in sequences if sequence.strip()]
        if sequences:
            result["stop_sequences"] = sequences
    if body.get("temperature") is not None:
        result["temperature"] = min(body["temperature"], ANTHROPIC_MAX_TEMPERATURE)
    for key in ("top_p", "stream"):
        if body.get(key) is not None:
            result[key] = body[key]
    if body.get("user"):
        result["metadata"] = {"user_id": body["user"]}
    output_format = _anthropic_output_format(body.get("response_format"))
    if output_format is not None:
        result["output_config"] = {"format": output_format}
    return result


def _anthropic_output_format(response_format: Any) -> dict | None:
    """Anthropic's structured output (``output_config.format``) for a hub ``response_format``.

    Anthropic constrains output only to a JSON schema: JSON mode without one has no spelling
    there, so it is refused rather than dropped (the client would get prose it cannot parse).
    """
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return {"type": "json_schema", "schema": schema}
    raise ConversionError(
        "JSON output without a schema (response_format json_object, text.format json_object, "
        "responseMimeType application/json without a responseSchema) cannot be served by "
        "Anthropic, which constrains output only to a JSON schema: send one (json_schema)."
    )


def _hub_response_format(body: dict) -> dict | None:
    """A hub ``response_format`` for Anthropic's structured output: ``output_config.format``
    (the generally available spelling) or the beta's top-level ``output_format``."""
    config = body.get("output_config")
    output_format = config.get("format") if isinstance(config, dict) else None
    if output_format is None:
        output_format = body.get("output_format")
    if output_format is None:
        return None
    kind = output_format.get("type") if isinstance(output_format, dict) else None
    schema = output_format.get("schema") if isinstance(output_format, dict) else None
    if kind != "json_schema" or not isinstance(schema, dict):
        raise ConversionError(
            f"output_config.format of type {kind!r} cannot be converted: only json_schema "
            "with a schema object can."
        )
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def _first_present(*values: Any) -> Any:
    """Return the first value that is not None (0 is a value)."""
    return next(value for value in values if value is not None)


def _append_alternating(messages: list[dict], message: dict) -> None:
    """Append a message, merging it into the previous one when their roles match.

    Anthropic requires user and assistant turns to alternate, while OpenAI allows runs of
    one role (parallel tool results, a tool result followed by a user remark, ...).
    Messages left without content are skipped, since Anthropic rejects empty turns.
    """
    if not message["content"]:
        return
    if messages and messages[-1]["role"] == message["role"]:
        messages[-1]["content"].extend(message["content"])
    else:
        messages.append(message)


def _openai_texts(content: str | list | None) -> list[str]:
    """Return the texts of an OpenAI content that may only hold text (system, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise ConversionError(f"Unsupported content part here: {part.get('type')!r}")
        texts.append(part.get("text", ""))
    return texts


def _openai_content_to_blocks(content: str | list | None) -> list[dict]:
    """Convert OpenAI message content (string or parts) into Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url", "") if isinstance(image_url, dict) else image_url or ""
            blocks.append({"type": "image", "source": _image_source_from_url(url)})
        else:
            raise ConversionError(f"Unsupported content part: {kind!r}")
    return blocks


def _image_source_from_url(url: str) -> dict:
    """Return the Anthropic image source for an OpenAI image URL (data: or http(s):)."""
    if url.startswith("data:"):
        match = DATA_URL.match(url)
        if not match:
            raise ConversionError("Image data URLs must be base64-encoded")
        return {"type": "base64", "media_type": match["media_type"], "data": match["data"]}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise ConversionError("Image URLs must be data: or http(s): URLs")


def _openai_assistant_to_anthropic(message: dict) -> dict:
    """Convert an OpenAI assistant message, tool calls included, into an Anthropic turn."""
    blocks = _openai_content_to_blocks(message.get("content"))
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        blocks.append(
            {
                "type": "tool_use",
                "id": _anthropic_tool_id(call.get("id", "")),
                "name": function.get("name", ""),
                "input": _parse_arguments(function.get("arguments")),
            }
        )
    return {"role": "assistant", "content": blocks}


def _parse_arguments(arguments: str | None) -> dict:
    """Parse a tool call's JSON arguments; anything but a JSON object becomes {}.

    Models occasionally emit truncated or invalid arguments; Anthropic needs an object, and
    failing the whole conversation over one bad historic call would help no one.
    """
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _anthropic_tool_id(tool_id: str) -> str:
    """Make a tool call id acceptable to Anthropic, consistently for call and result."""
    return TOOL_ID_FORBIDDEN.sub("_", tool_id) or "toolu_missing"


def _openai_tool_message_to_result(message: dict) -> dict:
    """Convert an OpenAI `tool` message into an Anthropic tool_result block."""
    return {
        "type": "tool_result",
        "tool_use_id": _anthropic_tool_id(message.get("tool_call_id", "")),
        "content": REQUEST_TEXT_SEPARATOR.join(_openai_texts(message.get("content"))),
    }


def _openai_tool_to_anthropic(tool: dict) -> dict:
    """Convert an OpenAI function tool into an Anthropic custom tool."""
    if tool.get("type") != "function":
        raise ConversionError(f"Unsupported tool type: {tool.get('type')!r}")
    function = tool["function"]
    converted = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _openai_tool_choice_to_anthropic(
    tool_choice: str | dict | None, parallel_tool_calls: bool | None
) -> dict | None:
    """Convert an OpenAI tool_choice (and parallel_tool_calls) into an Anthropic tool_choice.

    Returns None when Anthropic's default (auto, parallel calls allowed) already matches.
    """
    if tool_choice is None and parallel_tool_calls is not False:
        return None
    converted: dict[str, Any]
    if tool_choice is None or tool_choice == "auto":
        converted = {"type": "auto"}
    elif tool_choice == "none":
        # Keeping the tools (rather than dropping them) keeps earlier tool_use blocks valid.
        return {"type": "none"}
    elif tool_choice == "required":
        converted = {"type": "any"}
    elif isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        converted = {"type": "tool", "name": tool_choice["function"]["name"]}
    else:
        raise ConversionError(f"Unsupported tool_choice: {tool_choice!r}")
    if parallel_tool_calls is False:
        converted["disable_parallel_tool_use"] = True
    return converted


# --- Requests: Anthropic Messages -> OpenAI Chat Completions ---------------------------------


def anthropic_to_openai_chat(body: dict) -> dict:
    """Convert a Messages request body into a Chat Completions request body.

    The model name is carried over unchanged; `thinking`, `metadata` and `top_k` are dropped;
    structured output (`output_config.format`, the beta's `output_format`) becomes
    `response_format`.
    """
    messages: list[dict] = []
    system = body.get("system")
    if system:
        if not isinstance(system, str):
            system = REQUEST_TEXT_SEPARATOR.join(block.get("text", "") for block in system)
        messages.append({"role": "system", "content": system})
    for message in body.get("messages", []):
        if message.get("role") == "assistant":
            assistant = _anthropic_assistant_to_openai(message.get("content"))
            # A turn that held only reasoning has nothing left, and OpenAI rejects it empty.
            if assistant["content"] is not None or "tool_calls" in assistant:
                messages.append(assistant)
        else:
            messages.extend(_anthropic_user_to_openai(message.get("content")))

    result: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        result["max_tokens"] = body["max_tokens"]
    if body.get("tools"):
        result["tools"] = [_anthropic_tool_to_openai(tool) for tool in body["tools"]]
        tool_choice = body.get("tool_choice")
        if tool_choice:
            result["tool_choice"] = _anthropic_tool_choice_to_openai(tool_choice)
            if tool_choice.get("disable_parallel_tool_use"):
                result["parallel_tool_calls"] = False
    if body.get("stop_sequences"):
        result["stop"] = body["stop_sequences"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            result[key] = body[key]
    response_format = _hub_response_format(body)
    if response_format is not None:
        result["response_format"] = response_format
    if body.get("stream"):
        result["stream"] = True
        # Without it an OpenAI stream carries no usage at all, and the relay bills from it.
        result["stream_options"] = {"include_usage": True}
    return result


def _anthropic_blocks(content: str | list | None) -> list[dict]:
    """Return Anthropic content as a list of blocks (a plain string is one text block)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content


def _anthropic_user_to_openai(content: str | list | None) -> list[dict]:
    """Convert an Anthropic user turn into OpenAI `tool` messages followed by a user message.

    OpenAI wants tool results right after the assistant message that made the calls, so they
    come first. Tool messages only hold text, so images inside a tool result move into the
    user message that follows.
    """
    tool_messages: list[dict] = []
    parts: list[dict] = []
    for block in _anthropic_blocks(content):
        if block.get("type") == "tool_result":
            texts = []
            for inner in _anthropic_blocks(block.get("content")):
                if inner.get("type") == "text":
                    texts.append(inner.get("text", ""))
                else:
                    parts.append(_anthropic_block_to_openai_part(inner))
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id", ""),
                    "content": REQUEST_TEXT_SEPARATOR.join(texts),
                }
            )
        else:
            parts.append(_anthropic_block_to_openai_part(block))
    if not parts:
        return tool_messages
    # Many OpenAI-compatible upstreams only accept string content, so text-only turns stay text.
    if all(part["type"] == "text" for part in parts):
        user_content: str | list = REQUEST_TEXT_SEPARATOR.join(part["text"] for part in parts)
    else:
        user_content = parts
    return [*tool_messages, {"role": "user", "content": user_content}]


def _anthropic_block_to_openai_part(block: dict) -> dict:
    """Convert an Anthropic text or image block into an OpenAI content part."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        source = block.get("source", {})
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = source.get("url", "")
        else:
            raise ConversionError(f"Unsupported image source: {source.get('type')!r}")
        return {"type": "image_url", "image_url": {"url": url}}
    raise ConversionError(f"Unsupported content block: {kind!r}")


def _anthropic_assistant_to_openai(content: str | list | None) -> dict:
    """Convert an Anthropic assistant turn into one OpenAI assistant message."""
    texts: list[str] = []
    tool_calls: list[dict] = []
    for block in _anthropic_blocks(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            # Signed reasoning only means something to Anthropic; other models ignore it.
            continue
        else:
            raise ConversionError(f"Unsupported assistant content block: {kind!r}")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": REQUEST_TEXT_SEPARATOR.join(texts) if texts else None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _anthropic_tool_to_openai(tool: dict) -> dict:
    """Convert an Anthropic custom tool into an OpenAI function tool."""
    if "input_schema" not in tool:
        # Server tools (web search, code execution, ...) run inside Anthropic only.
        raise ConversionError(f"Unsupported tool: {tool.get('type') or tool.get('name')!r}")
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _anthropic_tool_choice_to_openai(tool_choice: dict) -> str | dict:
    """Convert an Anthropic tool_choice into an OpenAI tool_choice."""
    kind = tool_choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": tool_choice["name"]}}
    simple = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in simple:
        raise ConversionError(f"Unsupported tool_choice: {kind!r}")
    return simple[kind]


# --- Responses --------------------------------------------------------------------------------


def _figure(usage: dict, field: str) -> int:
    """A token count shown to the client: a figure that is not a count shows as 0.

    (Billing reads the upstream's usage itself, and flags figures like these.)
    """
    value = usage.get(field)
    # type(), not isinstance(): True is an int to Python, not a count.
    if type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and value >= 0 else 0


def openai_usage_from_anthropic(usage: dict | None) -> dict:
    """Return OpenAI-style usage for Anthropic usage.

    Anthropic counts cache reads and writes apart from input_tokens, while OpenAI's
    prompt_tokens include cached tokens, so the three are added up.
    """
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _figure(usage, "cache_read_input_tokens")
    prompt = _figure(usage, "input_tokens") + cache_read
    prompt += _figure(usage, "cache_creation_input_tokens")
    completion = _figure(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def anthropic_usage_from_openai(usage: dict | None) -> dict:
    """Return Anthropic-style usage for OpenAI usage (cached tokens moved out of input)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _figure(details, "cached_tokens") if isinstance(details, dict) else 0
    return {
        "input_tokens": max(_figure(usage, "prompt_tokens") - cached, 0),
        "output_tokens": _figure(usage, "completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


@reads_upstream(MalformedUpstream)
def anthropic_response_to_openai(resp: dict, *, model: str) -> dict:
    """Convert a Messages response into a `chat.completion` for the model the client named.

    Raises `MalformedUpstream` for an answer of the wrong shape.
    """
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict] = []
    for block in resp.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            if not isinstance(block["id"], str) or not isinstance(block["name"], str):
                raise MalformedUpstream(detail="tool_use without a string id and name")
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(block["input"])},
                }
            )
    # Blocks of one answer are pieces of one text, as a stream would deliver them: no separator.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{_upstream_id(resp.get('id')) or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": map_anthropic_stop_reason(resp.get("stop_reason")),
            }
        ],
        "usage": openai_usage_from_anthropic(resp.get("usage")),
    }


@reads_upstream(MalformedUpstream)
def openai_response_to_anthropic(resp: dict, *, model: str) -> dict:
    """Convert a `chat.completion` into a Messages response for the model the client named.

    Raises `MalformedUpstream` for an answer of the wrong shape.
    """
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise MalformedUpstream(detail="message content is not a string")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        name = function.get("name", "")
        if not isinstance(name, str):
            raise MalformedUpstream(detail="tool call name is not a string")
        content.append(
            {
                "type": "tool_use",
                "id": _upstream_id(call.get("id")) or _new_tool_id(),
                "name": name,
                "input": _parse_arguments(function.get("arguments")),
            }
        )
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    return {
        "id": _message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason"), has_tool_use=has_tool_use),
        "stop_sequence": None,
        "usage": anthropic_usage_from_openai(resp.get("usage")),
    }


def _upstream_id(value: object) -> str | None:
    """An id the upstream gave, if it is a non-empty string (another one is replaced)."""
    return value if isinstance(value, str) and value else None


def _message_id(openai_id: object) -> str:
    """Derive an Anthropic-looking message id from an OpenAI completion id."""
    openai_id = _upstream_id(openai_id)
    if openai_id is None:
        return f"msg_{uuid.uuid4().hex}"
    return f"msg_{openai_id.removeprefix('chatcmpl-')}"


def _new_tool_id() -> str:
    """Mint a tool_use id for an upstream that sent a call without one."""
    return f"toolu_{uuid.uuid4().hex}"


def _stop_reason(finish_reason: str | None, *, has_tool_use: bool) -> str:
    """Map a finish_reason, trusting the content when it holds tool calls.

    Some OpenAI-compatible upstreams end tool calls with "stop"; Anthropic clients such as
    Claude Code look at stop_reason to decide whether to run tools.
    """
    reason = map_openai_finish_reason(finish_reason)
    if has_tool_use and reason == "end_turn":
        return "tool_use"
    return reason


# --- Streams ----------------------------------------------------------------------------------


def check_anthropic_event(kind: str, data: dict) -> None:
    """Raise `UpstreamStreamError` for an Anthropic event that is an error or carries one, or
    whose fields a client reads have the wrong type. Unknown events pass (future ones)."""
    if kind == "error" or "error" in data:
        raise stream_ended_with_error(data.get("error"))
    if kind == "message_start":
        message = data.get("message")
        if not isinstance(message, dict):
            raise malformed("message_start without a message object")
        _check_anthropic_usage(message.get("usage"))
    elif kind in ("content_block_start", "content_block_delta", "content_block_stop"):
        index = data.get("index")
        if type(index) is not int or index < 0:  # a bool is no index either
            raise malformed(f"{kind} without a block index")
        if kind == "content_block_start":
            _check_anthropic_block(data.get("content_block"))
        elif kind == "content_block_delta":
            delta = data.get("delta")
            if not isinstance(delta, dict):
                raise malformed("content_block_delta without a delta object")
            for field in ("text", "thinking", "partial_json"):
                if field in delta and not isinstance(delta[field], str):
                    raise malformed(f"delta {field} is not a string")
    elif kind == "message_delta":
        delta = data.get("delta")
        if delta is not None:
            if not isinstance(delta, dict):
                raise malformed("message_delta's delta is not an object")
            stop_reason = delta.get("stop_reason")
            if stop_reason is not None and not isinstance(stop_reason, str):
                raise malformed("stop_reason is not a string")
        _check_anthropic_usage(data.get("usage"))


def _check_anthropic_block(block: object) -> None:
    if not isinstance(block, dict):
        raise malformed("content_block is not an object")
    if block.get("type") == "tool_use" and not (
        isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
    ):
        raise malformed("tool_use block without a string id and name")


def _check_anthropic_usage(usage: object) -> None:
    if usage is not None and not isinstance(usage, dict):
        raise malformed("usage is not an object")


# Parts of Anthropic's usage kept beside the four counts, for billing: the cache writes'
# 5-minute / 1-hour split and the server tools' call counts.
USAGE_BREAKDOWNS = ("cache_creation", "server_tool_use")


class AnthropicToOpenAIStream:
    """Turns Anthropic stream events into OpenAI `chat.completion.chunk` dicts.

    Feed each upstream event in order, then call `finish()` once the upstream is done.
    """

    def __init__(self, model: str, *, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._usage: dict[str, Any] = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
        # Anthropic numbers all content blocks; OpenAI numbers tool calls only.
        self._tool_index_by_block: dict[int, int] = {}

    @property
    def usage(self) -> dict:
        """Anthropic-style usage accumulated so far."""
        return dict(self._usage)

    @reads_upstream(UpstreamStreamError)
    def feed(self, event: str, data: dict) -> list[dict]:
        """Convert one Anthropic event into zero or more chunks.

        Raises `UpstreamStreamError` for an error event or a malformed one.
        """
        check_anthropic_event(event, data)
        if event == "message_start":
            message = data["message"]
            message_id = _upstream_id(message.get("id"))
            if message_id:
                self.completion_id = f"chatcmpl-{message_id}"
            self._record_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if event == "content_block_start":
            block = data["content_block"]
            if block.get("type") != "tool_use":
                return []
            tool_index = len(self._tool_index_by_block)
            self._tool_index_by_block[data["index"]] = tool_index
            call = {
                "index": tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if event == "content_block_delta":
            return self._delta_chunks(data["index"], data["delta"])
        if event == "message_delta":
            self._record_usage(data.get("usage"))
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, finish_reason=map_anthropic_stop_reason(stop_reason))]
        # ping, content_block_stop, message_stop and unknown future events carry nothing.
        return []

    @reads_upstream(UpstreamStreamError)
    def finish(self) -> list[dict]:
        """Return the closing usage chunk when the client asked for one."""
        if not self.include_usage:
            return []
        chunk = self._chunk({})
        chunk["choices"] = []
        chunk["usage"] = openai_usage_from_anthropic(self._usage)
        return [chunk]

    def _delta_chunks(self, block_index: int | None, delta: dict) -> list[dict]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        # Server tool blocks stream input_json_delta too; they are not client tool calls.
        if kind == "input_json_delta" and block_index in self._tool_index_by_block:
            fragment = delta.get("partial_json", "")
            if not fragment:
                return []
            call = {
                "index": self._tool_index_by_block[block_index],
                "function": {"arguments": fragment},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _record_usage(self, usage: dict | None) -> None:
        # Counts on message_delta are cumulative totals; absent or null ones keep earlier values.
        # Figures are kept as sent: judging them is billing's business (the client's usage
        # chunk shows a figure that is not a count as 0).
        for key, value in (usage or {}).items():
            if value is not None and (key in self._usage or key in USAGE_BREAKDOWNS):
                self._usage[key] = value

    def _chunk(self, delta: dict, *, finish_reason: str | None = None) -> dict:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }


class OpenAIToAnthropicStream:
    """Turns OpenAI `chat.completion.chunk` dicts into Anthropic (event, data) pairs.

    Feed each upstream chunk in order, then call `finish()` once the upstream is done (after
    `[DONE]`, or when it just stops): the closing events come from there, because OpenAI's
    usage arrives in a chunk after the one holding finish_reason.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = False
        self._next_block_index = 0
        # Index of the block being streamed, and the same index again if it is a text block.
        self._open_block: int | None = None
        self._text_block: int | None = None
        self._tool_block_by_index: dict[int, int] = {}
        self._finish_reason: str | None = None
        self._usage: dict | None = None

    @property
    def usage(self) -> dict | None:
        """The upstream's OpenAI usage, once its usage chunk has arrived."""
        return self._usage

    @reads_upstream(UpstreamStreamError)
    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        """Convert one chunk into zero or more Anthropic events.

        Raises `UpstreamStreamError` for a chunk that carries an error or is malformed.
        """
        check_openai_chunk(chunk)
        events = self._start(chunk.get("id"))
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            # Only the first choice can be expressed; n > 1 is not carried over.
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                raise malformed("delta content is not a string")
            if content:
                events.extend(self._text(content))
            tool_calls = delta.get("tool_calls")
            if tool_calls is not None and not isinstance(tool_calls, list):
                raise malformed("tool_calls is not a list")
            for call in tool_calls or []:
                events.extend(self._tool_call(call))
            finish_reason = choice.get("finish_reason")
            if finish_reason is not None and not isinstance(finish_reason, str):
                raise malformed("finish_reason is not a string")
            if finish_reason:
                self._finish_reason = finish_reason
        return events

    @reads_upstream(UpstreamStreamError)
    def finish(self) -> list[tuple[str, dict]]:
        """Close the open block and the message, with the stop reason and usage."""
        events = self._start(None)
        events.extend(self._close_block())
        usage = anthropic_usage_from_openai(self._usage)
        stop_reason = _stop_reason(
            self._finish_reason, has_tool_use=bool(self._tool_block_by_index)
        )
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self, openai_id: str | None) -> list[tuple[str, dict]]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(openai_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The real counts only arrive with OpenAI's last chunk; message_delta carries them.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _text(self, text: str) -> list[tuple[str, dict]]:
        events = []
        if self._text_block is None:
            events.extend(self._close_block())
            self._text_block = self._open_new_block({"type": "text", "text": ""}, events)
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._text_block,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )
        return events

    def _tool_call(self, call: dict) -> list[tuple[str, dict]]:
        events = []
        if not isinstance(call, dict):
            raise malformed("a tool call is not an object")
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise malformed("a tool call's function is not an object")
        tool_index = call.get("index", 0)
        if type(tool_index) is not int:
            raise malformed("a tool call's index is not an integer")
        for field in ("name", "arguments"):
            if function.get(field) is not None and not isinstance(function[field], str):
                raise malformed(f"a tool call's {field} is not a string")
        if tool_index not in self._tool_block_by_index:
            events.extend(self._close_block())
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": _upstream_id(call.get("id")) or _new_tool_id(),
                "name": function.get("name") or "",
                "input": {},
            }
            self._tool_block_by_index[tool_index] = self._open_new_block(block, events)
        if function.get("arguments"):
            # Upstreams send calls one after another; should fragments of an earlier call
            # arrive late, they still name that call's block, which is what the SDKs key on.
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._tool_block_by_index[tool_index],
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": function["arguments"],
                        },
                    },
                )
            )
        return events

    def _open_new_block(self, block: dict, events: list[tuple[str, dict]]) -> int:
        index = self._next_block_index
        self._next_block_index += 1
        self._open_block = index
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        return index

    def _close_block(self) -> list[tuple[str, dict]]:
        if self._open_block is None:
            return []
        index, self._open_block, self._text_block = self._open_block, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]


def anthropic_event_text(data: dict) -> str:
    """Output text in an Anthropic stream event ("" for parts of the wrong type)."""
    if not isinstance(data, dict):
        return ""
    kind = data.get("type")
    if kind == "content_block_delta":
        delta = data.get("delta")
        if isinstance(delta, dict):
            for field in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(field), str):
                    return delta[field]
    elif kind == "content_block_start":
        block = data.get("content_block")
        if isinstance(block, dict) and isinstance(block.get("name"), str):
            return block["name"]
    return ""


def _anthropic_kind(event: Event, data: dict) -> str:
    kind = data.get("type") or event.name or ""
    if not isinstance(kind, str):
        raise UpstreamStreamError(detail="event type is not a string")
    return kind


class AnthropicPassthrough(Translator):
    """Anthropic upstream, Anthropic client: bytes unchanged, usage read on the way. An error
    event, or an event of a shape the client's SDK would trip on, ends the stream through the
    relay's own error event."""

    def __init__(self):
        super().__init__()
        self._raw_usage: dict = {}

    def _feed(self, event: Event) -> tuple[bytes, str]:
        data = json_object(event)
        kind = _anthropic_kind(event, data)
        check_anthropic_event(kind, data)
        if kind == "message_start":
            self._record(data["message"].get("usage"))
        elif kind == "message_delta":
            self._record(data.get("usage"))
        elif kind == "message_stop":
            self.completed = True
        return event.raw, anthropic_event_text(data)

    def _record(self, usage: dict | None) -> None:
        if usage is not None:
            # message_delta counts are cumulative: later values replace earlier ones.
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
            self._report_usage(normalize_anthropic_usage, self._raw_usage)


class AnthropicToOpenAI(Translator):
    """Anthropic upstream, OpenAI client."""

    def __init__(self, *, model: str, client_wants_usage: bool):
        super().__init__()
        self._converter = AnthropicToOpenAIStream(model, include_usage=client_wants_usage)

    def _feed(self, event: Event) -> tuple[bytes, str]:
        data = json_object(event)
        kind = _anthropic_kind(event, data)
        chunks = self._converter.feed(kind, data)  # raises UpstreamStreamError
        if kind in ("message_start", "message_delta"):
            self._report_usage(normalize_anthropic_usage, self._converter.usage)
        elif kind == "message_stop":
            self.completed = True
        return b"".join(openai_chat.sse(chunk) for chunk in chunks), anthropic_event_text(data)

    def _finish(self) -> bytes:
        return b"".join(openai_chat.sse(chunk) for chunk in self._converter.finish()) + (
            b"data: [DONE]\n\n"
        )


class OpenAIToAnthropic(openai_chat.FromHub):
    """OpenAI upstream, Anthropic client: events named as Anthropic names them."""

    def __init__(self, *, model: str):
        super().__init__(OpenAIToAnthropicStream(model), lambda event: sse(*event))


# --- To and from the hub ----------------------------------------------------------------------


def request_to_hub(body: dict) -> dict:
    return anthropic_to_openai_chat(body)


def request_from_hub(body: dict, *, default_max_tokens: int) -> dict:
    return openai_chat_to_anthropic(body, default_max_tokens=default_max_tokens)


def answer_to_hub(answer: dict, *, model: str) -> dict:
    return anthropic_response_to_openai(answer, model=model)


def answer_from_hub(answer: dict, *, model: str) -> dict:
    return openai_response_to_anthropic(answer, model=model)


def passthrough(*, model: str, client_wants_usage: bool) -> Translator:
    """The translator for an Anthropic upstream serving an Anthropic client."""
    return AnthropicPassthrough()


def stream_to_hub(*, model: str, client_wants_usage: bool) -> Translator:
    """The translator for an Anthropic upstream serving a hub (OpenAI) client."""
    return AnthropicToOpenAI(model=model, client_wants_usage=client_wants_usage)


def stream_from_hub(*, model: str) -> Translator:
    """The translator for a hub (OpenAI) upstream serving an Anthropic client."""
    return OpenAIToAnthropic(model=model)
