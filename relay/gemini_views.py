"""The Gemini API's endpoints that the relay answers itself, in Google's shapes: the models a key
may call (``GET /v1beta/models``, ``GET /v1beta/models/{model}``) and ``countTokens``, counted
locally and free. ``generateContent`` and ``streamGenerateContent`` are relayed like every
other operation (relay.views, relay.proxy).
"""

from billing.pricing import price_for
from relay import database, errors, tokens, validation
from relay.auth import KeyInfo, authenticate
from relay.errors import RelayError
from relay.formats import client_request, gemini
from relay.operations import COUNT_TOKENS, GEMINI_ROOT, OPERATIONS
from relay.responses import Request, Response
from relay.routing import usable_models

MODELS_PATH = f"{GEMINI_ROOT}/models"


def _usable(key: KeyInfo) -> dict[str, int]:
    """The models the key may call (offered to its group, priced, on its allow-list), with
    each one's largest output."""
    usable = {}
    for model in sorted(usable_models(key)):
        price = price_for(model)
        usable[model] = price.max_output_tokens if price is not None else 0
    return usable


def _not_found(model: str) -> RelayError:
    return RelayError(
        404,
        f"models/{model} is not found, or not offered to this key.",
        code="model_not_found",
        retry=False,
    )


async def list_models(request: Request) -> Response:
    """``GET /v1beta/models``: the models this key may call, in one page."""
    try:
        key, _ = await authenticate(request)
    except RelayError as error:
        return errors.render(error, api="gemini")
    usable = await database.run(_usable, key)
    return Response.json(
        {
            "models": [
                gemini.model_entry(model, max_output_tokens=limit)
                for model, limit in usable.items()
            ]
        }
    )


async def get_model(request: Request) -> Response:
    """``GET /v1beta/models/{model}``: one model this key may call."""
    model = request.path.rstrip("/").removeprefix(MODELS_PATH + "/")
    if ":" in model or "/" in model or request.method != "GET":
        # A method of Google's API the relay does not serve (":embedContent"), or a deeper path.
        return errors.render(
            RelayError(
                404, f"Unknown endpoint: {request.method} {request.path}", code="unknown_url"
            ),
            api="gemini",
        )
    try:
        key, _ = await authenticate(request)
    except RelayError as error:
        return errors.render(error, api="gemini")
    usable = await database.run(_usable, key)
    if model not in usable:
        return errors.render(_not_found(model), api="gemini")
    return Response.json(gemini.model_entry(model, max_output_tokens=usable[model]))


async def count_tokens(request: Request) -> Response:
    """``POST /v1beta/models/{model}:countTokens``: the request's input tokens, counted the way
    the relay counts a call's input for its hold (an approximation for Gemini, whose tokenizer
    is not public), free. The key was checked before the body was read (relay.views)."""
    operation = OPERATIONS[COUNT_TOKENS]
    try:
        body = validation.parse_json(request.body)
        inner = body.get("generateContentRequest")
        if isinstance(inner, dict):  # the whole request a later generateContent will send
            body = inner
        body = client_request(body, operation=operation, path=request.path, query=request.query)
        model = request.model = body["model"]
        key = request.key
        if key is None:
            key, _ = await authenticate(request)
        if not key.allows_model(model) or await database.run(price_for, model) is None:
            raise _not_found(model)
    except RelayError as error:
        return errors.render(error, api="gemini")
    system, messages, tools = gemini.countable(body)
    total = tokens.count_messages(messages, model, system=system or None, tools=tools or None)
    return Response.json(
        {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
    )
