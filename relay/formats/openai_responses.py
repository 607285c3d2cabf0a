"""OpenAI's Responses API format (``POST /v1/responses``), and its conversions to and from the
hub (OpenAI's Chat Completions, relay.formats.openai_chat).

An OpenAI channel serves Responses natively (relay.providers.openai): bytes pass through, and
the usage is read from the ``response.completed`` event or the answer's ``usage``. Any other
channel serves it through the hub: the request's ``instructions`` and ``input`` items become
chat messages, the answer's message becomes ``output`` items, and the hub's stream chunks
become the Responses event sequence (``response.created`` ... ``response.completed``), each
event with its ``sequence_number``.

What only OpenAI's servers can do is refused with a ``ConversionError`` when the call is
converted: ``previous_response_id`` and ``item_reference`` (they name state stored at
OpenAI), files by id, and hosted tools. Validation (relay.validation) refuses what no channel
may be given unpriced (hosted tools, background responses).

Errors are OpenAI's (``{"error": {...}}``), as for chat. No Django and no I/O here.
"""

from __future__ import annotations

import json
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
    json_object,
    malformed,
    reads_upstream,
    stream_ended_with_error,
)
from relay.formats.openai_chat import (
    FromHub,
    check_openai_chunk,
    normalize_openai_usage,
)

if TYPE_CHECKING:  # relay.errors renders through this module
    from relay.errors import RelayError

# Events that end a response: its final state, with its usage.
FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# Events whose ``delta`` is output text (counted when a stream ends without usage).
TEXT_DELTAS = (
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
)
STATE_ONLY = "only the Responses API's own servers keep it; this model's channel converts"

FINISH_TO_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
INCOMPLETE_TO_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}


# --- Errors and framing: OpenAI's ---------------------------------------------------------------


def error_body(error: RelayError) -> dict:
    return openai_chat.error_body(error)


def error_status(error: RelayError) -> int:
    return openai_chat.error_status(error)


def sse(data: dict) -> bytes:
    """An event: its name is its ``type``, as OpenAI frames them."""
    payload = json.dumps(data, separators=(",", ":")).encode()
    return b"event: " + data["type"].encode() + b"\ndata: " + payload + b"\n\n"


def stream_error(error_type: str, sequence_number: int = 0) -> bytes:
    """The ``error`` event that ends a broken stream (the relay's own words and code),
    numbered after the events sent before it (``Numbered`` knows how many)."""
    return sse(
        {
            "type": "error",
            "code": "upstream_error",
            "message": STREAM_BROKE_OFF,
            "param": None,
            "sequence_number": sequence_number,
        }
    )


def normalize_usage(usage: dict | None) -> TokenUsage | None:
    """Responses usage: cached input inside input_tokens, reasoning inside output_tokens (the
    Chat Completions normalizer reads both spellings)."""
    return normalize_openai_usage(usage)


# --- Requests: Responses -> hub -----------------------------------------------------------------


def request_to_hub(body: dict) -> dict:
    """A Chat Completions body for a Responses body; ``ConversionError`` for what chat cannot
    carry (stored state, files by id, hosted tools)."""
    if body.get("previous_response_id"):
        raise ConversionError(
            f"previous_response_id: the earlier response is stored state: {STATE_ONLY}."
        )
    if body.get("conversation"):
        raise ConversionError(f"conversation: {STATE_ONLY}.")
    messages: list[dict] = []
    if body.get("instructions"):
        instructions = body["instructions"]
        if not isinstance(instructions, str):
            raise ConversionError("instructions: only text instructions can be converted.")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    else:
        for index, item in enumerate(items or []):
            _item_to_hub(item, f"input[{index}]", messages)

    hub: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        hub["max_completion_tokens"] = body["max_output_tokens"]
    for field in ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier"):
        if body.get(field) is not None:
            hub[field] = body[field]
    if body.get("tools"):
        hub["tools"] = [_tool_to_hub(tool, f"tools[{i}]") for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        hub["tool_choice"] = _tool_choice_to_hub(body["tool_choice"])
    text = body.get("text") or {}
    if text.get("format"):
        response_format = _format_to_hub(text["format"])
        if response_format is not None:
            hub["response_format"] = response_format
    if text.get("verbosity"):
        hub["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning") or {}
    if reasoning.get("effort"):
        hub["reasoning_effort"] = reasoning["effort"]
    if body.get("stream"):
        hub["stream"] = True
        # Without it an OpenAI stream carries no usage, and the call is billed from it.
        hub["stream_options"] = {"include_usage": True}
    return hub


def _item_to_hub(item: dict, where: str, messages: list[dict]) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        content = item.get("content")
        if role == "assistant":
            _append_assistant(messages, content=_assistant_text(content, where))
        elif role in ("system", "developer"):
            messages.append({"role": role, "content": _plain_text(content, where)})
        else:
            messages.append({"role": "user", "content": _content_to_hub(content, where)})
    elif kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
        }
        _append_assistant(messages, tool_call=call)
    elif kind == "function_call_output":
        output = item.get("output")
        messages.append(
            {
                "role": "tool",
                "tool_call_id": item.get("call_id"),
                "content": output if isinstance(output, str) else _plain_text(output, where),
            }
        )
    elif kind == "reasoning":
        # Encrypted or summarized reasoning means something to OpenAI's models only.
        return
    elif kind == "item_reference":
        raise ConversionError(f"{where}: item_reference names stored state: {STATE_ONLY}.")
    else:
        raise ConversionError(f"{where}: input items of type {kind!r} cannot be converted.")


