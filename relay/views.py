"""The /v1 endpoints: thin async views over relay.proxy, ``ROUTES``, the path table that
relay.http serves them by, and ``before_body``, what is answered before a body is read.

Each view names the one method it answers (``view.method``); the operations also name their
operation (``view.operation``), which is how ``before_body`` knows to check the key.
"""

import time

from billing.models import ModelPrice
from relay import database, errors, proxy
from relay.auth import authenticate
from relay.errors import RelayError
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES
from relay.responses import Request, Response
from relay.routing import enabled_channels


def _refuse(request, status: int, message: str, code: str):
    """A refusal in the format of the API the path belongs to."""
    error = RelayError(status, message, code=code, retry=False)
    return errors.render(error, api=errors.api_for_path(request.path))


def _wrong_method(request, allowed: str):
    response = _refuse(
        request,
        405,
        f"{request.method} is not allowed here; use {allowed}.",
        "method_not_allowed",
    )
    response.headers["Allow"] = allowed
    return response


def _endpoint(operation: str):
    async def view(request):
        if request.method != "POST":
            return _wrong_method(request, "POST")
        return await proxy.relay(request, operation=operation)

    view.__name__ = operation.replace(".", "_")
    view.method = "POST"
    view.operation = operation
    return view


chat_completions = _endpoint(CHAT)
completions = _endpoint(COMPLETIONS)
embeddings = _endpoint(EMBEDDINGS)
messages = _endpoint(MESSAGES)


async def models(request):
    """The models this key may call: offered to its group, priced, and on its allow-list."""
    if request.method != "GET":
        return _wrong_method(request, "GET")
    try:
        key, _ = await authenticate(request)
    except RelayError as error:
        return errors.render(error, api=errors.OPENAI)
    priced = await database.run(_usable_models, key)
    created = int(time.time())
    return Response.json(
        {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": created, "owned_by": "sluice"}
                for model in sorted(priced)
            ],
        }
    )


models.method = "GET"


def _usable_models(key) -> set[str]:
    offered = {
        model
        for channel in enabled_channels()
        if key.group in channel.groups
        for model in channel.served_models
        if key.allows_model(model)
    }
    return set(ModelPrice.objects.filter(model__in=offered).values_list("model", flat=True))


async def unknown_path(request):
    """Any other /v1 path: a 404 a client can parse, not Django's HTML page."""
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
    if getattr(view, "operation", None) is None:
        return None
    api = errors.api_for_path(request.path)
    try:
        request.key, request.client_ip = await authenticate(request)
    except RelayError as error:
        return errors.render(error, api=api)
    refusal = await proxy.refuse_before_body(request)  # a balance known to be spent
    if refusal is not None:
        return errors.render(refusal, api=api)
    return None


ROUTES = {
    "/v1/chat/completions": chat_completions,
    "/v1/completions": completions,
    "/v1/embeddings": embeddings,
    "/v1/messages": messages,
    "/v1/models": models,
}
