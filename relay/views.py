"""The /v1 endpoints: thin async views over relay.proxy, and ``ROUTES``, the path table that
relay.http serves them by."""

import time

from billing.models import ModelPrice
from relay import database, errors, proxy
from relay.auth import authenticate
from relay.errors import RelayError
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES
from relay.responses import Response
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


ROUTES = {
    "/v1/chat/completions": chat_completions,
    "/v1/completions": completions,
    "/v1/embeddings": embeddings,
    "/v1/messages": messages,
    "/v1/models": models,
}