def _append_assistant(
    messages: list[dict], *, content: str | None = None, tool_call: dict | None = None
) -> None:
    """An assistant turn: text and the function calls that follow it make one chat message."""
    last = messages[-1] if messages else None
    if tool_call is not None and last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(tool_call)
        return
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_call is not None:
        message["tool_calls"] = [tool_call]
    messages.append(message)


def _content_to_hub(content: Any, where: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    parts = []
    for index, part in enumerate(content or []):
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            if not part.get("image_url"):
                raise ConversionError(
                    f"{where}.content[{index}]: images by file_id are files stored at "
                    "OpenAI; send the image_url (a URL or a data: URL) instead."
                )
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise ConversionError(
                f"{where}.content[{index}]: content of type {kind!r} cannot be converted."
            )
    return parts


def _plain_text(content: Any, where: str) -> str:
    """Content that may only be text (system turns, tool output) as one string."""
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content or []):
        if part.get("type") not in ("input_text", "output_text", "text"):
            raise ConversionError(
                f"{where}.content[{index}]: only text can be converted here, not "
                f"{part.get('type')!r}."
            )
        texts.append(part.get("text", ""))
    return "".join(texts)


def _assistant_text(content: Any, where: str) -> str | None:
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content or []):
        kind = part.get("type")
        if kind in ("output_text", "input_text"):
            texts.append(part.get("text", ""))
        elif kind == "refusal":
            texts.append(part.get("refusal", ""))
        else:
            raise ConversionError(
                f"{where}.content[{index}]: content of type {kind!r} cannot be converted."
            )
    return "".join(texts) if texts else None


def _tool_to_hub(tool: dict, where: str) -> dict:
    if tool.get("type") != "function":
        raise ConversionError(f"{where}: tools of type {tool.get('type')!r} cannot be converted.")
    function: dict[str, Any] = {"name": tool.get("name")}
    for field in ("description", "parameters", "strict"):
        if tool.get(field) is not None:
            function[field] = tool[field]
    return {"type": "function", "function": function}


def _tool_choice_to_hub(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise ConversionError(f"tool_choice of type {choice.get('type')!r} cannot be converted.")


def _format_to_hub(text_format: dict) -> dict | None:
    kind = text_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {
            field: text_format[field]
            for field in ("name", "schema", "strict", "description")
            if text_format.get(field) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise ConversionError(f"text.format of type {kind!r} cannot be converted.")


def messages_for_counting(body: dict) -> tuple[str | None, list[dict], Any]:
    """(system text, messages, tools) of a Responses body, for the input count: never raises,
    whatever the items (an item it cannot read counts as its JSON)."""
    instructions = body.get("instructions")
    system = instructions if isinstance(instructions, str) else None
    items = body.get("input")
    if isinstance(items, str):
        return system, [{"content": items}], body.get("tools")
    messages = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"content": item.get("content")})
        elif kind == "function_call":
            messages.append({"content": f"{item.get('name', '')}{item.get('arguments', '')}"})
        elif kind == "function_call_output":
            messages.append({"content": item.get("output")})
        else:
            messages.append({"content": [item]})
    return system, messages, body.get("tools")


# --- Requests: hub -> Responses -----------------------------------------------------------------


