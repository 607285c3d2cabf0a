"""Google's Gemini ``generateContent`` format, and its conversions to and from the hub (OpenAI's
Chat Completions, relay.formats.openai_chat).

Its error body (``{"error": {"code", "message", "status"}}``), its two stream framings (SSE
with ``?alt=sse``, otherwise one JSON array whose elements arrive as they are made), the event
that ends a broken stream, the reading of its usage, the checks on its stream chunks, the
translators, and the conversions of requests, whole answers and streams, each way.

A Gemini request names its model, and whether it streams, in its URL. Inside the relay the
body carries them (``model``, ``stream`` and ``alt``: ``URL_FIELDS``), put there by
``request_from_url`` when the call is admitted, so the relay reads a Gemini call like any other;
the Gemini provider (relay.providers.gemini) takes them out again and builds the upstream URL.
``request_from_url`` also reads Google's snake_case spellings (``system_instruction``,
``inline_data``...), which Google's own examples use, as their camelCase names.

What the hub cannot express raises ``ConversionError`` (a 400 naming it): parts other than
text, inline data, file URIs and function calls and responses; tools other than function
declarations; a cached content reference. Dropped on the way to another format, as documented
in docs/architecture.md: ``safetySettings`` (no other provider has them), ``topK``,
``thinkingConfig``, and the model's own thought parts in earlier turns.

The conversions are pure: dicts in, dicts out, no Django and no I/O.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from billing.pricing import TokenUsage
from relay.formats import openai_chat
from relay.formats.common import (
    STREAM_BROKE_OFF,
    ConversionError,
    Event,
    EventParser,
    MalformedUpstream,
    Translator,
    UpstreamStreamError,
    UsageProblem,
    json_object,
    malformed,
    reads_upstream,
    token_count,
)
from relay.formats.openai_chat import DONE, check_openai_chunk, openai_chunk, openai_chunk_text

if TYPE_CHECKING:  # relay.errors renders through this module
    from relay.errors import RelayError

# The parts of a Gemini call its URL carries, kept in the body while the relay serves it.
URL_FIELDS = ("model", "stream", "alt")

# Google's status name for each HTTP status it answers with.
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

GEMINI_TO_OPENAI_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
OPENAI_TO_GEMINI_FINISH = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",  # Gemini ends a turn of function calls with STOP
    "function_call": "STOP",
    "content_filter": "SAFETY",
}

# Google's snake_case field names (its REST examples use them) and their camelCase names.
# Only these keys are renamed: values under ``OPAQUE_FIELDS`` are the client's own data (a
# function's arguments, a JSON schema) and are left exactly as sent.
SNAKE_TO_CAMEL = {
    name: re.sub(r"_([a-z])", lambda match: match[1].upper(), name)
    for name in (
        "system_instruction",
        "inline_data",
        "file_data",
        "mime_type",
        "file_uri",
        "display_name",
        "function_call",
        "function_response",
        "function_declarations",
        "function_calling_config",
        "allowed_function_names",
        "tool_config",
        "generation_config",
        "max_output_tokens",
        "top_p",
        "top_k",
        "stop_sequences",
        "candidate_count",
        "response_mime_type",
        "response_schema",
        "response_json_schema",
        "parameters_json_schema",
        "presence_penalty",
        "frequency_penalty",
        "response_logprobs",
        "response_modalities",
        "thinking_config",
        "thinking_budget",
        "include_thoughts",
        "safety_settings",
        "cached_content",
        "google_search",
        "google_search_retrieval",
        "code_execution",
        "url_context",
        "executable_code",
        "code_execution_result",
        "video_metadata",
        "thought_signature",
        "media_resolution",
        "speech_config",
    )
}
OPAQUE_FIELDS = frozenset(
    {"args", "response", "parameters", "responseSchema", "responseJsonSchema"}
    | {"parametersJsonSchema"}
)

DATA_URL = re.compile(r"^data:(?P<mime>[^;,]+)[^,]*;base64,(?P<data>.*)$", re.DOTALL)
AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}
IMAGE_TYPES_BY_SUFFIX = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}


# --- Errors and framing ---------------------------------------------------------------------------


def error_status(error: RelayError) -> int:
    return error.status


def error_body(error: RelayError) -> dict:
    """The error as Google spells it, with the relay's code as the ErrorInfo reason (what a
    client can tell an empty balance from a rate limit by)."""
    status = error_status(error)
    body: dict[str, Any] = {
        "code": status,
        "message": error.message,
        "status": STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"),
    }
    if error.code:
        body["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": error.code.upper(),
                "domain": "sluice",
            }
        ]
    return {"error": body}


def sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def stream_error(error_type: str) -> bytes:
    """The event that ends a broken stream (``overloaded_error`` says UNAVAILABLE)."""
    unavailable = error_type == "overloaded_error"
    return sse(
        {
            "error": {
                "code": 503 if unavailable else 500,
                "message": STREAM_BROKE_OFF,
                "status": "UNAVAILABLE" if unavailable else "INTERNAL",
            }
        }
    )


# --- The URL's parts ------------------------------------------------------------------------------


def request_from_url(body: dict, *, model: str, stream: bool, query: str) -> dict:
    """The client's body as the relay reads it: camelCase field names, and the model, whether
    it streams and its framing (``alt``) from the URL."""
    body = _camel(body, 0)
    body.pop("alt", None)
    body["model"] = model.removeprefix("models/")
    body["stream"] = stream
    if stream and "sse" in parse_qs(query).get("alt", ()):
        body["alt"] = "sse"
    return body


def _camel(value: Any, depth: int) -> Any:
    if isinstance(value, list):
        return [_camel(item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    renamed = {}
    for key, item in value.items():
        name = SNAKE_TO_CAMEL.get(key, key)
        renamed[name] = item if name in OPAQUE_FIELDS else _camel(item, depth + 1)
    return renamed


def wants_sse(body: dict) -> bool:
    return body.get("alt") == "sse"


def without_url_fields(body: dict) -> dict:
    """The body to send Google: what the URL carries taken out."""
    return {key: value for key, value in body.items() if key not in URL_FIELDS}


# --- Usage ----------------------------------------------------------------------------------------


def normalize_gemini_usage(usage: dict | None) -> TokenUsage | None:
    """Google counts cached input inside promptTokenCount, and thinking apart from (not inside)
    candidatesTokenCount; a tool's own prompt (toolUsePromptTokenCount) is input too.

    None when there is no usage; ``UsageProblem`` when a figure is not a token count or the
    cached part exceeds the prompt.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise UsageProblem("usageMetadata is not an object", usage)
    prompt = token_count(usage, "promptTokenCount", usage=usage)
    cached = token_count(usage, "cachedContentTokenCount", usage=usage)
    tool_prompt = token_count(usage, "toolUsePromptTokenCount", usage=usage)
    candidates = token_count(usage, "candidatesTokenCount", usage=usage)
    thoughts = token_count(usage, "thoughtsTokenCount", usage=usage)
    token_count(usage, "totalTokenCount", usage=usage)  # not used, but must be a count too
    if cached > prompt:
        raise UsageProblem("cached input exceeds the prompt", usage)
    return TokenUsage(
        input_tokens=prompt - cached + tool_prompt,
        cached_input_tokens=cached,
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
    )


