"""Responses kept by the channel that made them: ``GET /v1/responses/{id}``, ``DELETE`` of it,
``GET /v1/responses/{id}/input_items`` and ``POST /v1/responses/{id}/cancel``.

A Responses answer served natively by an OpenAI channel is stored by that upstream account
(unless the client sent ``store: false``), so reading it back must go to the same channel.
The relay remembers, for each such answer, the channel that made it and the user it was made
for: one entry in the shared cache (config.cache), ``response-channel:<id>``, kept
REMEMBER_SECONDS, so memory stays bounded whatever the traffic (Redis expires entries, the
file cache of embedded mode culls past its size). Another user asking for the id, an id never
seen, one older than that or one whose channel is gone gets a 404. Answers converted from
another format are stored nowhere, upstream or here.

These calls are free: they carry no model and produce nothing new.

A new call naming one of these responses as its ``previous_response_id`` is billed by the
upstream for the whole earlier conversation as input. So each entry also keeps the stored
response's token total (its input, cached and not, plus its output), which admission adds to
the new call's counted input (the hold, and the bound on a believable upstream input count),
and the call goes to the channel that stored the response, the only one that can find it.
"""

import contextlib
import json
import logging
import re
from dataclasses import dataclass

import httpx

from billing.pricing import TokenUsage
from config.cache import shared_cache
from relay import database, errors, upstream
from relay.auth import authenticate
from relay.errors import RelayError
from relay.operations import RESPONSES
from relay.providers import provider_for
from relay.providers.base import join_url
from relay.responses import Request, Response
from relay.routing import ChannelInfo, enabled_channels

logger = logging.getLogger(__name__)

PATH = "/v1/responses/"
KEY_PREFIX = "response-channel:"
REMEMBER_SECONDS = 3 * 24 * 3600
# What an upstream's response id may look like to be remembered (OpenAI's: resp_ + hex).
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# (method, what follows the id) -> allowed
ACTIONS = {("GET", ""), ("DELETE", ""), ("GET", "/input_items"), ("POST", "/cancel")}


@dataclass(frozen=True)
class Stored:
    """What the relay remembers of a stored response."""

    channel_id: int
    user_id: int
    tokens: int  # the conversation up to and including this response, in tokens


def _stored(value: object) -> Stored | None:
    """An entry read back from the cache (entries written before ``tokens`` have none)."""
    if not isinstance(value, tuple | list) or len(value) not in (2, 3):
        return None
    channel_id, user_id, *rest = value
    tokens = rest[0] if rest else 0
    if not all(type(part) is int for part in (channel_id, user_id, tokens)):
        return None
    return Stored(channel_id, user_id, tokens)


def _conversation_tokens(call, usage: TokenUsage | None) -> int:
    """The tokens a later call continuing this answer is billed again as input: the answer's
    whole input and its output, as the upstream reported them (else as the call counted and
    capped them)."""
    if usage is None:
        return call.input_tokens + (call.output_cap or 0)
    return (
        usage.input_tokens
        + usage.cached_input_tokens
        + usage.cache_write_tokens
        + usage.audio_input_tokens
        + usage.output_tokens
        + usage.audio_output_tokens
    )


async def continued(key, body: dict) -> Stored | None:
    """The stored response a Responses call continues (``previous_response_id``), if this
    key's user made it through the relay; None otherwise (the upstream then decides)."""
    previous = body.get("previous_response_id")
    if not isinstance(previous, str) or not RESPONSE_ID.fullmatch(previous):
        return None
    try:
        remembered = _stored(await database.run(shared_cache().get, KEY_PREFIX + previous))
    except Exception:  # the cache is down: the call goes on, without the stickiness
        logger.warning("could not read the stored response %s", previous, exc_info=True)
        return None
    if remembered is None or remembered.user_id != key.user_id:
        return None
    return remembered


async def answered(call, answer_id: object, usage: TokenUsage | None = None) -> None:
    """Remember which channel made a Responses answer it serves natively, and its token
    total (``usage``: the upstream's figures, when it gave them). Best effort: a failure only
    means the answer cannot be read back through the relay."""
    operation = getattr(call, "operation", None)  # stand-ins for a call may have none
    if operation is None or operation.name != RESPONSES or call.channel is None:
        return
    if not isinstance(answer_id, str) or not RESPONSE_ID.fullmatch(answer_id):
        return
    if call.body.get("store") is False:
        return
    if provider_for(call.channel.type).format_for(operation) != "responses":
        return  # converted: nothing was stored upstream
    with contextlib.suppress(Exception):
        await database.run(
            shared_cache().set,
            KEY_PREFIX + answer_id,
            (call.channel.id, call.key.user_id, _conversation_tokens(call, usage)),
            REMEMBER_SECONDS,
        )


