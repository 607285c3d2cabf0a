"""Errors as the caller's API spells them.

A ``RelayError`` carries the HTTP status, a message for the user and an OpenAI error code;
``render`` writes it in the format of the API that was called: OpenAI's
``{"error": {...}}`` or Anthropic's ``{"type": "error", ...}``. Messages never carry an
upstream key, base URL or trace. ``x-should-retry: false`` tells the official SDKs not to
repeat a call that cannot succeed (no credit, bad key), so clients do not triple failures;
``x-should-retry: true`` with ``Retry-After`` tells them a short outage (the database away)
is worth waiting out. Each format's module (relay.formats) spells its own error body and status.
"""

import math

from relay import formats
from relay.operations import Format
from relay.responses import Response

OPENAI: Format = "openai"
ANTHROPIC: Format = "anthropic"


class RelayError(Exception):
    """A call refused or failed, with what the client should be told."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        error_type: str | None = None,
        retry: bool | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.retry = retry
        self.param = param
        self.retry_after = retry_after


def invalid_request(message: str, *, param: str | None = None) -> RelayError:
    return RelayError(400, message, code="invalid_request", param=param, retry=False)


def database_unavailable(retry_after: float = 1) -> RelayError:
    """The answer to a call that met the database away (stopped, restarting, unreachable or
    not answering in time): a 503 the client may retry after ``retry_after`` seconds. The
    call was not billed: no hold was placed, or the one placed is released."""
    return RelayError(
        503,
        "The service is briefly unavailable. Try again in a few seconds.",
        code="service_unavailable",
        error_type="server_error",
        retry=True,
        retry_after=retry_after,
    )


def body(error: RelayError, *, api: Format) -> dict:
    """The error object in the API's own shape."""
    return formats.error_body(api, error)


def status_for(error: RelayError, *, api: Format) -> int:
    return formats.error_status(api, error)


def render(error: RelayError, *, api: Format) -> Response:
    """The error's answer in the API's format; its code (or type) is kept as the answer's
    ``reason`` for the refusal log."""
    response = Response.json(body(error, api=api), status=status_for(error, api=api))
    response.reason = error.code or error.error_type
    if error.retry is not None:
        response.headers["x-should-retry"] = "true" if error.retry else "false"
    if error.retry_after is not None:  # whole seconds (RFC 9110), at least one
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response