def _figure(usage: dict, field: str) -> int:
    """A count shown to the client: a figure that is not a count shows as 0 (billing reads
    the upstream's usage itself, and flags such figures)."""
    value = usage.get(field)
    if type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and value >= 0 else 0


def openai_usage_from_gemini(usage: dict | None) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    prompt = _figure(usage, "promptTokenCount") + _figure(usage, "toolUsePromptTokenCount")
    thoughts = _figure(usage, "thoughtsTokenCount")
    completion = _figure(usage, "candidatesTokenCount") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _figure(usage, "cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def gemini_usage_from_openai(usage: dict | None) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    prompt = _figure(usage, "prompt_tokens")
    completion = _figure(usage, "completion_tokens")
    prompt_details = usage.get("prompt_tokens_details")
    output_details = usage.get("completion_tokens_details")
    cached = _figure(prompt_details, "cached_tokens") if isinstance(prompt_details, dict) else 0
    thoughts = (
        _figure(output_details, "reasoning_tokens") if isinstance(output_details, dict) else 0
    )
    thoughts = min(thoughts, completion)
    metadata = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion - thoughts,
        "totalTokenCount": prompt + completion,
    }
    if cached:
        metadata["cachedContentTokenCount"] = min(cached, prompt)
    if thoughts:
        metadata["thoughtsTokenCount"] = thoughts
    return metadata


# --- Requests: Gemini -> hub


