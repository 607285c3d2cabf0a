"""The /v1 endpoints: thin async views over relay.proxy, ``ROUTES``, the path table that
relay.http serves them by, and ``before_body``, what is answered before a body is read.

The operations' routes come from their table (relay.operations): one view per operation.
Each view names the one method it answers (``view.method``); the operations' views also
carry their operation (``view.operation``), which is how ``before_body`` knows to check the
key.
"""

import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Protocol, cast

from relay import (
    admission,
    dashboard_billing,
    database,
    errors,
    gemini_views,
    proxy,
    stored_responses,
    tokens,
    validation,
)
from relay.auth import authenticate
from relay.errors import RelayError
from relay.http import Endpoint
from relay.operations import (
    COUNT_TOKENS,
    MESSAGES_COUNT_TOKENS,
    OPERATIONS,
    Operation,
    client_format_of_path,
    operation_at,
)
from relay.responses import Request, Response, StreamingResponse
from relay.routing import usable_models


class View(Protocol):
    """An endpoint that names the one method it answers and the operation it serves (None:
    it checks its own key)."""

    __name__: str
    method: str
    operation: Operation | None

    def __call__(self, request: Request, /) -> Awaitable[Response | StreamingResponse]: ...


def _declare(function: Endpoint, *, method: str, operation: Operation | None = None) -> View:
    """``function`` carrying what ``before_body`` reads from it."""
    view = cast(View, function)  # a function takes attributes; mypy cannot know it has these
    view.method = method
    view.operation = operation
    return view


def _refuse(request, status: int, message: str, code: str):
    """A refusal in the format of the API the path belongs to."""
    error = RelayError(status, message, code=code, retry=False)
    return errors.render(error, api=client_format_of_path(request.path))


def _wrong_method(request, allowed: str):
    response = _refuse(
        request,
        405,
        f"{request.method} is not allowed here; use {allowed}.",
        "method_not_allowed",
    )
    response.headers["Allow"] = allowed
    return response


def _endpoint(operation: Operation):
    async def view(request):
        if request.method != operation.method:
            return _wrong_method(request, operation.method)
        return await proxy.relay(request, operation=operation.name)

    view.__name__ = operation.name
    return _declare(view, method=operation.method, operation=operation)


def _speaks_anthropic(request: Request) -> bool:
    """An Anthropic client (its SDKs always send anthropic-version) gets Anthropic's shapes
    where OpenAI's and Anthropic's endpoints share a path (/v1/models)."""
    return "anthropic-version" in request.headers


async def models(request):
    """The models this key may call: offered to its group, priced, and on its allow-list; in
    Anthropic's shape for an Anthropic client."""
    if request.method != "GET":
        return _wrong_method(request, "GET")
    api = errors.ANTHROPIC if _speaks_anthropic(request) else errors.OPENAI
    try:
        key, _ = await authenticate(request)
    except RelayError as error:
        return errors.render(error, api=api)
    priced = sorted(await database.run(usable_models, key))
    if api == errors.ANTHROPIC:
        data = [_anthropic_model(model) for model in priced]
        return Response.json(
            {
                "data": data,
                "has_more": False,
                "first_id": priced[0] if priced else None,
                "last_id": priced[-1] if priced else None,
            }
        )
    return Response.json({"object": "list", "data": [_openai_model(m) for m in priced]})


_declare(models, method="GET")


def _openai_model(model: str) -> dict:
    return {"id": model, "object": "model", "created": int(time.time()), "owned_by": "sluice"}


def _anthropic_model(model: str) -> dict:
    created = datetime.fromtimestamp(int(time.time()), UTC).isoformat().replace("+00:00", "Z")
    return {"type": "model", "id": model, "display_name": model, "created_at": created}


MODELS_PREFIX = "/v1/models/"


async def one_model(request):
    """``GET /v1/models/{id}``: the model if this key may call it, else a 404 (OpenAI's
    shape, or Anthropic's for an Anthropic client)."""
    if request.method != "GET":
        return _wrong_method(request, "GET")
    api = errors.ANTHROPIC if _speaks_anthropic(request) else errors.OPENAI
    name = request.path.rstrip("/")[len(MODELS_PREFIX) :]
    try:
        key, _ = await authenticate(request)
        if not name or name not in await database.run(usable_models, key):
            raise RelayError(
                404,
                f"The model '{name[:200]}' does not exist or you do not have access to it.",
                code="model_not_found",
                retry=False,
            )
    except RelayError as error:
        return errors.render(error, api=api)
    return Response.json(_anthropic_model(name) if api == errors.ANTHROPIC else _openai_model(name))


_declare(one_model, method="GET")