def _not_found(response_id: str) -> RelayError:
    return RelayError(
        404,
        f"No response with id '{response_id[:128]}' is kept for this key. Only responses made "
        "by a channel that serves the Responses API natively, with store left on, can be read "
        f"back, for {REMEMBER_SECONDS // 86400} days.",
        code="not_found",
        retry=False,
    )


def _channel(channel_id: int) -> ChannelInfo | None:
    return next((c for c in enabled_channels() if c.id == channel_id), None)


async def stored_response(request: Request) -> Response:
    """Relay a read, delete or cancel of a stored response to the channel that made it."""
    rest = request.path.rstrip("/")[len(PATH) :]
    response_id, _, action = rest.partition("/")
    action = f"/{action}" if action else ""
    if (request.method, action) not in ACTIONS or not RESPONSE_ID.fullmatch(response_id):
        allowed = sorted(method for method, known in ACTIONS if known == action)
        if not allowed or not RESPONSE_ID.fullmatch(response_id):
            error = RelayError(
                404, f"Unknown endpoint: {request.method} {request.path}", code="unknown_url"
            )
            return errors.render(error, api="responses")
        error = RelayError(
            405,
            f"{request.method} is not allowed here; use {', '.join(allowed)}.",
            code="method_not_allowed",
        )
        response = errors.render(error, api="responses")
        response.headers["Allow"] = ", ".join(allowed)
        return response
    try:
        key, _ = await authenticate(request)
        remembered = _stored(await database.run(shared_cache().get, KEY_PREFIX + response_id))
        if remembered is None or remembered.user_id != key.user_id:
            raise _not_found(response_id)
        channel = await database.run(_channel, remembered.channel_id)
        if channel is None:
            raise _not_found(response_id)
        return await _forward(request, channel, response_id)
    except RelayError as error:
        return errors.render(error, api="responses")


async def _forward(request: Request, channel: ChannelInfo, response_id: str) -> Response:
    provider = provider_for(channel.type)
    url = join_url(channel.base_url, request.path.rstrip("/"))
    query = _without_key(request.query)  # ?include[]=..., input_items' paging
    if query:
        url += ("&" if "?" in url else "?") + query
    headers = provider.headers(channel.api_key, {})
    template = upstream.request(url, headers, request.body if request.method == "POST" else b"")
    outgoing = httpx.Request(
        request.method,
        url,
        headers=template.headers,
        content=request.body if request.method == "POST" else b"",
        extensions=template.extensions,
    )
    try:
        answer = await provider.client().send(outgoing)
    except httpx.HTTPError as problem:
        logger.warning("channel %s unreachable: %s", channel.id, type(problem).__name__)
        raise RelayError(
            503,
            "The upstream service is unavailable. Try again shortly.",
            code="upstream_unavailable",
            error_type="server_error",
        ) from None
    if answer.status_code == 404:
        raise _not_found(response_id)
    if answer.status_code >= 400:
        logger.warning("channel %s answered %s", channel.id, answer.status_code)
        message = _upstream_message(answer.content)
        raise RelayError(
            400 if answer.status_code < 500 else 502,
            message if answer.status_code < 500 else "The upstream service failed.",
            code="upstream_rejected" if answer.status_code < 500 else "upstream_error",
            retry=answer.status_code >= 500,
        )
    return Response(answer.status_code, answer.content)


def _without_key(query: str) -> str:
    """The client's query string without a ``key=`` of its own (the relay's key is the
    client's credential here, never the upstream's business)."""
    kept = [pair for pair in query.split("&") if pair and not pair.lower().startswith("key=")]
    return "&".join(kept)


def _upstream_message(raw: bytes) -> str:
    """The upstream's message for a refusal (a cancel of a response that is not a background
    one, ...): kept only if it names no URL or key."""
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "The upstream rejected the request."
    if not isinstance(message, str) or "://" in message or "sk-" in message:
        return "The upstream rejected the request."
    return message[:500]
