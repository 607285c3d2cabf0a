"""Errors as the caller's API spells them.

A ``RelayError`` carries the HTTP status, a message for the user and an OpenAI error code;
``render`` writes it in the format of the API that was called: OpenAI's
``{"error": {...}}`` or Anthropic's ``{"type": "error", ...}``. Messages never carry an
upstream key, base URL or trace. ``x-should-retry: false`` tells the official SDKs not to
repeat a call that cannot succeed (no credit, bad key), so clients do not triple failures.
An Anthropic error's ``request_id`` is the id of the request being served, the one its
``x-request-id`` header and the refusal log carry (relay.http).
"""

from relay.responses import Response, current_request_id, new_request_id

OPENAI = "openai"
ANTHROPIC = "anthropic"

# OpenAI error type for each status (the code travels separately).
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


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


def body(error: RelayError, *, api: str) -> dict:
    """The error object in the API's own shape."""
    if api == ANTHROPIC:
        # Anthropic bills through 402; the OpenAI-side 429 for credit maps onto it.
        status = 402 if error.code == "insufficient_quota" else error.status
        return {
            "type": "error",
            "error": {
                "type": error.error_type
                if error.error_type and error.error_type in ANTHROPIC_TYPES.values()
                else ANTHROPIC_TYPES.get(status, "api_error"),
                "message": error.message,
            },
            "request_id": current_request_id() or new_request_id(),
        }
    return {
        "error": {
            "message": error.message,
            "type": error.error_type or OPENAI_TYPES.get(error.status, "server_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def status_for(error: RelayError, *, api: str) -> int:
    if api == ANTHROPIC and error.code == "insufficient_quota":
        return 402
    return error.status


def render(error: RelayError, *, api: str) -> Response:
    """The error's answer in the API's format; its code (or type) is kept as the answer's
    ``reason`` for the refusal log."""
    response = Response.json(body(error, api=api), status=status_for(error, api=api))
    response.reason = error.code or error.error_type
    if error.retry is not None:
        response.headers["x-should-retry"] = "true" if error.retry else "false"
    return response