def request_from_hub(body: dict, *, default_max_tokens: int) -> dict:
    """A Responses body for a Chat Completions body."""
    instructions = []
    items: list[dict] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            instructions.append(_chat_text(content))
        elif role == "user":
            items.append({"role": "user", "content": _chat_content_to_input(content)})
        elif role == "assistant":
            if content:
                text = _chat_text(content)
                items.append(
                    {"type": "message", "role": "assistant", "content": [_output_text(text)]}
                )
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments") or "",
                    }
                )
        elif role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": _chat_text(content),
                }
            )
        else:
            raise ConversionError(f"Unsupported message role: {role!r}")
    result: dict[str, Any] = {"model": body.get("model"), "input": items}
    if instructions:
        result["instructions"] = "\n\n".join(instructions)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        result["max_output_tokens"] = limit
    for field in ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier", "stream"):
        if body.get(field) is not None:
            result[field] = body[field]
    if body.get("tools"):
        result["tools"] = [_chat_tool_to_responses(tool) for tool in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        result["tool_choice"] = {"type": "function", "name": choice["function"]["name"]}
    elif choice is not None:
        result["tool_choice"] = choice
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        result["text"] = {"format": {"type": "json_schema", **response_format["json_schema"]}}
    elif response_format.get("type") == "json_object":
        result["text"] = {"format": {"type": "json_object"}}
    if body.get("reasoning_effort"):
        result["reasoning"] = {"effort": body["reasoning_effort"]}
    result["store"] = False  # a converted call's answer is not meant to be kept upstream
    return result


def _chat_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def _chat_content_to_input(content: Any) -> str | list[dict]:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            converted = {"type": "input_image", "image_url": url, "detail": "auto"}
            if isinstance(image, dict) and image.get("detail"):
                converted["detail"] = image["detail"]
            parts.append(converted)
        else:
            raise ConversionError(f"Unsupported content part: {kind!r}")
    return parts


def _chat_tool_to_responses(tool: dict) -> dict:
    if tool.get("type") != "function":
        raise ConversionError(f"Unsupported tool type: {tool.get('type')!r}")
    function = tool["function"]
    converted = {"type": "function", "name": function["name"]}
    for field in ("description", "parameters", "strict"):
        if function.get(field) is not None:
            converted[field] = function[field]
    return converted


# --- Answers --------------------------------------------------------------------------------------


def responses_usage(usage: Any) -> dict:
    """The Responses spelling of a hub (chat) usage; a figure that is not a count shows as 0
    (billing reads the upstream's own usage)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt_details = usage.get("prompt_tokens_details")
    output_details = usage.get("completion_tokens_details")
    input_tokens = _figure(usage, "prompt_tokens")
    output_tokens = _figure(usage, "completion_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": _figure(prompt_details, "cached_tokens"),
            "cache_write_tokens": 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": _figure(output_details, "reasoning_tokens")},
        "total_tokens": input_tokens + output_tokens,
    }


def chat_usage(usage: Any) -> dict:
    """The hub (chat) spelling of a Responses usage."""
    usage = usage if isinstance(usage, dict) else {}
    input_tokens = _figure(usage, "input_tokens")
    output_tokens = _figure(usage, "output_tokens")
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": _figure(usage.get("input_tokens_details"), "cached_tokens")
        },
        "completion_tokens_details": {
            "reasoning_tokens": _figure(usage.get("output_tokens_details"), "reasoning_tokens")
        },
    }


def _figure(container: Any, field: str) -> int:
    value = container.get(field) if isinstance(container, dict) else None
    if type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and value >= 0 else 0


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_object(
    *,
    response_id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict],
    usage: dict | None,
    finish_reason: str | None = None,
) -> dict:
    """A ``response`` object: what the answer, and the stream's lifecycle events, carry."""
    incomplete = FINISH_TO_INCOMPLETE.get(finish_reason or "")
    if status == "completed" and incomplete:
        status = "incomplete"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


@reads_upstream(MalformedUpstream)
def answer_from_hub(answer: dict, *, model: str) -> dict:
    """A ``response`` object for a ``chat.completion`` (its first choice)."""
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(
            {
                "type": "reasoning",
                "id": _new_id("rs"),
                "summary": [{"type": "summary_text", "text": reasoning}],
            }
        )
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise MalformedUpstream(detail="message content is not a string")
    if text:
        output.append(
            {
                "type": "message",
                "id": _new_id("msg"),
                "status": "completed",
                "role": "assistant",
                "content": [_output_text(text)],
            }
        )
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        name, arguments = function.get("name"), function.get("arguments") or ""
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise MalformedUpstream(detail="a tool call's name or arguments is not a string")
        output.append(
            {
                "type": "function_call",
                "id": _new_id("fc"),
                "call_id": call.get("id") if isinstance(call.get("id"), str) else _new_id("call"),
                "name": name,
                "arguments": arguments,
                "status": "completed",
            }
        )
    return response_object(
        response_id=_new_id("resp"),
        model=model,
        created_at=int(time.time()),
        status="completed",
        output=output,
        usage=responses_usage(answer.get("usage")),
        finish_reason=choice.get("finish_reason"),
    )


@reads_upstream(MalformedUpstream)
def answer_to_hub(answer: dict, *, model: str) -> dict:
    """A ``chat.completion`` for a ``response`` object."""
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict] = []
    for item in answer.get("output") or []:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    texts.append(part["text"])
                elif part.get("type") == "refusal":
                    texts.append(part["refusal"])
        elif kind == "reasoning":
            reasoning.extend(part.get("text", "") for part in item.get("summary") or [])
        elif kind == "function_call":
            tool_calls.append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments", "")},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    details = answer.get("incomplete_details") or {}
    if answer.get("status") == "incomplete":
        finish = INCOMPLETE_TO_FINISH.get(str(details.get("reason")), "length")
    else:
        finish = "tool_calls" if tool_calls else "stop"
    return {
        "id": f"chatcmpl-{answer.get('id') or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": chat_usage(answer.get("usage")),
    }


