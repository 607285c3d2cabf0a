"""What the relay can be asked to do, as data: one row per operation.

Everything that depends on the operation is derived from its row here, not branched on in the
code that serves it: the route table and method checks (relay.views), the API format a path's
client speaks (its errors, its stream framing), which upstream formats can serve it, how its
input is counted, which fields spell its output limit and which multiply its output. A new
endpoint is a new row (and, for a new API format, a new module beside the others).

``Format`` is the one name for an API's wire format, everywhere: the format a client speaks
and the format an upstream provider speaks.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

Format = Literal["openai", "anthropic", "responses", "gemini"]

# Operations a client can ask for, named for the API shape they arrive in.
CHAT = "chat"  # OpenAI chat completions
COMPLETIONS = "completions"  # OpenAI legacy completions
EMBEDDINGS = "embeddings"
MESSAGES = "messages"  # Anthropic messages
RESPONSES = "responses"  # OpenAI Responses API
GENERATE_CONTENT = "generate_content"  # Gemini generateContent
STREAM_GENERATE_CONTENT = "stream_generate_content"  # Gemini streamGenerateContent
COUNT_TOKENS = "count_tokens"  # Gemini countTokens: answered by the relay itself, free
MESSAGES_COUNT_TOKENS = "messages_count_tokens"  # Anthropic's, also counted locally and free
MODERATIONS = "moderations"  # OpenAI moderations: free unless the operator prices the model
RERANK = "rerank"  # Jina's and Cohere's rerank: a query and documents
# Images and audio (relay.media): billed by per-call prices, some with a file upload.
IMAGES_GENERATIONS = "images_generations"
IMAGES_EDITS = "images_edits"
IMAGES_VARIATIONS = "images_variations"
AUDIO_SPEECH = "audio_speech"
AUDIO_TRANSCRIPTIONS = "audio_transcriptions"
AUDIO_TRANSLATIONS = "audio_translations"
# Where the input is: chat-like messages, a prompt or embeddings input, the Responses API's
# instructions and input items, Gemini's contents, moderation input (strings or typed parts)
# or a rerank's query and documents.
InputShape = Literal["messages", "prompt", "input", "items", "contents", "moderation", "rerank"]
# A path's model segment (Gemini's URLs name the model: /v1beta/models/{model}:generateContent).
MODEL_SEGMENT = "{model}"
# The root of Google's API: every path under it is answered in Gemini's format.
GEMINI_ROOT = "/v1beta"


@dataclass(frozen=True)
class Operation:
    """One thing a client can ask for, and how the relay treats it."""

    name: str
    path: str
    method: str
    client_format: Format  # the format the client speaks, and is answered (and refused) in
    served_by: frozenset[Format]  # upstream formats that can serve it, directly or converted
    input: InputShape  # where its input is, for counting it
    output_limit_fields: tuple[str, ...] = ()  # every spelling of its output limit
    choice_fields: tuple[str, ...] = ()  # fields that ask for several outputs, each billed
    streams: bool = True  # whether `stream: true` is honoured
    # The path names the model ({model}), not the body; the path itself may ask for a stream.
    model_in_path: bool = False
    stream_in_path: bool = False
    # The model a body that names none is given (OpenAI's moderations default to one).
    default_model: str | None = None
    # A model without a price is served free instead of refused (moderations, as OpenAI's).
    free_unless_priced: bool = False
    # The body is a multipart/form-data upload: relay.http spools it to a temporary file
    # instead of reading it into memory, and relay.media streams it on to the upstream.
    upload: bool = False
    # Billed by a per-call price (per image, per 1K characters, per audio minute) and
    # forwarded and answered by relay.media: its answers are images, audio or transcripts.
    media: bool = False

    @property
    def produces_output(self) -> bool:
        return bool(self.output_limit_fields)

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        before, _, after = self.path.partition(MODEL_SEGMENT)
        return re.compile(re.escape(before) + r"(?P<model>[^/:]+)" + re.escape(after))

    def model_at(self, path: str) -> str | None:
        """The model a path names, for an operation whose path carries it (else None)."""
        if not self.model_in_path:
            return None
        match = self._pattern.fullmatch(path.rstrip("/"))
        return match["model"] if match else None


# The image and audio operations: name, path, where a prompt or text is, whether it uploads.
MEDIA: tuple[tuple[str, str, InputShape, bool], ...] = (
    (IMAGES_GENERATIONS, "/v1/images/generations", "prompt", False),
    (IMAGES_EDITS, "/v1/images/edits", "prompt", True),
    (IMAGES_VARIATIONS, "/v1/images/variations", "prompt", True),
    (AUDIO_SPEECH, "/v1/audio/speech", "input", False),
    (AUDIO_TRANSCRIPTIONS, "/v1/audio/transcriptions", "prompt", True),
    (AUDIO_TRANSLATIONS, "/v1/audio/translations", "prompt", True),
)

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            name=CHAT,
            path="/v1/chat/completions",
            method="POST",
            client_format="openai",
            served_by=frozenset({"openai", "anthropic", "gemini"}),
            input="messages",
            output_limit_fields=("max_completion_tokens", "max_tokens"),
            choice_fields=("n",),
        ),
        Operation(
            name=COMPLETIONS,
            path="/v1/completions",
            method="POST",
            client_format="openai",
            served_by=frozenset({"openai"}),
            input="prompt",
            output_limit_fields=("max_tokens",),
            # best_of generates that many completions upstream (and bills them) to return n.
            choice_fields=("n", "best_of"),
        ),
        Operation(
            name=EMBEDDINGS,
            path="/v1/embeddings",
            method="POST",
            client_format="openai",
            served_by=frozenset({"openai"}),
            input="input",
            streams=False,
        ),
        Operation(
            name=MODERATIONS,
            path="/v1/moderations",
            method="POST",
            client_format="openai",
            served_by=frozenset({"openai"}),
            input="moderation",
            streams=False,
            default_model="omni-moderation-latest",
            free_unless_priced=True,
        ),
        Operation(
            name=RERANK,
            path="/v1/rerank",
            method="POST",
            client_format="openai",
            # OpenAI-compatible channels that list a rerank model (Jina, SiliconFlow, vLLM, ...).
            served_by=frozenset({"openai"}),
            input="rerank",
            streams=False,
        ),
        *(
            Operation(
                name=name,
                path=path,
                method="POST",
                client_format="openai",
                served_by=frozenset({"openai"}),  # OpenAI channels, natively
                input=shape,
                streams=False,
                upload=upload,
                media=True,
                # OpenAI's image endpoints use DALL·E 2 when the request names no model.
                default_model="dall-e-2" if path.startswith("/v1/images/") else None,
            )
            for name, path, shape, upload in MEDIA
        ),
        Operation(
            name=MESSAGES,
            path="/v1/messages",
            method="POST",
            client_format="anthropic",
            served_by=frozenset({"openai", "anthropic", "gemini"}),
            input="messages",
            output_limit_fields=("max_tokens",),
        ),
        Operation(
            name=MESSAGES_COUNT_TOKENS,
            path="/v1/messages/count_tokens",
            method="POST",
            client_format="anthropic",
            served_by=frozenset(),  # counted by the relay, never sent upstream
            input="messages",
            streams=False,
        ),
        Operation(
            name=RESPONSES,
            path="/v1/responses",
            method="POST",
            client_format="responses",
            # OpenAI channels serve it natively (relay.providers.openai); others through the hub.
            served_by=frozenset({"openai", "anthropic", "gemini", "responses"}),
            input="items",
            output_limit_fields=("max_output_tokens",),
        ),
        *(
            Operation(
                name=name,
                path=f"{GEMINI_ROOT}/models/{MODEL_SEGMENT}:{method}",
                method="POST",
                client_format="gemini",
                served_by=frozenset({"gemini", "openai", "anthropic"}),
                input="contents",
                # Dotted: the limit and the number of candidates sit in generationConfig.
                output_limit_fields=("generationConfig.maxOutputTokens",),
                choice_fields=("generationConfig.candidateCount",),
                model_in_path=True,
                stream_in_path=name == STREAM_GENERATE_CONTENT,
            )
            for name, method in (
                (GENERATE_CONTENT, "generateContent"),
                (STREAM_GENERATE_CONTENT, "streamGenerateContent"),
            )
        ),
        Operation(
            name=COUNT_TOKENS,
            path=f"{GEMINI_ROOT}/models/{MODEL_SEGMENT}:countTokens",
            method="POST",
            client_format="gemini",
            served_by=frozenset(),  # counted by the relay, never sent upstream
            input="contents",
            streams=False,
            model_in_path=True,
        ),
    )
}
_BY_PATH = {op.path: op for op in OPERATIONS.values() if not op.model_in_path}
_MODEL_IN_PATH = [op for op in OPERATIONS.values() if op.model_in_path]


def operation_at(path: str) -> Operation | None:
    """The operation served at ``path`` (a trailing slash is forgiven), if any."""
    path = path.rstrip("/")
    found = _BY_PATH.get(path)
    if found is None and path.startswith(GEMINI_ROOT + "/"):
        found = next((op for op in _MODEL_IN_PATH if op.model_at(path) is not None), None)
    return found


def takes_upload(path: str) -> bool:
    """Whether the operation at ``path`` takes a multipart upload (spooled, not read whole)."""
    found = operation_at(path)
    return found is not None and found.upload


def client_format_of_path(path: str) -> Format:
    """The format a path's client speaks: its operation's, or, for any other path under an
    operation's (``/v1/messages/batches``), that operation's; Gemini's under /v1beta (any
    case); OpenAI's otherwise."""
    for op in OPERATIONS.values():
        if path == op.path or path.startswith(op.path + "/"):
            return op.client_format
    if path.lower().startswith(GEMINI_ROOT):
        return "gemini"
    return "openai"
