"""What the relay can be asked to do, as data: one row per operation.

Everything that depends on the operation is derived from its row here, not branched on in the
code that serves it: the route table and method checks (relay.views), the API format a path's
client speaks (its errors, its stream framing), which upstream formats can serve it, how its
input is counted, which fields spell its output limit and which multiply its output. A new
endpoint is a new row (and, for a new API format, a new module beside the others).

``Format`` is the one name for an API's wire format, everywhere: the format a client speaks
and the format an upstream provider speaks.
"""

from dataclasses import dataclass
from typing import Literal

Format = Literal["openai", "anthropic", "responses"]

# Operations a client can ask for, named for the API shape they arrive in.
CHAT = "chat"  # OpenAI chat completions
COMPLETIONS = "completions"  # OpenAI legacy completions
EMBEDDINGS = "embeddings"
MESSAGES = "messages"  # Anthropic messages
RESPONSES = "responses"  # OpenAI Responses API
# Where the input is: chat-like messages, a prompt or embeddings input, or the Responses
# API's instructions and input items.
InputShape = Literal["messages", "prompt", "input", "items"]


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

    @property
    def produces_output(self) -> bool:
        return bool(self.output_limit_fields)


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            name=CHAT,
            path="/v1/chat/completions",
            method="POST",
            client_format="openai",
            served_by=frozenset({"openai", "anthropic"}),
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
            name=MESSAGES,
            path="/v1/messages",
            method="POST",
            client_format="anthropic",
            served_by=frozenset({"openai", "anthropic"}),
            input="messages",
            output_limit_fields=("max_tokens",),
        ),
        Operation(
            name=RESPONSES,
            path="/v1/responses",
            method="POST",
            client_format="responses",
            # OpenAI channels serve it natively (relay.providers.openai); others through the hub.
            served_by=frozenset({"openai", "anthropic", "responses"}),
            input="items",
            output_limit_fields=("max_output_tokens",),
        ),
    )
}
_BY_PATH = {op.path: op for op in OPERATIONS.values()}


def operation_at(path: str) -> Operation | None:
    """The operation served at ``path`` (a trailing slash is forgiven), if any."""
    return _BY_PATH.get(path.rstrip("/"))


def client_format_of_path(path: str) -> Format:
    """The format a path's client speaks: its operation's, or, for any other path under an
    operation's (``/v1/messages/batches``), that operation's; OpenAI's otherwise."""
    for op in OPERATIONS.values():
        if path == op.path or path.startswith(op.path + "/"):
            return op.client_format
    return "openai"