def request_to_hub(body: dict) -> dict:
    """A generateContent body (as ``request_from_url`` left it) as a Chat Completions body."""
    if body.get("cachedContent"):
        raise ConversionError("cachedContent refers to a cache only Google holds.")
    messages: list[dict] = []
    system = _system_text(body.get("systemInstruction"))
    if system:
        messages.append({"role": "system", "content": system})
    pending_ids: dict[str, list[str]] = {}  # function name -> ids of calls not yet answered
    for index, content in enumerate(_list(body.get("contents"))):
        if not isinstance(content, dict):
            raise ConversionError(f"contents[{index}] is not an object.")
        if content.get("role") == "model":
            messages.append(_model_turn(content, index, pending_ids))
        else:
            messages.extend(_user_turn(content, index, pending_ids))

    result: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = [
        tool for index, tool in enumerate(_list(body.get("tools"))) for tool in _tools(tool, index)
    ]
    if tools:
        result["tools"] = tools
        choice = _tool_choice(body.get("toolConfig"))
        if choice is not None:
            result["tool_choice"] = choice
    _generation_config_to_hub(body.get("generationConfig"), result)
    if body.get("stream"):
        result["stream"] = True
        result["stream_options"] = {"include_usage": True}
    return result


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _system_text(instruction: Any) -> str:
    if instruction is None:
        return ""
    if isinstance(instruction, str):
        return instruction
    texts = []
    for part in _list(instruction.get("parts") if isinstance(instruction, dict) else None):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise ConversionError("systemInstruction may only hold text parts.")
        texts.append(part["text"])
    return "\n\n".join(texts)


def _model_turn(content: dict, index: int, pending_ids: dict[str, list[str]]) -> dict:
    texts: list[str] = []
    calls: list[dict] = []
    for number, part in enumerate(_list(content.get("parts"))):
        where = f"contents[{index}].parts[{number}]"
        if not isinstance(part, dict):
            raise ConversionError(f"{where} is not an object.")
        if part.get("thought"):
            continue  # the model's own reasoning: no other format takes it back
        if "functionCall" in part:
            call = part["functionCall"] if isinstance(part["functionCall"], dict) else {}
            name = call.get("name") or ""
            call_id = call.get("id") or f"call_{index}_{number}"
            pending_ids.setdefault(name, []).append(call_id)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(call.get("args") or {})},
                }
            )
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise ConversionError(f"{where}: {_part_kind(part)} parts cannot be converted.")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _user_turn(content: dict, index: int, pending_ids: dict[str, list[str]]) -> list[dict]:
    """Function responses first (as tool messages, which must follow the calls), then the
    rest of the turn as one user message."""
    tool_messages: list[dict] = []
    parts: list[dict] = []
    for number, part in enumerate(_list(content.get("parts"))):
        where = f"contents[{index}].parts[{number}]"
        if not isinstance(part, dict):
            raise ConversionError(f"{where} is not an object.")
        if "functionResponse" in part:
            response = part["functionResponse"]
            response = response if isinstance(response, dict) else {}
            name = response.get("name") or ""
            waiting = pending_ids.get(name) or []
            call_id = response.get("id") or (waiting.pop(0) if waiting else f"call_{name}")
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": json.dumps(response.get("response") or {}),
                }
            )
        else:
            parts.append(_part_to_openai(part, where))
    if not parts:
        return tool_messages
    if all(part["type"] == "text" for part in parts):
        user_content: str | list = "".join(part["text"] for part in parts)
    else:
        user_content = parts
    return [*tool_messages, {"role": "user", "content": user_content}]


def _part_kind(part: dict) -> str:
    return next((key for key in part if key not in ("thought", "thoughtSignature")), "empty")


def _part_to_openai(part: dict, where: str) -> dict:
    if isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if isinstance(part.get("inlineData"), dict):
        data = part["inlineData"]
        mime = str(data.get("mimeType") or "")
        payload = str(data.get("data") or "")
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{payload}"}}
        if mime in AUDIO_FORMATS:
            return {
                "type": "input_audio",
                "input_audio": {"data": payload, "format": AUDIO_FORMATS[mime]},
            }
        if mime == "application/pdf":
            return {
                "type": "file",
                "file": {"filename": "document.pdf", "file_data": f"data:{mime};base64,{payload}"},
            }
        raise ConversionError(f"{where}: inline data of type {mime!r} cannot be converted.")
    if isinstance(part.get("fileData"), dict):
        uri = str(part["fileData"].get("fileUri") or "")
        mime = str(part["fileData"].get("mimeType") or "")
        if uri.startswith(("http://", "https://")) and (not mime or mime.startswith("image/")):
            return {"type": "image_url", "image_url": {"url": uri}}
        raise ConversionError(
            f"{where}: only images at http(s) URLs can be converted from fileData."
        )
    raise ConversionError(f"{where}: {_part_kind(part)} parts cannot be converted.")


