"""What a /v1 endpoint gets and gives back (relay.http reads and writes them over ASGI)."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # relay.auth imports this module (through relay.errors)
    from relay.auth import KeyInfo


@dataclass
class Request:
    """One /v1 request: what an endpoint may look at."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    peer: str | None  # the address the connection came from (see relay.auth.client_ip)
    body: bytes = b""
    # Set by relay.views.before_body once the key is checked, before the body is read.
    key: "KeyInfo | None" = None
    client_ip: str | None = None


@dataclass
class Response:
    """A whole answer, JSON unless told otherwise."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(cls, data, status: int = 200) -> "Response":
        return cls(status, json.dumps(data).encode())


@dataclass
class StreamingResponse:
    """An answer sent as its body iterator yields.

    ``unsent`` runs when the body never started (the client left before the first byte), so
    whoever made the iterator can clean up what its ``finally`` would have.
    """

    body: AsyncIterator[bytes]
    unsent: Callable[[], Awaitable[None]]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"
    status: int = 200
