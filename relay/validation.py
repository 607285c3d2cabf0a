"""Request shapes: a malformed body answers 400 naming its bad field, never 500.

`parse_json` turns the raw body into a dict, once; `validate_request` checks that dict against
the shape of its operation, following the OpenAI and Anthropic API references. One small
pydantic model per shape, all built at import. The models only check: the relay goes on working
on the client's own dict, nothing is re-serialized, and fields no model names pass through
untouched (`extra="allow"`: clients send many fields, and both APIs grow new ones often).

Types are strict, as the JSON arrived: `true` is not the integer 1 and `"3"` is not 3. An
optional field may be null, as OpenAI's API allows and many clients send (the relay's own
code reads a null like an absent field, and an upstream that minds says so itself).

Every union picks its member from the value itself (the JSON type, or a field such as `type`
or `role`) rather than trying each member in turn: one member's errors are the ones that
matter, and it is faster. Pydantic puts the member's tag in an error's location; the tags are
written in angle brackets so that `_param` can drop them when it turns the location into a
path a developer can read, such as `messages[0].content[1].image_url.url`.
"""

# The unions below (`_by_field`, `_by_json_type`) are built at run time, so to mypy they are
# values, not types: a field annotated with one is Any to the checker, which is what it is.
# mypy: disable-error-code="valid-type"

import json
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
)
from pydantic_core import ErrorDetails

from relay import errors
from relay.operations import (
    AUDIO_SPEECH,
    AUDIO_TRANSCRIPTIONS,
    AUDIO_TRANSLATIONS,
    GENERATE_CONTENT,
    IMAGES_EDITS,
    IMAGES_GENERATIONS,
    IMAGES_VARIATIONS,
    MODERATIONS,
    RERANK,
    STREAM_GENERATE_CONTENT,
)
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, RESPONSES

# Deeper bodies are refused before anything walks them recursively (pydantic, the token
# counter, the conversions); no real request comes near this.
MAX_JSON_DEPTH = 64

# An output cap no model comes near; a bigger one can only be a mistake (or a hold too big).
MAX_OUTPUT_TOKENS = 10_000_000
MAX_MODEL_NAME = 256


# --- Parsing ------------------------------------------------------------------------------------


class _NotFinite(ValueError):
    """NaN, Infinity or a number too large for a float: JSON has no such numbers."""


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise _NotFinite(text)
    return value