def _tools(tool: Any, index: int) -> list[dict]:
    if not isinstance(tool, dict):
        raise ConversionError(f"tools[{index}] is not an object.")
    others = [key for key in tool if key != "functionDeclarations"]
    if others:
        raise ConversionError(f"tools[{index}]: {others[0]} tools cannot be converted.")
    converted = []
    for declaration in _list(tool.get("functionDeclarations")):
        if not isinstance(declaration, dict):
            raise ConversionError(f"tools[{index}].functionDeclarations: not an object.")
        function: dict[str, Any] = {"name": declaration.get("name") or ""}
        if declaration.get("description"):
            function["description"] = declaration["description"]
        schema = declaration.get("parametersJsonSchema")
        if schema is None and declaration.get("parameters") is not None:
            schema = openapi_to_json_schema(declaration["parameters"])
        function["parameters"] = schema or {"type": "object", "properties": {}}
        converted.append({"type": "function", "function": function})
    return converted


def openapi_to_json_schema(schema: Any, depth: int = 0) -> Any:
    """Google's OpenAPI-style schema (types in capitals, ``nullable``) as JSON Schema."""
    if depth > 32 or not isinstance(schema, dict | list):
        return schema
    if isinstance(schema, list):
        return [openapi_to_json_schema(item, depth + 1) for item in schema]
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            converted[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            converted[key] = {
                name: openapi_to_json_schema(inner, depth + 1) for name, inner in value.items()
            }
        elif key in ("items", "anyOf") and isinstance(value, dict | list):
            converted[key] = openapi_to_json_schema(value, depth + 1)
        elif key in ("nullable", "propertyOrdering"):
            continue
        else:
            converted[key] = value
    if schema.get("nullable") is True and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    return converted


def _tool_choice(config: Any) -> str | dict | None:
    calling = config.get("functionCallingConfig") if isinstance(config, dict) else None
    if not isinstance(calling, dict):
        return None
    mode = str(calling.get("mode") or "AUTO").upper()
    allowed = _list(calling.get("allowedFunctionNames"))
    if mode == "NONE":
        return "none"
    if mode in ("ANY", "VALIDATED"):
        if len(allowed) == 1:
            return {"type": "function", "function": {"name": allowed[0]}}
        return "required"
    return None if mode == "AUTO" else "auto"


def _generation_config_to_hub(config: Any, result: dict) -> None:
    if not isinstance(config, dict):
        return
    simple = {
        "maxOutputTokens": "max_tokens",
        "temperature": "temperature",
        "topP": "top_p",
        "candidateCount": "n",
        "presencePenalty": "presence_penalty",
        "frequencyPenalty": "frequency_penalty",
        "seed": "seed",
    }
    for name, hub_name in simple.items():
        if config.get(name) is not None:
            result[hub_name] = config[name]
    if config.get("stopSequences"):
        result["stop"] = list(config["stopSequences"])
    modalities = [str(m).upper() for m in _list(config.get("responseModalities"))]
    if any(modality != "TEXT" for modality in modalities):
        raise ConversionError("generationConfig.responseModalities: only TEXT can be converted.")
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema")
        if schema is None and config.get("responseSchema") is not None:
            schema = openapi_to_json_schema(config["responseSchema"])
        if schema is None:
            result["response_format"] = {"type": "json_object"}
        else:
            result["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema},
            }
    elif config.get("responseMimeType") not in (None, "text/plain"):
        raise ConversionError(
            f"generationConfig.responseMimeType {config['responseMimeType']!r} cannot be converted."
        )


# --- Requests: hub -> Gemini


def request_from_hub(body: dict, *, default_max_tokens: int) -> dict:
    """A Chat Completions body as a generateContent body, with ``model`` and ``stream`` kept
    for the Gemini provider to put in the URL."""
    system_texts: list[str] = []
    contents: list[dict] = []
    names_by_id: dict[str, str] = {}
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system_texts.extend(_texts(message.get("content"), role))
        elif role == "user":
            _append(contents, "user", _openai_parts(message.get("content")))
        elif role == "assistant":
            parts = _openai_parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                names_by_id[call.get("id", "")] = function.get("name", "")
                parts.append(
                    {
                        "functionCall": {
                            "name": function.get("name", ""),
                            "args": _arguments(function.get("arguments")),
                        }
                    }
                )
            _append(contents, "model", parts)
        elif role == "tool":
            name = names_by_id.get(message.get("tool_call_id", ""), "")
            text = "\n\n".join(_texts(message.get("content"), "tool"))
            _append(
                contents,
                "user",
                [{"functionResponse": {"name": name, "response": _function_response(text)}}],
            )
        else:
            raise ConversionError(f"Unsupported message role: {role!r}")

    result: dict[str, Any] = {"model": body.get("model"), "contents": contents}
    if system_texts:
        result["systemInstruction"] = {"parts": [{"text": "\n\n".join(system_texts)}]}
    tools = body.get("tools")
    if tools:
        result["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in tools]}]
        config = _calling_config(body.get("tool_choice"))
        if config is not None:
            result["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config_from_hub(body)
    if generation:
        result["generationConfig"] = generation
    result["stream"] = bool(body.get("stream"))
    return result


def _texts(content: Any, role: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise ConversionError(f"Unsupported content part in a {role} message: {part!r:.40}")
        texts.append(part.get("text", ""))
    return texts


def _append(contents: list[dict], role: str, parts: list[dict]) -> None:
    """Gemini takes turns of one role together: a run of one role becomes one turn."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _openai_parts(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            reference = part.get("image_url")
            url = reference.get("url", "") if isinstance(reference, dict) else reference or ""
            parts.append(_url_part(url))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = "audio/mp3" if audio.get("format") == "mp3" else "audio/wav"
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        elif kind == "file":
            data = (part.get("file") or {}).get("file_data") or ""
            match = DATA_URL.match(data)
            if not match:
                raise ConversionError("Only files sent as base64 data URLs can be converted.")
            parts.append({"inlineData": {"mimeType": match["mime"], "data": match["data"]}})
        else:
            raise ConversionError(f"Unsupported content part: {kind!r}")
    return parts


def _url_part(url: str) -> dict:
    match = DATA_URL.match(url)
    if match:
        return {"inlineData": {"mimeType": match["mime"], "data": match["data"]}}
    if url.startswith("data:"):
        raise ConversionError("Image data URLs must be base64-encoded")
    if url.startswith(("http://", "https://")):
        path = url.split("?", 1)[0].lower()
        mime = next(
            (kind for suffix, kind in IMAGE_TYPES_BY_SUFFIX.items() if path.endswith(suffix)),
            "image/jpeg",
        )
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise ConversionError("Image URLs must be data: or http(s): URLs")


def _arguments(arguments: Any) -> dict:
    """A tool call's JSON arguments as an object (anything else becomes {}: Gemini needs one,
    and failing a conversation over one bad historic call would help no one)."""
    try:
        parsed = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _function_response(text: str) -> dict:
    """A tool's result as the object Gemini wants: the JSON object it is, else wrapped."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"content": text}
    return parsed if isinstance(parsed, dict) else {"content": parsed}


def _declaration(tool: dict) -> dict:
    if tool.get("type") != "function":
        raise ConversionError(f"Unsupported tool type: {tool.get('type')!r}")
    function = tool.get("function") or {}
    declaration: dict[str, Any] = {"name": function.get("name", "")}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        # JSON Schema as given: Gemini reads it whole from parametersJsonSchema.
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _calling_config(tool_choice: Any) -> dict | None:
    if tool_choice is None or tool_choice == "auto":
        return None
    if tool_choice == "none":
        return {"mode": "NONE"}
    if tool_choice == "required":
        return {"mode": "ANY"}
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        return {"mode": "ANY", "allowedFunctionNames": [tool_choice["function"]["name"]]}
    raise ConversionError(f"Unsupported tool_choice: {tool_choice!r:.60}")


def _generation_config_from_hub(body: dict) -> dict:
    config: dict[str, Any] = {}
    limit = next(
        (body[name] for name in ("max_completion_tokens", "max_tokens") if body.get(name)), None
    )
    if limit is not None:
        config["maxOutputTokens"] = limit
    simple = {
        "temperature": "temperature",
        "top_p": "topP",
        "n": "candidateCount",
        "presence_penalty": "presencePenalty",
        "frequency_penalty": "frequencyPenalty",
        "seed": "seed",
    }
    for name, gemini_name in simple.items():
        if body.get(name) is not None:
            config[gemini_name] = body[name]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            config["responseMimeType"] = "application/json"
            schema = (response_format.get("json_schema") or {}).get("schema")
            if schema is not None:
                config["responseJsonSchema"] = schema
    return config


# --- Answers --------------------------------------------------------------------------------------


def _finish_to_openai(reason: Any, has_calls: bool) -> str:
    if has_calls and reason in (None, "STOP"):
        return "tool_calls"
    return GEMINI_TO_OPENAI_FINISH.get(reason if isinstance(reason, str) else "", "stop")


def _candidate_parts(candidate: dict) -> list[dict]:
    content = candidate.get("content")
    if content is None:
        return []
    if not isinstance(content, dict):
        raise MalformedUpstream(detail="candidate content is not an object")
    parts = content.get("parts") or []
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise MalformedUpstream(detail="candidate parts are not a list of objects")
    return parts


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


@reads_upstream(MalformedUpstream)
def answer_to_hub(answer: dict, *, model: str) -> dict:
    """A GenerateContentResponse as a chat completion."""
    candidates = answer.get("candidates") or []
    if not isinstance(candidates, list):
        raise MalformedUpstream(detail="candidates is not a list")
    choices = []
    for position, candidate in enumerate(candidates):
        if not isinstance(candidate, dict):
            raise MalformedUpstream(detail="a candidate is not an object")
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict] = []
        for part in _candidate_parts(candidate):
            if "functionCall" in part:
                call = part["functionCall"]
                calls.append(
                    {
                        "id": call.get("id") or _new_call_id(),
                        "type": "function",
                        "function": {
                            "name": call["name"],
                            "arguments": json.dumps(call.get("args") or {}),
                        },
                    }
                )
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") else texts).append(part["text"])
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts or not calls else None,
            "refusal": None,
        }
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": candidate.get("index", position),
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_to_openai(candidate.get("finishReason"), bool(calls)),
            }
        )
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": "", "refusal": None},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    return {
        "id": "chatcmpl-" + str(answer.get("responseId") or uuid.uuid4().hex[:24]),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": openai_usage_from_gemini(answer.get("usageMetadata")),
    }


