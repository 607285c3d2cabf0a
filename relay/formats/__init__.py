"""One module per API format, each converting to and from one hub representation.

The hub is OpenAI's Chat Completions shape: its request body, its answer and its stream chunks
(relay.formats.openai_chat, whose conversions are the identity). Every other format converts
its requests, answers and streams to and from the hub, so a call goes client -> hub ->
upstream and its answer upstream -> hub -> client, and a new format is one module rather than
a converter for each pair.

A format module owns its error body (``error_body``, ``error_status``), its SSE framing
(``sse``) and the event that ends a broken stream (``stream_error``), the reading of its usage,
the checks on its stream events, and its conversions: ``request_to_hub``/``request_from_hub``,
``answer_to_hub``/``answer_from_hub``, and the stream translators ``passthrough``,
``stream_to_hub`` and ``stream_from_hub``. What they share is in relay.formats.common.

The relay calls the functions below, which pick the modules, so it has no per-format branch.
"""

from types import ModuleType
from typing import TYPE_CHECKING

from relay.formats import anthropic_messages, gemini, openai_chat, openai_responses
from relay.formats.common import ChainedTranslator, Translator
from relay.operations import Format, Operation

if TYPE_CHECKING:  # relay.errors renders through this module
    from relay.errors import RelayError

HUB: Format = "openai"

FORMATS: dict[Format, ModuleType] = {
    "openai": openai_chat,
    "anthropic": anthropic_messages,
    "responses": openai_responses,
    "gemini": gemini,
}


def convert_request(
    body: dict, *, client: Format, upstream: Format, default_max_tokens: int
) -> dict:
    """The client's request body in the upstream's format (the body itself if they agree).

    Raises ``ConversionError`` for a request the upstream's format cannot express.
    """
    if client == upstream:
        return body
    hub = FORMATS[client].request_to_hub(body)
    return FORMATS[upstream].request_from_hub(hub, default_max_tokens=default_max_tokens)


def convert_answer(answer: dict, *, upstream: Format, client: Format, model: str) -> dict:
    """The upstream's whole answer in the client's format (the answer itself if they agree).

    Raises ``MalformedUpstream`` for an answer that cannot be read.
    """
    if client == upstream:
        return answer
    hub = FORMATS[upstream].answer_to_hub(answer, model=model)
    return FORMATS[client].answer_from_hub(hub, model=model)


def client_request(body: dict, *, operation: Operation, path: str, query: str) -> dict:
    """The client's body as the relay reads it: the body itself, unless the operation's URL
    carries part of the request (Gemini's names the model and says whether it streams), which
    the client's format then puts in the body."""
    if not operation.model_in_path:
        return body
    return FORMATS[operation.client_format].request_from_url(
        body,
        model=operation.model_at(path) or "",
        stream=operation.stream_in_path,
        query=query,
    )


def translator(
    *,
    client: Format,
    upstream: Format,
    model: str,
    client_wants_usage: bool,
    client_body: dict | None = None,
) -> Translator:
    """The translator from the upstream's stream events to the client's stream bytes
    (``client_body``: the client's request, for a format whose framing it chooses)."""
    made = _translator(
        client=client, upstream=upstream, model=model, client_wants_usage=client_wants_usage
    )
    reframe = getattr(FORMATS[client], "reframe", None)
    return reframe(made, client_body) if reframe is not None else made


def _translator(
    *, client: Format, upstream: Format, model: str, client_wants_usage: bool
) -> Translator:
    if client == upstream:
        return FORMATS[client].passthrough(model=model, client_wants_usage=client_wants_usage)
    if client == HUB:
        return FORMATS[upstream].stream_to_hub(model=model, client_wants_usage=client_wants_usage)
    if upstream == HUB:
        return FORMATS[client].stream_from_hub(model=model)
    # Two formats besides the hub: upstream -> hub -> client. The hub side asks for the usage
    # chunk so the client's format can show the upstream's counts in its own closing event.
    return ChainedTranslator(
        FORMATS[upstream].stream_to_hub(model=model, client_wants_usage=True),
        FORMATS[client].stream_from_hub(model=model),
    )


def stream_error(fmt: Format, error_type: str = "api_error") -> bytes:
    """The event that ends a broken stream, in the client's format."""
    return FORMATS[fmt].stream_error(error_type)


def error_body(fmt: Format, error: "RelayError") -> dict:
    """The error object in the format's own shape."""
    return FORMATS[fmt].error_body(error)


def error_status(fmt: Format, error: "RelayError") -> int:
    """The HTTP status the format gives the error."""
    return FORMATS[fmt].error_status(error)