# --- Streams --------------------------------------------------------------------------------------


def event_text(data: dict) -> str:
    """Output text in a Responses event ("" for parts of the wrong type)."""
    if data.get("type") in TEXT_DELTAS and isinstance(data.get("delta"), str):
        return data["delta"]
    if data.get("type") == "response.output_item.added":
        item = data.get("item")
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            return item["name"]
    return ""


def check_event(kind: str, data: dict) -> None:
    """Raise ``UpstreamStreamError`` for an error event, or a final event without a response
    object; other events pass (future ones included)."""
    if kind == "error" or kind == "response.error":
        raise stream_ended_with_error(data.get("error") or {"type": data.get("code")})
    if kind in FINAL_EVENTS or kind == "response.created":
        response = data.get("response")
        if not isinstance(response, dict):
            raise malformed(f"{kind} without a response object")
        usage = response.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise malformed("usage is not an object")


def _event_kind(event: Event, data: dict) -> str:
    kind = data.get("type") or event.name or ""
    if not isinstance(kind, str):
        raise UpstreamStreamError(detail="event type is not a string")
    return kind


class ResponsesPassthrough(Translator):
    """Responses upstream, Responses client: bytes unchanged; the usage read from the final
    event, and the response's id (``answer_id``) from the first."""

    def __init__(self):
        super().__init__()
        self.answer_id: str | None = None

    def _feed(self, event: Event) -> tuple[bytes, str]:
        data = json_object(event)
        kind = _event_kind(event, data)
        check_event(kind, data)
        if kind == "response.created" and isinstance(data["response"].get("id"), str):
            self.answer_id = data["response"]["id"]
        elif kind in FINAL_EVENTS:
            usage = data["response"].get("usage")
            if usage is not None:
                self._report_usage(normalize_usage, usage)
            self.completed = True
        return event.raw, event_text(data)