@reads_upstream(MalformedUpstream)
def answer_from_hub(answer: dict, *, model: str) -> dict:
    """A chat completion as a GenerateContentResponse."""
    choices = answer.get("choices")
    if not isinstance(choices, list):
        raise MalformedUpstream(detail="choices is not a list")
    candidates = []
    for position, choice in enumerate(choices):
        message = choice.get("message") or {}
        parts: list[dict] = []
        if message.get("reasoning_content"):
            parts.append({"text": message["reasoning_content"], "thought": True})
        if message.get("content"):
            parts.append({"text": message["content"]})
        for call in message.get("tool_calls") or []:
            function = call["function"]
            parts.append(
                {
                    "functionCall": {
                        "name": function["name"],
                        "args": _arguments(function.get("arguments")),
                    }
                }
            )
        candidates.append(
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": OPENAI_TO_GEMINI_FINISH.get(choice.get("finish_reason"), "STOP"),
                "index": choice.get("index", position),
            }
        )
    return {
        "candidates": candidates,
        "usageMetadata": gemini_usage_from_openai(answer.get("usage")),
        "modelVersion": model,
        "responseId": str(answer.get("id") or uuid.uuid4().hex),
    }


# --- Streams --------------------------------------------------------------------------------------


def check_gemini_chunk(chunk: dict) -> None:
    """Raise ``UpstreamStreamError`` for a chunk that carries an error, or whose shape a
    client relies on is wrong (candidates a list of objects with object content, parts a
    list of objects, usageMetadata an object)."""
    if "error" in chunk:
        error = chunk["error"]
        status = error.get("status") if isinstance(error, dict) else None
        error_type = "overloaded_error" if status == "UNAVAILABLE" else "api_error"
        raise UpstreamStreamError(
            "The upstream ended the stream with an error.",
            error_type=error_type,
            detail="error chunk",
        )
    candidates = chunk.get("candidates")
    if candidates is not None:
        if not isinstance(candidates, list):
            raise malformed("candidates is not a list")
        for candidate in candidates:
            if not isinstance(candidate, dict):
                raise malformed("a candidate is not an object")
            try:
                _candidate_parts(candidate)
            except MalformedUpstream as problem:
                raise malformed(problem.detail) from None
    usage = chunk.get("usageMetadata")
    if usage is not None and not isinstance(usage, dict):
        raise malformed("usageMetadata is not an object")