def parse_json(raw: bytes) -> dict:
    """The body as a JSON object, or RelayError 400 (not JSON, not an object, nested deeper
    than MAX_JSON_DEPTH). Parses once."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotFinite:
        raise errors.invalid_request(
            "The JSON body holds a number that is not finite (NaN, Infinity or too large)."
        ) from None
    except RecursionError:  # json's own recursion, long before any limit of ours
        raise _too_deep() from None
    except ValueError:  # malformed JSON, or bytes that are not UTF-8/16/32
        raise errors.invalid_request(
            "We could not parse the JSON body of your request. Send valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    if _deeper_than(body, MAX_JSON_DEPTH):
        raise _too_deep()
    return body


def _too_deep() -> errors.RelayError:
    return errors.invalid_request(
        f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep."
    )


def _deeper_than(body: dict, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels (the body itself is level 1).

    A walk with its own stack, not recursion, so no depth can exhaust Python's.
    """
    stack: list[tuple[dict | list, int]] = [(body, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        children = container.values() if type(container) is dict else container
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


# --- Validation ---------------------------------------------------------------------------------


def validate_request(operation: str, body: dict) -> None:
    """RelayError 400 (errors.invalid_request(message, param=...)) naming the first bad field,
    e.g. param="messages[0].content[0]", message "messages[0].content[0]: Input should be a
    valid dictionary" or similar readable text."""
    try:
        SHAPES[operation].__pydantic_validator__.validate_python(body)
    except ValidationError as problem:
        first = problem.errors(include_url=False, include_input=False)[0]
        param = _param(first["loc"])
        if not param:  # the body itself
            raise errors.invalid_request("The request body must be a JSON object.") from None
        raise errors.invalid_request(f"{param}: {_message(first)}", param=param) from None


def _param(location: tuple[str | int, ...]) -> str:
    """A pydantic error location as a path into the body: `messages[0].content[1].text`."""
    path = ""
    for step in location:
        if isinstance(step, int):
            path += f"[{step}]"
        elif not step.startswith("<"):  # "<...>" is a union member's tag, not a place
            path += f".{step}" if path else step
    return path


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "model_type":  # pydantic's text names our class, which means nothing outside
        return "Input should be a valid dictionary"
    if kind == "value_error":  # a check of ours: its own sentence
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "string_too_long":
        return f"too long (at most {error['ctx']['max_length']} characters)"
    return error["msg"]


# --- Building blocks ----------------------------------------------------------------------------


class Shape(BaseModel):
    """A JSON object of a known shape; fields it does not name are allowed and left alone."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


def _tagged(
    members: dict[str, Any], pick: Callable[[Any], str | None], *, expected: str | None = None
) -> Any:
    """A union of `members` (tag: type) whose member is the one `pick(value)` names; a value
    for which it names none is refused with "Input should be <expected>"."""
    choices = tuple(Annotated[shape, Tag(tag)] for tag, shape in members.items())
    refused = expected is not None
    return Annotated[
        Union[choices],  # noqa: UP007 (a Union of a tuple made at run time)
        Discriminator(
            pick,
            custom_error_type="json_type_mismatch" if refused else None,
            custom_error_message=f"Input should be {expected}" if refused else None,
        ),
    ]


def _by_field(
    field: str,
    members: dict[str, type[Shape]],
    *,
    otherwise: type[Shape],
    missing: type[Shape] | None = None,
) -> Any:
    """The member named by the value of `field` (`type`, `role`).

    Anything else, a value that is not an object or names no member, is checked against
    `otherwise`, whose errors then say what is wrong (often a Literal listing what is known,
    or an open shape that lets unknown kinds through). An object without the field is
    checked against `missing`, when given.
    """
    tag = "<{}>".format
    tags = {name: tag(shape.__name__) for name, shape in members.items()}
    fallback, absent = tag(otherwise.__name__), tag((missing or otherwise).__name__)

    def pick(value: Any) -> str:
        if type(value) is not dict:
            return fallback
        if field not in value:
            return absent
        kind = value[field]
        return tags.get(kind, fallback) if type(kind) is str else fallback

    shapes = [*members.values(), otherwise, missing or otherwise]
    if len(set(shapes)) == 1:
        return shapes[0]
    return _tagged({tag(shape.__name__): shape for shape in shapes}, pick)


JSON_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _by_json_type(members: dict[str, Any], *, expected: str) -> Any:
    """The member for the value's JSON type ("string", "array", "object", ...); another type
    is refused with "Input should be <expected>"."""

    def pick(value: Any) -> str | None:
        name = JSON_TYPES.get(type(value))
        return f"<{name}>" if name in members else None

    return _tagged({f"<{name}>": shape for name, shape in members.items()}, pick, expected=expected)


def _token_ids_or_text(*, at_least: int, at_most: int | None = None) -> Any:
    """A prompt or an embeddings input: a string, strings, token ids, or lists of token ids.

    The array member is chosen by its first item, so `[1, "a"]` is refused at index 1 as not
    a token id, rather than as matching none of four shapes.
    """
    size = Field(min_length=at_least, max_length=at_most)
    token_ids = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=at_least)]

    def pick(value: Any) -> str | None:
        if type(value) is str:
            return "<text>"
        if type(value) is not list:
            return None
        first = value[0] if value else ""
        if type(first) is int:
            return "<token ids>"
        if type(first) is list:
            return "<token id lists>"
        return "<texts>"

    return _tagged(
        {
            "<text>": Annotated[str, Field(min_length=at_least)],
            "<texts>": Annotated[list[Annotated[str, Field(min_length=at_least)]], size],
            "<token ids>": Annotated[token_ids, size],
            "<token id lists>": Annotated[list[token_ids], size],
        },
        pick,
        expected="a string, an array of strings, an array of token ids or an array of arrays "
        "of token ids",
    )


Object = dict[str, Any]


def _printable_name(name: str) -> str:
    """A model name is looked up in prices, channels and usage rows: a control character (NUL
    above all, which PostgreSQL refuses in any text) can name no model."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ValueError("a model name cannot contain control characters")
    return name


ModelName = Annotated[
    str, Field(min_length=1, max_length=MAX_MODEL_NAME), AfterValidator(_printable_name)
]
OutputTokens = Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)]
Choices = Annotated[int, Field(ge=1, le=128)]
Temperature = Annotated[float, Field(ge=0, le=2)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Probability = Annotated[float, Field(ge=0, le=1)]
Stop = _by_json_type(
    {"string": str, "array": Annotated[list[str], Field(max_length=4)]},
    expected="a string or an array of up to 4 strings",
)


# --- OpenAI chat completions --------------------------------------------------------------------


class TextPart(Shape):
    type: Literal["text"]
    text: str


class ImageURL(Shape):
    url: str


ImageURLOrString = _by_json_type(
    {"object": ImageURL, "string": str}, expected="an object with a url, or a string"
)


class ImagePart(Shape):
    type: Literal["image_url"]
    image_url: ImageURLOrString


class InputAudio(Shape):
    data: str
    format: str


class AudioPart(Shape):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FilePart(Shape):
    type: Literal["file"]
    file: Object


class RefusalPart(Shape):
    type: Literal["refusal"]
    refusal: str


class OtherPart(Shape):
    """A part type not listed here: any object with a string `type` goes on as it is."""

    type: str


ContentPart = _by_field(
    "type",
    {
        "text": TextPart,
        "image_url": ImagePart,
        "input_audio": AudioPart,
        "file": FilePart,
        "refusal": RefusalPart,
    },
    otherwise=OtherPart,
)
Content = _by_json_type(
    {"string": str, "array": list[ContentPart]},
    expected="a string or an array of content parts",
)
# System, developer and tool messages hold text only.
TextContent = _by_json_type(
    {"string": str, "array": list[TextPart]}, expected="a string or an array of text parts"
)


class FunctionCall(Shape):
    name: str
    arguments: str


class FunctionToolCall(Shape):
    id: str
    type: Literal["function"] | None = None
    function: FunctionCall


class OtherToolCall(Shape):
    """A call of another tool kind (`custom`, ...): an object with an id and a string type."""

    id: str
    type: str


ToolCall = _by_field(
    "type", {"function": FunctionToolCall}, otherwise=OtherToolCall, missing=FunctionToolCall
)


class SystemMessage(Shape):
    role: Literal["system"]
    content: TextContent
    name: str | None = None


class DeveloperMessage(Shape):
    role: Literal["developer"]
    content: TextContent
    name: str | None = None


class UserMessage(Shape):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(Shape):
    """Content may be null or absent when the turn holds tool calls (or a function call)."""

    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None
    name: str | None = None


class ToolMessage(Shape):
    role: Literal["tool"]
    content: TextContent
    tool_call_id: str


class FunctionMessage(Shape):
    role: Literal["function"]
    content: str | None
    name: str


class UnknownMessage(Shape):
    """What a message with another role, or none, or one that is no object at all, is checked
    against: its errors list the roles there are, or say that a message is an object."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]


ChatMessage = _by_field(
    "role",
    {
        "system": SystemMessage,
        "developer": DeveloperMessage,
        "user": UserMessage,
        "assistant": AssistantMessage,
        "tool": ToolMessage,
        "function": FunctionMessage,
    },
    otherwise=UnknownMessage,
)


class FunctionDefinition(Shape):
    name: str
    description: str | None = None
    parameters: Object | None = None


class FunctionTool(Shape):
    type: Literal["function"]
    function: FunctionDefinition


class OtherTool(Shape):
    """Another tool kind (`custom`, web search, ...): an object with a string type."""

    type: str


Tool = _by_field("type", {"function": FunctionTool}, otherwise=OtherTool)


class FunctionName(Shape):
    name: str


class FunctionToolChoice(Shape):
    type: Literal["function"]
    function: FunctionName


class OtherToolChoice(Shape):
    """A choice of another tool kind (`allowed_tools`, `custom`): an object with a string type."""

    type: str


ToolChoice = _by_json_type(
    {
        "string": Literal["none", "auto", "required"],
        "object": _by_field("type", {"function": FunctionToolChoice}, otherwise=OtherToolChoice),
    },
    expected='"none", "auto", "required" or an object naming a tool',
)


class StreamOptions(Shape):
    include_usage: bool | None = None


class ChatRequest(Shape):
    model: ModelName
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stop: Stop | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    n: Choices | None = None
    max_tokens: OutputTokens | None = None
    max_completion_tokens: OutputTokens | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Object | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    seed: int | None = None
    user: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: Object | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    audio: Object | None = None
    web_search_options: Object | None = None
    metadata: Object | None = None


# --- OpenAI legacy completions and embeddings ---------------------------------------------------

Prompt = _token_ids_or_text(at_least=0)
# OpenAI refuses an empty input, and arrays of more than 2048 inputs.
EmbeddingsInput = _token_ids_or_text(at_least=1, at_most=2048)


class CompletionRequest(Shape):
    model: ModelName
    prompt: Prompt | None = None
    max_tokens: Annotated[int, Field(ge=0, le=MAX_OUTPUT_TOKENS)] | None = None  # 0 with echo
    n: Choices | None = None
    best_of: Annotated[int, Field(ge=1, le=20)] | None = None
    echo: bool | None = None
    stop: Stop | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    suffix: str | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Object | None = None
    seed: int | None = None
    user: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None


class EmbeddingRequest(Shape):
    model: ModelName
    input: EmbeddingsInput
    dimensions: Annotated[int, Field(ge=1)] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None


# --- Anthropic messages -------------------------------------------------------------------------


class TextBlock(Shape):
    type: Literal["text"]
    text: str


class ImageBlock(Shape):
    type: Literal["image"]
    source: Object


class DocumentBlock(Shape):
    type: Literal["document"]
    source: Object


class ToolUseBlock(Shape):
    type: Literal["tool_use"]
    id: str
    name: str
    input: Object


class OtherBlock(Shape):
    """A block type not listed here (search results, server tool results, ...)."""

    type: str


ToolResultPart = _by_field(
    "type",
    {"text": TextBlock, "image": ImageBlock, "document": DocumentBlock},
    otherwise=OtherBlock,
)
ToolResultContent = _by_json_type(
    {"string": str, "array": list[ToolResultPart]},
    expected="a string or an array of content blocks",
)


class ToolResultBlock(Shape):
    type: Literal["tool_result"]
    tool_use_id: str
    content: ToolResultContent | None = None
    is_error: bool | None = None


class ThinkingBlock(Shape):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(Shape):
    type: Literal["redacted_thinking"]
    data: str


Block = _by_field(
    "type",
    {
        "text": TextBlock,
        "image": ImageBlock,
        "document": DocumentBlock,
        "tool_use": ToolUseBlock,
        "tool_result": ToolResultBlock,
        "thinking": ThinkingBlock,
        "redacted_thinking": RedactedThinkingBlock,
    },
    otherwise=OtherBlock,
)
Blocks = _by_json_type(
    {"string": str, "array": list[Block]}, expected="a string or an array of content blocks"
)


class AnthropicMessage(Shape):
    role: Literal["user", "assistant"]
    content: Blocks


System = _by_json_type(
    {"string": str, "array": list[TextBlock]}, expected="a string or an array of text blocks"
)


class CustomTool(Shape):
    """A tool the client runs; its `type` may be left out."""

    type: Literal["custom"] | None = None
    name: str
    input_schema: Object


class ServerTool(Shape):
    """A tool Anthropic runs (`web_search_20250305`, `bash_20250124`, ...)."""

    type: str
    name: str


AnthropicTool = _by_field("type", {"custom": CustomTool}, otherwise=ServerTool, missing=CustomTool)


class NamedToolChoice(Shape):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class AnthropicToolChoice(Shape):
    type: Literal["auto", "any", "tool", "none"]
    disable_parallel_tool_use: bool | None = None


# Anthropic's tool_choice is always an object; the string "auto" is OpenAI's spelling.
AnthropicToolChoiceObject = _by_json_type(
    {"object": _by_field("type", {"tool": NamedToolChoice}, otherwise=AnthropicToolChoice)},
    expected='an object such as {"type": "auto"}',
)


class ThinkingEnabled(Shape):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=1024)]


class ThinkingMode(Shape):
    # `adaptive` and `between_tools` are newer than `enabled` and take no budget.
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]


Thinking = _by_field("type", {"enabled": ThinkingEnabled}, otherwise=ThinkingMode)


class MessagesRequest(Shape):
    model: ModelName
    max_tokens: OutputTokens
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    system: System | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoiceObject | None = None
    stop_sequences: list[str] | None = None
    temperature: Probability | None = None  # Anthropic's scale ends at 1
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool | None = None
    metadata: Object | None = None
    thinking: Thinking | None = None
    service_tier: str | None = None


# --- OpenAI Responses -----------------------------------------------------------------------------


def _refused(reason: str) -> Callable[[Any], Any]:
    """A check that refuses any value but absent, null or false, with ``reason``."""

    def check(value: Any) -> Any:
        if value not in (None, False):
            raise ValueError(reason)
        return value

    return check


class InputText(Shape):
    type: Literal["input_text", "output_text"]
    text: str


class InputImage(Shape):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputRefusal(Shape):
    type: Literal["refusal"]
    refusal: str


class OtherInputPart(Shape):
    """Another part (input_file, input_audio, ...): an object with a string type."""

    type: str


InputPart = _by_field(
    "type",
    {
        "input_text": InputText,
        "output_text": InputText,
        "input_image": InputImage,
        "refusal": InputRefusal,
    },
    otherwise=OtherInputPart,
)
InputContent = _by_json_type(
    {"string": str, "array": list[InputPart]},
    expected="a string or an array of content parts",
)


class InputMessage(Shape):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: InputContent


class FunctionCallItem(Shape):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(Shape):
    type: Literal["function_call_output"]
    call_id: str
    output: InputContent


class OtherItem(Shape):
    """Another item (reasoning, item_reference, ...): an object with a string type."""

    type: str


InputItem = _by_field(
    "type",
    {
        "message": InputMessage,
        "function_call": FunctionCallItem,
        "function_call_output": FunctionCallOutputItem,
    },
    otherwise=OtherItem,
    missing=InputMessage,
)
ResponsesInput = _by_json_type(
    {"string": str, "array": list[InputItem]}, expected="a string or an array of input items"
)


class ResponsesFunctionTool(Shape):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: Object | None = None
    strict: bool | None = None


class ResponsesClientTool(Shape):
    """A tool the client runs itself, of a kind other than `function`: `custom` (free-form
    input), `namespace` (a named group of function tools, as Codex CLI sends), `local_shell`,
    `apply_patch`. The model only emits calls to it, billed as tokens; converting it to another
    format is refused (relay.formats.openai_responses)."""

    type: Literal["custom", "namespace", "local_shell", "apply_patch"]


class ResponsesHostedTool(Shape):
    """Any other kind: a hosted tool (web search, file search, code interpreter, image
    generation, MCP, ...) runs and bills at OpenAI, at prices this site does not charge."""

    type: Annotated[
        str,
        AfterValidator(
            lambda kind: _refused(
                f"hosted tools of type {kind!r} are not offered on this site (only tools the "
                "client runs: function, custom, namespace, local_shell, apply_patch)"
            )(kind)
        ),
    ]


ResponsesTool = _by_field(
    "type",
    {
        "function": ResponsesFunctionTool,
        **dict.fromkeys(("custom", "namespace", "local_shell", "apply_patch"), ResponsesClientTool),
    },
    otherwise=ResponsesHostedTool,
)


class ResponsesNamedFunction(Shape):
    type: Literal["function"]
    name: str


ResponsesToolChoice = _by_json_type(
    {
        "string": Literal["none", "auto", "required"],
        "object": _by_field(
            "type", {"function": ResponsesNamedFunction}, otherwise=OtherToolChoice
        ),
    },
    expected='"none", "auto", "required" or an object naming a tool',
)


class ResponsesRequest(Shape):
    model: ModelName
    input: ResponsesInput | None = None
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: ResponsesToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: OutputTokens | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    reasoning: Object | None = None
    text: Object | None = None
    metadata: Object | None = None
    user: str | None = None
    service_tier: str | None = None
    # Answered later, after the call has ended: its cost could not be held or settled.
    background: Annotated[
        bool | None,
        AfterValidator(_refused("background responses are not offered on this site")),
    ] = None
    # Content stored at OpenAI that the relay cannot count (so cannot hold for).
    conversation: Annotated[
        Any, AfterValidator(_refused("conversations are not offered on this site"))
    ] = None
    prompt: Annotated[
        Any, AfterValidator(_refused("stored prompt templates are not offered on this site"))
    ] = None


# --- Gemini generateContent ---------------------------------------------------------------------
# Checked after relay.formats.gemini.request_from_url: camelCase names, the model from the URL.


class GeminiPart(Shape):
    """One part: text, inlineData, fileData, functionCall, functionResponse, ... (an object)."""


class GeminiContent(Shape):
    role: Literal["user", "model", "function"] | None = None
    parts: list[GeminiPart]


class GeminiGenerationConfig(Shape):
    maxOutputTokens: OutputTokens | None = None
    candidateCount: Annotated[int, Field(ge=1, le=8)] | None = None
    temperature: Temperature | None = None
    topP: Probability | None = None
    topK: Annotated[int, Field(ge=0)] | None = None
    stopSequences: Annotated[list[str], Field(max_length=5)] | None = None
    responseMimeType: str | None = None
    responseSchema: Object | None = None
    responseJsonSchema: Object | None = None


class GenerateContentRequest(Shape):
    model: ModelName
    contents: Annotated[list[GeminiContent], Field(min_length=1)]
    systemInstruction: Object | None = None
    tools: list[Object] | None = None
    toolConfig: Object | None = None
    generationConfig: GeminiGenerationConfig | None = None
    safetySettings: list[Object] | None = None


# --- Moderations and rerank --------------------------------------------------------------------


class ModerationPart(Shape):
    type: Literal["text", "image_url"]


def _moderation_input(value: Any) -> str | None:
    if type(value) is str:
        return "<text>"
    if type(value) is not list:
        return None
    return "<parts>" if value and type(value[0]) is dict else "<texts>"


ModerationInput = _tagged(
    {
        "<text>": str,
        "<texts>": Annotated[list[str], Field(min_length=1)],
        "<parts>": Annotated[list[ModerationPart], Field(min_length=1)],
    },
    _moderation_input,
    expected="a string, an array of strings or an array of text and image_url parts",
)


def _text_or_object(value: Any) -> str | None:
    return "<text>" if type(value) is str else "<object>" if type(value) is dict else None


Document = _tagged(
    {"<text>": str, "<object>": Object}, _text_or_object, expected="a string or an object"
)


class ModerationRequest(Shape):
    model: ModelName  # the operation's default is filled in before this check
    input: ModerationInput


class RerankRequest(Shape):
    model: ModelName
    query: Document
    documents: Annotated[list[Document], Field(min_length=1, max_length=10_000)]
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool | None = None


# --- Images and audio (relay.media; a form's numbers are made numbers before the check) ------


ImageCount = Annotated[int, Field(ge=1, le=10)]
ImageFormat = Literal["url", "b64_json"]
TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


class ImagesVariationRequest(Shape):
    model: ModelName  # the operation's default is filled in before this check
    n: ImageCount | None = None
    size: str | None = None
    response_format: ImageFormat | None = None
    user: str | None = None


class ImagesRequest(ImagesVariationRequest):
    """A generation or an edit: a prompt, and a quality."""

    prompt: Annotated[str, Field(min_length=1, max_length=32_000)]
    quality: str | None = None
    # Partial images as they are drawn: billed by the same images, but not relayed yet.
    stream: Annotated[
        bool | None, AfterValidator(_refused("streamed images are not offered on this site"))
    ] = None


class SpeechRequest(Shape):
    model: ModelName
    input: Annotated[str, Field(min_length=1, max_length=4096)]
    voice: str | Object
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: Annotated[float, Field(ge=0.25, le=4)] | None = None
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] | None = None


class TranslationRequest(Shape):
    model: ModelName
    prompt: str | None = None
    response_format: TranscriptFormat | None = None
    temperature: Temperature | None = None


class TranscriptionRequest(TranslationRequest):
    language: str | None = None
    stream: Annotated[
        bool | None,
        AfterValidator(_refused("streamed transcriptions are not offered on this site")),
    ] = None


SHAPES: dict[str, type[Shape]] = {
    IMAGES_GENERATIONS: ImagesRequest,
    IMAGES_EDITS: ImagesRequest,
    IMAGES_VARIATIONS: ImagesVariationRequest,
    AUDIO_SPEECH: SpeechRequest,
    AUDIO_TRANSCRIPTIONS: TranscriptionRequest,
    AUDIO_TRANSLATIONS: TranslationRequest,
    MODERATIONS: ModerationRequest,
    RERANK: RerankRequest,
    CHAT: ChatRequest,
    COMPLETIONS: CompletionRequest,
    EMBEDDINGS: EmbeddingRequest,
    MESSAGES: MessagesRequest,
    GENERATE_CONTENT: GenerateContentRequest,
    STREAM_GENERATE_CONTENT: GenerateContentRequest,
    RESPONSES: ResponsesRequest,
}
