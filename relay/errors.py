"""Errors as the caller's API spells them.

A ``RelayError`` carries the HTTP status, a message for the user and an OpenAI error code;
``render`` writes it in the format of the API that was called: OpenAI's
``{"error": {...}}`` or Anthropic's ``{"type": "error", ...}``. Messages never carry an
upstream key, base URL or trace. ``x-should-retry: false`` tells the official SDKs not to
repeat a call that cannot succeed (no credit, bad key), so clients do not triple failures.
Each format's module (relay.formats) spells its own error body and status.
"""

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
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.retry = retry
        self.param = param


def invalid_request(message: str, *, param: str | None = None) -> RelayError:
    return RelayError(400, message, code="invalid_request", param=param, retry=False)


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
    return response