def gemini_chunk_text(chunk: dict) -> str:
    """Output text in a Gemini chunk (text, thoughts, function names and arguments)."""
    pieces = []
    for candidate in _list(chunk.get("candidates")):
        content = candidate.get("content") if isinstance(candidate, dict) else None
        for part in _list(content.get("parts") if isinstance(content, dict) else None):
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                pieces.append(part["text"])
            call = part.get("functionCall")
            if isinstance(call, dict):
                pieces.append(str(call.get("name") or "") + json.dumps(call.get("args") or {}))
    return "".join(pieces)


def _finished(chunk: dict) -> bool:
    return any(
        isinstance(candidate, dict) and candidate.get("finishReason")
        for candidate in _list(chunk.get("candidates"))
    )


class GeminiPassthrough(Translator):
    """Gemini upstream, Gemini client: the chunks unchanged, usage read on the way (each chunk's
    usageMetadata holds the counts so far; the last one the whole call's)."""

    def __init__(self) -> None:
        super().__init__()
        self._finished = False

    def _feed(self, event: Event) -> tuple[bytes, str]:
        chunk = json_object(event)
        check_gemini_chunk(chunk)
        if chunk.get("usageMetadata") is not None:
            self._report_usage(normalize_gemini_usage, chunk["usageMetadata"])
        self._finished = self._finished or _finished(chunk)
        return event.raw, gemini_chunk_text(chunk)

    def _finish(self) -> bytes:
        # Google's stream just ends: it ended properly if a candidate said why it finished.
        self.completed = self._finished
        return b""