class HubToResponsesStream:
    """Turns hub (``chat.completion.chunk``) dicts into Responses events.

    Feed each chunk in order, then call ``finish()`` once the upstream is done: the open item
    is closed there and ``response.completed`` (or ``response.incomplete``) sent with the
    usage, which the hub sends after the chunk holding finish_reason.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.response_id = _new_id("resp")
        self.created_at = int(time.time())
        self.output: list[dict] = []
        self._sequence = 0
        self._started = False
        self._open: dict | None = None  # the item being streamed
        self._calls: dict[int, dict] = {}  # hub tool-call index -> its function_call item
        self._finish_reason: str | None = None
        self._usage: dict | None = None

    @reads_upstream(UpstreamStreamError)
    def feed(self, chunk: dict) -> list[dict]:
        check_openai_chunk(chunk)
        events = self._start()
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # only the first choice can be expressed
            delta = choice.get("delta") or {}
            for field, kind in (("reasoning_content", "reasoning"), ("content", "message")):
                piece = delta.get(field)
                if piece is not None and not isinstance(piece, str):
                    raise malformed(f"delta {field} is not a string")
                if piece:
                    events.extend(self._text(kind, piece))
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
    def finish(self) -> list[dict]:
        events = self._start()
        events.extend(self._close())
        response = self._response("completed", responses_usage(self._usage))
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        events.append(self._event(kind, response=response))
        return events

    def _event(self, kind: str, **fields: Any) -> dict:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _response(self, status: str, usage: dict | None) -> dict:
        return response_object(
            response_id=self.response_id,
            model=self.model,
            created_at=self.created_at,
            status=status,
            output=[dict(item) for item in self.output],
            usage=usage,
            finish_reason=self._finish_reason if status == "completed" else None,
        )

    def _start(self) -> list[dict]:
        if self._started:
            return []
        self._started = True
        response = self._response("in_progress", None)
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _open_item(self, item: dict) -> list[dict]:
        events = self._close()
        self._open = item
        self.output.append(item)
        index = len(self.output) - 1
        events.append(
            self._event("response.output_item.added", output_index=index, item=dict(item))
        )
        return events

    def _text(self, kind: str, piece: str) -> list[dict]:
        events: list[dict] = []
        item = self._open
        if item is None or item["type"] != kind:
            if kind == "message":
                item = {
                    "id": _new_id("msg"),
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                }
            else:
                item = {"id": _new_id("rs"), "type": "reasoning", "summary": []}
            events.extend(self._open_item(item))
            item["_text"] = ""
            if kind == "message":
                events.append(self._part_event("response.content_part.added", item, ""))
            else:
                events.append(
                    self._summary_event("response.reasoning_summary_part.added", item, "")
                )
        item["_text"] += piece
        place = self._place(item)
        if kind == "message":
            events.append(
                self._event(
                    "response.output_text.delta", **place, content_index=0, delta=piece, logprobs=[]
                )
            )
        else:
            events.append(
                self._event(
                    "response.reasoning_summary_text.delta", **place, summary_index=0, delta=piece
                )
            )
        return events

    def _tool_call(self, call: Any) -> list[dict]:
        if not isinstance(call, dict):
            raise malformed("a tool call is not an object")
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise malformed("a tool call's function is not an object")
        index = call.get("index", 0)
        if type(index) is not int:
            raise malformed("a tool call's index is not an integer")
        for field in ("name", "arguments"):
            if function.get(field) is not None and not isinstance(function[field], str):
                raise malformed(f"a tool call's {field} is not a string")
        events: list[dict] = []
        item = self._calls.get(index)
        if item is None:
            call_id = call.get("id")
            item = {
                "id": _new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call_id if isinstance(call_id, str) and call_id else _new_id("call"),
                "name": function.get("name") or "",
                "arguments": "",
            }
            self._calls[index] = item
            events.extend(self._open_item(item))
        fragment = function.get("arguments")
        if fragment:
            item["arguments"] += fragment
            events.append(
                self._event(
                    "response.function_call_arguments.delta", **self._place(item), delta=fragment
                )
            )
        return events

    def _place(self, item: dict) -> dict:
        return {"item_id": item["id"], "output_index": self.output.index(item)}

    def _part_event(self, kind: str, item: dict, text: str) -> dict:
        return self._event(kind, **self._place(item), content_index=0, part=_output_text(text))

    def _summary_event(self, kind: str, item: dict, text: str) -> dict:
        part = {"type": "summary_text", "text": text}
        return self._event(kind, **self._place(item), summary_index=0, part=part)

    def _close(self) -> list[dict]:
        """The events that end the open item, which then takes its final shape."""
        item, self._open = self._open, None
        if item is None:
            return []
        place = self._place(item)
        events = []
        if item["type"] == "message":
            text = item.pop("_text")
            events.append(
                self._event(
                    "response.output_text.done", **place, content_index=0, text=text, logprobs=[]
                )
            )
            events.append(self._part_event("response.content_part.done", item, text))
            item["content"] = [_output_text(text)]
        elif item["type"] == "reasoning":
            text = item.pop("_text")
            events.append(
                self._event(
                    "response.reasoning_summary_text.done", **place, summary_index=0, text=text
                )
            )
            events.append(self._summary_event("response.reasoning_summary_part.done", item, text))
            item["summary"] = [{"type": "summary_text", "text": text}]
        else:
            done = {"arguments": item["arguments"], "name": item["name"]}
            events.append(self._event("response.function_call_arguments.done", **place, **done))
        if "status" in item:
            item["status"] = "completed"
        events.append(
            self._event(
                "response.output_item.done", output_index=place["output_index"], item=dict(item)
            )
        )
        return events


class HubToResponses(FromHub):
    """Hub (OpenAI chat) upstream, Responses client."""

    def __init__(self, *, model: str):
        super().__init__(HubToResponsesStream(model), sse)


class ResponsesToHub(Translator):
    """Responses upstream, hub (OpenAI chat) client."""

    def __init__(self, *, model: str, client_wants_usage: bool):
        super().__init__()
        self.model = model
        self.client_wants_usage = client_wants_usage
        self.chunk_id = _new_id("chatcmpl")
        self.created = int(time.time())
        self._started = False
        self._tool_index: dict[str, int] = {}  # function_call item id -> hub tool-call index
        self._final: dict | None = None

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        return {
            "id": self.chunk_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def _feed(self, event: Event) -> tuple[bytes, str]:
        data = json_object(event)
        kind = _event_kind(event, data)
        check_event(kind, data)
        chunks = []
        if not self._started:
            self._started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}))
        if kind == "response.output_text.delta":
            chunks.append(self._chunk({"content": data["delta"]}))
        elif kind == "response.reasoning_summary_text.delta":
            chunks.append(self._chunk({"reasoning_content": data["delta"]}))
        elif kind == "response.output_item.added" and data["item"].get("type") == "function_call":
            item = data["item"]
            index = self._tool_index[item["id"]] = len(self._tool_index)
            call = {
                "index": index,
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": ""},
            }
            chunks.append(self._chunk({"tool_calls": [call]}))
        elif kind == "response.function_call_arguments.delta":
            index = self._tool_index[data["item_id"]]
            call = {"index": index, "function": {"arguments": data["delta"]}}
            chunks.append(self._chunk({"tool_calls": [call]}))
        elif kind in FINAL_EVENTS:
            self._final = data["response"]
            if self._final.get("usage") is not None:
                self._report_usage(normalize_usage, self._final["usage"])
            self.completed = True
        return b"".join(openai_chat.sse(chunk) for chunk in chunks), event_text(data)

    def _finish(self) -> bytes:
        final = self._final or {}
        if final.get("status") == "incomplete":
            reason = (final.get("incomplete_details") or {}).get("reason")
            finish = INCOMPLETE_TO_FINISH.get(str(reason), "length")
        else:
            finish = "tool_calls" if self._tool_index else "stop"
        chunks = [self._chunk({}, finish)]
        if self.client_wants_usage:
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = chat_usage(final.get("usage"))
            chunks.append(last)
        return b"".join(openai_chat.sse(chunk) for chunk in chunks) + b"data: [DONE]\n\n"


class Numbered(Translator):
    """Counts the events a Responses client was sent, so that the relay's own ``error`` event
    ending a broken stream carries the next ``sequence_number`` (``error_event``), as the
    SDKs expect. Wraps the translator that makes the events, passed through, converted or
    chained; usage, ending and the answer's id are the inner one's. Every event, the
    upstream's or the relay's, is one SSE block ending in a blank line: counting those is
    counting events."""

    def __init__(self, inner: Translator):
        super().__init__()
        self._inner = inner
        self._sent = 0

    def _feed(self, event: Event) -> tuple[bytes, str]:
        try:
            data, text = self._inner.feed(event)
        finally:
            self._copy()
        self._sent += data.count(b"\n\n")
        return data, text

    def _finish(self) -> bytes:
        try:
            data = self._inner.finish()
        finally:
            self._copy()
        self._sent += data.count(b"\n\n")
        return data

    def error_event(self, error_type: str) -> bytes:
        return stream_error(error_type, self._sent)

    def _copy(self) -> None:
        self.usage = self._inner.usage
        self.usage_problem = self._inner.usage_problem
        self.completed = self._inner.completed
        self.answer_id = self._inner.answer_id


def reframe(translator: Translator, client_body: dict | None) -> Translator:
    """The translator a Responses client's stream goes through (relay.formats.translator)."""
    return Numbered(translator)


# --- To and from the hub ----------------------------------------------------------------------


def passthrough(*, model: str, client_wants_usage: bool) -> Translator:
    """The translator for a Responses upstream serving a Responses client."""
    return ResponsesPassthrough()


def stream_to_hub(*, model: str, client_wants_usage: bool) -> Translator:
    """The translator for a Responses upstream serving a hub (OpenAI chat) client."""
    return ResponsesToHub(model=model, client_wants_usage=client_wants_usage)


def stream_from_hub(*, model: str) -> Translator:
    """The translator for a hub (OpenAI chat) upstream serving a Responses client."""
    return HubToResponses(model=model)