async def count_message_tokens(request):
    """Anthropic's ``POST /v1/messages/count_tokens``: the input tokens of a Messages request,
    counted locally the way the relay counts a call's input for its hold (Anthropic's image
    and document formulas), free. The key was checked before the body was read."""
    api = errors.ANTHROPIC
    try:
        body = validation.parse_json(request.body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise errors.invalid_request("model: Field required", param="model")
        request.model = model
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise errors.invalid_request(
                "messages: Field required (a list of at least one message)", param="messages"
            )
        key = request.key
        if key is None:
            key, _ = await authenticate(request)
        if not key.allows_model(model) or model not in await database.run(usable_models, key):
            raise RelayError(404, f"model: {model[:200]}", code="model_not_found", retry=False)
    except RelayError as error:
        return errors.render(error, api=api)
    total = tokens.count_messages(
        messages, model, system=body.get("system"), tools=body.get("tools"), media="anthropic"
    )
    return Response.json({"input_tokens": total})


# OpenAI endpoints this relay does not serve: a 501 naming them, not a 404 that reads like a
# mistyped URL (the first segment after /v1).
NOT_RELAYED = frozenset(
    {
        "assistants",
        "batches",
        "chatkit",
        "containers",
        "conversations",
        "evals",
        "files",
        "fine-tunes",
        "fine_tuning",
        "organization",
        "threads",
        "uploads",
        "vector_stores",
        "videos",
    }
)
NOT_RELAYED_UNDER = ("/v1/messages/batches",)  # Anthropic's message batches


def _not_relayed(path: str) -> bool:
    parts = path.split("/", 3)  # "", "v1", segment, rest
    return (len(parts) > 2 and parts[1] == "v1" and parts[2] in NOT_RELAYED) or any(
        path == under or path.startswith(under + "/") for under in NOT_RELAYED_UNDER
    )


async def unknown_path(request):
    """Any other /v1 path: a 501 for an API this relay does not serve, else a 404 a client can
    parse, not Django's HTML page."""
    path = request.path.rstrip("/")
    if _not_relayed(path):
        return _refuse(
            request,
            501,
            f"{request.method} {path} is not relayed by this server: it serves chat, "
            "completions, embeddings, responses, messages, moderations, rerank and models.",
            "not_implemented",
        )
    return _refuse(
        request, 404, f"Unknown endpoint: {request.method} {request.path}", "unknown_url"
    )


async def before_body(request: Request) -> Response | None:
    """The answer a request gets from its head alone, or None to read its body and serve it.

    An unknown path (404) or a wrong method (405) needs no body. An operation's key is
    checked here (401/403), and so is a balance known to be spent, so a caller who will be
    refused cannot make the server hold an upload first; the key and IP found are kept on the
    request for admission. /v1/models checks its own key: it has no body.
    """
    view = ROUTES.get(request.path.rstrip("/"))
    if view is None:
        return await unknown_path(request)
    allowed = getattr(view, "method", None)
    if allowed is None:  # a view that declares nothing answers for itself
        return None
    if request.method != allowed:
        return _wrong_method(request, allowed)
    operation = getattr(view, "operation", None)
    if operation is None:
        return None
    api = operation.client_format
    try:
        request.key, request.client_ip = await authenticate(request)
    except RelayError as error:
        return errors.render(error, api=api)
    refusal = await admission.refuse_before_body(request)  # a balance known to be spent
    if refusal is not None:
        return errors.render(refusal, api=api)
    return None


class Routes(dict[str, Endpoint]):
    """Endpoints by exact path, then by prefix for paths that carry an id
    (``/v1/responses/{id}``): ``get`` is how relay.http and ``before_body`` look them up."""

    def __init__(self, exact: dict[str, Endpoint], prefixes: dict[str, Endpoint]):
        super().__init__(exact)
        self.prefixes = prefixes

    def get(self, path, default=None):
        found = super().get(path)
        if found is not None:
            return found
        operation = operation_at(path)  # Gemini's paths name their model
        if operation is not None:
            return super().get(operation.path, default)
        for prefix, endpoint in self.prefixes.items():
            if path.startswith(prefix):
                return endpoint
        return default


ROUTES: dict[str, Endpoint] = Routes(
    {op.path: _endpoint(op) for op in OPERATIONS.values()},
    {
        stored_responses.PATH: stored_responses.stored_response,
        MODELS_PREFIX: one_model,
        gemini_views.MODELS_PATH + "/": gemini_views.get_model,
    },
)
ROUTES["/v1/models"] = models
# OpenAI's old billing endpoints, about the calling key (relay.dashboard_billing).
for _path, _view in dashboard_billing.ENDPOINTS.items():
    ROUTES[_path] = _declare(_view, method="GET")
# Gemini's own endpoints (relay.gemini_views): the model list, one model, countTokens.
ROUTES[gemini_views.MODELS_PATH] = _declare(gemini_views.list_models, method="GET")
ROUTES[OPERATIONS[MESSAGES_COUNT_TOKENS].path] = _declare(
    count_message_tokens, method="POST", operation=OPERATIONS[MESSAGES_COUNT_TOKENS]
)
ROUTES[OPERATIONS[COUNT_TOKENS].path] = _declare(
    gemini_views.count_tokens, method="POST", operation=OPERATIONS[COUNT_TOKENS]
)