class GeminiToOpenAI(Translator):
    """Gemini upstream, hub (OpenAI) client. A function call arrives whole in one chunk, so it
    becomes one tool-call delta with its name and all its arguments."""

    def __init__(self, *, model: str, client_wants_usage: bool):
        super().__init__()
        self.model = model
        self.client_wants_usage = client_wants_usage
        self.completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self._started: set[int] = set()
        self._tool_counts: dict[int, int] = {}
        self._finished = False
        self._usage: dict | None = None

    def _feed(self, event: Event) -> tuple[bytes, str]:
        chunk = json_object(event)
        check_gemini_chunk(chunk)
        if chunk.get("usageMetadata") is not None:
            self._usage = chunk["usageMetadata"]
            self._report_usage(normalize_gemini_usage, self._usage)
        out = []
        for position, candidate in enumerate(_list(chunk.get("candidates"))):
            index = candidate.get("index", position)
            if type(index) is not int:
                raise malformed("a candidate's index is not an integer")
            delta: dict[str, Any] = {}
            if index not in self._started:
                self._started.add(index)
                delta["role"] = "assistant"
            texts: list[str] = []
            thoughts: list[str] = []
            calls: list[dict] = []
            for part in _candidate_parts(candidate):
                call = part.get("functionCall")
                if isinstance(call, dict):
                    number = self._tool_counts.get(index, 0)
                    self._tool_counts[index] = number + 1
                    calls.append(
                        {
                            "index": number,
                            "id": call.get("id") or _new_call_id(),
                            "type": "function",
                            "function": {
                                "name": str(call.get("name") or ""),
                                "arguments": json.dumps(call.get("args") or {}),
                            },
                        }
                    )
                elif isinstance(part.get("text"), str):
                    (thoughts if part.get("thought") else texts).append(part["text"])
            if thoughts:
                delta["reasoning_content"] = "".join(thoughts)
            if texts:
                delta["content"] = "".join(texts)
            if calls:
                delta["tool_calls"] = calls
            reason = candidate.get("finishReason")
            finish = None
            if reason:
                self._finished = True
                finish = _finish_to_openai(reason, bool(self._tool_counts.get(index)))
            if delta or finish:
                out.append(openai_chat.sse(self._chunk(index, delta, finish)))
        return b"".join(out), gemini_chunk_text(chunk)

    def _finish(self) -> bytes:
        self.completed = self._finished
        tail = b""
        if self.client_wants_usage:
            usage_chunk = self._chunk(0, {}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = openai_usage_from_gemini(self._usage)
            tail = openai_chat.sse(usage_chunk)
        return tail + b"data: [DONE]\n\n"

    def _chunk(self, index: int, delta: dict, finish: str | None) -> dict:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }


