"""What a /v1 endpoint gets and gives back (relay.http reads and writes them over ASGI), and
the id of the request being served."""

import json
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # relay.auth imports this module (through relay.errors)
    from relay.auth import KeyInfo
    from relay.media import Upload


@dataclass
class Request:
    """One /v1 request: what an endpoint may look at."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    peer: str | None  # the address the connection came from (see relay.auth.client_ip)
    query: str = ""  # the query string, as sent (Gemini clients: ?alt=sse, ?key=)
    body: bytes = b""
    # A multipart upload's body instead, spooled to a file by relay.http (relay.media reads it).
    upload: "Upload | None" = None
    # Set by relay.views.before_body once the key is checked, before the body is read.
    key: "KeyInfo | None" = None
    client_ip: str | None = None
    # The model the body names, set by whoever parses it, for the front's refusal log.
    model: str | None = None


@dataclass
class Response:
    """A whole answer, JSON unless told otherwise."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"  # empty: no content-type header
    # Why the call was refused (the error's code, set by relay.errors.render), for the log.
    reason: str | None = None
    # Run once the answer was written (True) or could not be (False: the client left first),
    # whatever ends the request: a call settles here, after its client has the answer.
    after: Callable[[bool], Awaitable[None]] | None = None

    @classmethod
    def json(cls, data, status: int = 200) -> "Response":
        return cls(status, json.dumps(data).encode())


@dataclass
class StreamingResponse:
    """An answer sent as its body iterator yields.

    ``unsent`` runs when the body never started (the client left before the first byte), so
    whoever made the iterator can clean up what its ``finally`` would have. ``END`` from the
    body says the answer is complete: the response ends there, before
    the iterator's bookkeeping (its settlement) runs.
    """

    body: AsyncGenerator[bytes, None]  # closed (``aclose``) by relay.http whatever happens
    unsent: Callable[[], Awaitable[None]]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"
    status: int = 200


class _End(bytes):
    """The type of ``END``: told apart from any other chunk by identity."""


# What a streaming body yields once the client has the whole answer: relay.http ends the
# response at once and keeps iterating only for what the body does after (settling).
END: bytes = _End()


# The id of the /v1 request this task is serving: set by relay.http.serve for the whole of it
# (a stream's body and its settling ``finally`` included), so code serving a call can name it
# without being handed it. Tasks and sync_to_async threads started meanwhile copy it; the
# ledger writer's own thread does not see it.
request_id: ContextVar[str | None] = ContextVar("relay_request_id", default=None)


def new_request_id() -> str:
    """A fresh id, shaped like Anthropic's own (``req_`` and 24 hex digits)."""
    return "req_" + secrets.token_hex(12)


def current_request_id() -> str | None:
    """The id of the /v1 request being served, or None outside one."""
    return request_id.get()