class OpenAIToGemini(Translator):
    """Hub (OpenAI) upstream, Gemini client. Text goes on as it comes; a tool call's argument
    fragments are gathered and sent as one functionCall part, as Gemini sends them, once the
    call is complete; the finish reason and the usage (which OpenAI sends after the finish)
    go in the last chunk."""

    def __init__(self, *, model: str):
        super().__init__()
        self.model = model
        self.response_id = uuid.uuid4().hex
        self._calls: dict[tuple[int, int], dict] = {}  # (choice, tool index) -> name, args
        self._reasons: dict[int, str] = {}  # choice -> its finish reason
        self._usage: dict | None = None

    def _feed(self, event: Event) -> tuple[bytes, str]:
        if event.data == DONE:
            self.completed = True
            return b"", ""
        chunk = openai_chunk(event)
        check_openai_chunk(chunk)
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
            self._report_usage(openai_chat.normalize_openai_usage, chunk["usage"])
        out = []
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            parts: list[dict] = []
            if isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
                parts.append({"text": delta["reasoning_content"], "thought": True})
            if isinstance(delta.get("content"), str) and delta["content"]:
                parts.append({"text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                gathered = self._calls.setdefault(
                    (index, call.get("index", 0)), {"name": "", "arguments": ""}
                )
                gathered["name"] += function.get("name") or ""
                gathered["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self._reasons[index] = choice["finish_reason"]
            if parts:
                out.append(sse(self._chunk([self._candidate(index, parts)])))
        return b"".join(out), openai_chunk_text(chunk)

    def _finish(self) -> bytes:
        indexes = sorted(set(self._reasons) | {index for index, _ in self._calls} or {0})
        candidates = []
        for index in indexes:
            parts = [
                {"functionCall": {"name": call["name"], "args": _arguments(call["arguments"])}}
                for (choice, _), call in sorted(self._calls.items())
                if choice == index
            ]
            candidate = self._candidate(index, parts)
            candidate["finishReason"] = OPENAI_TO_GEMINI_FINISH.get(
                self._reasons.get(index, "stop"), "STOP"
            )
            candidates.append(candidate)
        last = self._chunk(candidates)
        last["usageMetadata"] = gemini_usage_from_openai(self._usage)
        return sse(last)

    @staticmethod
    def _candidate(index: int, parts: list[dict]) -> dict:
        return {"content": {"role": "model", "parts": parts}, "index": index}

    def _chunk(self, candidates: list[dict]) -> dict:
        return {
            "candidates": candidates,
            "modelVersion": self.model,
            "responseId": self.response_id,
        }


class JsonArrayStream(Translator):
    """A Gemini client that streams without ``alt=sse`` gets one JSON array, its elements
    sent as they are made: ``[{...}``, then ``,\\r\\n{...}``, then ``]``. Wraps the translator
    that makes the SSE form and reframes what it sends; usage and ending are the inner one's.

    An error event ending a broken stream stays in SSE form, which leaves the array unclosed:
    the client sees a stream that did not end properly."""

    content_type = "application/json"  # what the stream is sent as (relay.proxy)

    def __init__(self, inner: Translator):
        super().__init__()
        self._inner = inner
        self._parser = EventParser()
        self._started = False

    def _feed(self, event: Event) -> tuple[bytes, str]:
        try:
            data, text = self._inner.feed(event)
        finally:
            self._copy()
        return self._reframe(data), text

    def _finish(self) -> bytes:
        try:
            data = self._inner.finish()
        finally:
            self._copy()
        return self._reframe(data) + (b"]" if self._started else b"[]")

    def _reframe(self, data: bytes) -> bytes:
        out = []
        for event in self._parser.feed(data):
            out.append((b",\r\n" if self._started else b"[") + event.data)
            self._started = True
        return b"".join(out)

    def _copy(self) -> None:
        self.usage = self._inner.usage
        self.usage_problem = self._inner.usage_problem
        self.completed = self._inner.completed


def reframe(translator: Translator, client_body: dict | None) -> Translator:
    """The translator a Gemini client's stream goes through: as it is for ``alt=sse``, in a
    JSON array otherwise."""
    if client_body is not None and not wants_sse(client_body):
        return JsonArrayStream(translator)
    return translator


# --- To and from the hub --------------------------------------------------------------------------


def passthrough(*, model: str, client_wants_usage: bool) -> Translator:
    """The translator for a Gemini upstream serving a Gemini client."""
    return GeminiPassthrough()


def stream_to_hub(*, model: str, client_wants_usage: bool) -> Translator:
    """The translator for a Gemini upstream serving a hub (OpenAI) client."""
    return GeminiToOpenAI(model=model, client_wants_usage=client_wants_usage)


def stream_from_hub(*, model: str) -> Translator:
    """The translator for a hub (OpenAI) upstream serving a Gemini client."""
    return OpenAIToGemini(model=model)


# --- Counting and listing -------------------------------------------------------------------------


def countable(body: dict) -> tuple[str, list[dict], list]:
    """(system text, messages, tools) of a Gemini body, hub-shaped, for counting its input.

    Lenient where ``request_to_hub`` refuses: a part no other format has (code, a Google file)
    is counted as its JSON text, so a call only a Gemini channel can serve is still counted.
    """
    messages = []
    for content in _list(body.get("contents")):
        if not isinstance(content, dict):
            continue
        parts = []
        for part in _list(content.get("parts")):
            if not isinstance(part, dict):
                continue
            try:
                parts.append(_part_to_openai(part, ""))
            except ConversionError:
                parts.append({"type": "text", "text": json.dumps(part)})
        messages.append({"role": "user", "content": parts})
    try:
        system = _system_text(body.get("systemInstruction"))
    except ConversionError:
        system = json.dumps(body.get("systemInstruction"))
    return system, messages, _list(body.get("tools"))


def model_entry(model: str, *, max_output_tokens: int) -> dict:
    """One model of ``GET /v1beta/models``, in Google's shape."""
    return {
        "name": f"models/{model}",
        "baseModelId": model,
        "version": "001",
        "displayName": model,
        "description": f"{model}, served by this site.",
        "outputTokenLimit": max_output_tokens,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }
