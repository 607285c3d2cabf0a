"""Admission: everything a call goes through before its upstream request, ending in its hold.

On the event loop: the key (relay.auth; usually already checked from the headers, before the
body, by ``refuse_before_body``'s caller) -> a slot among the calls in flight -> the body,
parsed once and checked against its operation's shape (relay.validation) -> model and price ->
channels that serve the user's group (all read through this process's memo, with a thread hop
only when that is stale) -> paid options priced or refused and the input counted the way the
serving family bills it -> the hold, covering the most the call can cost (relay.metering),
placed by the ledger writer (billing.writer). If the client leaves while the hold is being
placed, it is given back.

``admit`` is the public entry: /v1 endpoints call it, and so will /mj.
"""

import asyncio
import json
from dataclasses import replace
from typing import cast

from django.conf import settings

from billing import services as billing
from billing import writer
from billing.operations import HeldQuota, InsufficientQuota, Release, Reserve
from billing.pricing import UNPRICED, Demand, Price, group_ratio_for, price_for
from config.cache import LocalMemo, memo
from relay import (
    auth,
    database,
    media,
    metering,
    ready_holds,
    routing,
    stored_responses,
    tokens,
    validation,
)
from relay.auth import KeyInfo
from relay.calls import Call, give_slot, take_slot, track
from relay.errors import RelayError
from relay.formats import client_request, gemini, openai_responses
from relay.operations import Format, Operation
from relay.providers import channel_types_for, provider_for
from relay.responses import Request
from relay.routing import ChannelInfo, channels_for, channels_version, enabled_channels

# Client headers passed to the upstream (versions and beta flags; never auth or cookies).
FORWARDED_HEADERS = {"anthropic-version", "anthropic-beta", "openai-beta"}
# Bodies up to this size are parsed and counted on the event loop (a few microseconds per
# kilobyte); bigger ones (long documents, base64 images) in a worker thread.
COUNT_INLINE_BYTES = 64 * 1024

# Users and keys whose last hold was refused for want of credit, for a few seconds: their
# next calls are refused from the headers, before a byte of the body is read.
_out_of_credit = LocalMemo(seconds=3, max_entries=10_000)
# Bodies larger than this are not read before the balance is checked in the database.
CHECK_BALANCE_ABOVE_BYTES = 1024 * 1024


def forget_spent_balances() -> None:
    """Forget which users and keys this process saw refused for a spent balance."""
    _out_of_credit.clear()


def out_of_credit(limit: str, amount: int | None = None) -> RelayError:
    """The refusal of a call its balance (or its key's own limit) cannot cover."""
    needs = f" (it needs up to {amount} quota)" if amount is not None else ""
    if limit == "key":
        # Topping up the account does not help: the key's own limit is what ran out.
        message = (
            f"This API key has reached its own spending limit{needs}. The key's owner can "
            "raise the key's limit, or lower max_tokens."
        )
    else:
        message = (
            f"Your account balance is too low for this request{needs}. Top up, or lower max_tokens."
        )
    return RelayError(
        429,
        message,
        code="insufficient_quota",
        error_type="insufficient_quota",
        retry=False,
    )


async def refuse_before_body(request: Request) -> RelayError | None:
    """Why a call whose key is known must not send its body, if it must not: its balance (or
    its key's allowance) is at or below zero."""
    key = request.key
    if key is None:  # not checked from the headers: admission checks it with the body
        return None
    # A carved sub-key never spends its owner's balance, so its owner's being spent is no
    # reason to refuse it.
    if not key.carved and _out_of_credit.lookup(("user", key.user_id))[0]:
        return out_of_credit("balance")
    if not key.unlimited_quota and _out_of_credit.lookup(("key", key.id))[0]:
        return out_of_credit("key")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) <= CHECK_BALANCE_ABOVE_BYTES:
        return None  # small bodies: the hold itself checks the balance
    try:
        limit = await database.run(billing.spent_limit, user_id=key.user_id, api_key_id=key.id)
    except RelayError as error:  # the database is away: a 503 the client may retry
        return error
    return out_of_credit(limit) if limit else None


async def admit(request: Request, operation: Operation) -> Call:
    """The call, admitted with its hold; or the RelayError that refuses it (the module's
    docstring has the steps). The caller must end the call (``settle`` or ``release``)."""
    if request.key is not None:  # checked by relay.views.before_body, from the headers
        key, ip = request.key, request.client_ip
    else:
        key, ip = await auth.authenticate(request)
    take_slot(key.id)
    try:
        call = await _admit_call(request, operation, key, ip)
    except BaseException:
        give_slot(key.id)
        raise
    track(call)  # from here on, closing the call gives its slot back
    return call


async def _admit_call(request: Request, operation: Operation, key: KeyInfo, ip: str | None) -> Call:
    body = await _read_body(request, operation)
    model = request.model = body["model"]  # request.model: for the front's refusal log
    if not key.allows_model(model):
        raise RelayError(
            403,
            f"This API key is not allowed to use the model '{model}'.",
            code="model_not_allowed",
            retry=False,
        )
    price = await _price(model, free_unless_priced=operation.free_unless_priced)
    metering.refuse_unpriced_tokens(operation, price)  # a per-call model on a token endpoint
    group_ratio = await database.remembered(("group", key.group), group_ratio_for, key.group)
    channels = await _channels(request, key, model, operation)
    # A Responses call that continues a stored response: the upstream bills the earlier
    # conversation as input again, and only the channel that stored it can find it.
    earlier = await stored_responses.continued(key, body)
    if earlier is not None:
        channels = [c for c in channels if c.id == earlier.channel_id] or channels
    formats = {provider_for(channel.type).format for channel in channels}
    options = metering.paid_options(
        operation.name, body, request.body, request.headers, price, anthropic="anthropic" in formats
    )
    input_tokens, audio_tokens = await _count_input(request, operation, body, model, formats)
    if earlier is not None:
        input_tokens += earlier.tokens
    metering.refuse_audio_input(price, audio_tokens)
    call = Call(
        key=key,
        operation=operation,
        body=body,
        raw_body=request.body,
        upload=request.upload,
        model=model,
        stream=bool(body.get("stream")) and operation.streams,
        client_ip=ip,
        price=price,
        group_ratio=group_ratio * options.tier_ratio,
        input_tokens=input_tokens,
        audio_input_tokens=audio_tokens,
        options=options,
        client_headers={
            name: value for name, value in request.headers.items() if name in FORWARDED_HEADERS
        },
        channels=channels,
    )
    await _hold(call)
    return call


async def _read_body(request: Request, operation: Operation) -> dict:
    """The body, parsed once and checked against the operation's shape (400 naming the bad
    field); a big one off the event loop."""
    if len(request.body) <= COUNT_INLINE_BYTES and request.upload is None:
        return _parsed(request, operation)
    return await asyncio.to_thread(_parsed, request, operation)


def _parsed(request: Request, operation: Operation) -> dict:
    if request.upload is not None:  # a multipart upload: its text fields (relay.media)
        body = media.form_body(request.upload, operation)
    else:
        body = validation.parse_json(request.body)
        # Gemini's URL names the model and the stream: the body gets them (relay.formats).
        body = client_request(body, operation=operation, path=request.path, query=request.query)
    if operation.default_model and "model" not in body:
        body["model"] = operation.default_model
    validation.validate_request(operation.name, body)
    return body


async def _price(model: str, *, free_unless_priced: bool = False) -> Price:
    """The model's price; only a priced model is remembered (unknown names are unbounded).
    ``free_unless_priced``: a model without a price is free rather than refused."""
    found, remembered = memo.lookup(("price", model))
    price = cast("Price | None", remembered)  # what price_for returned, below
    if not found:
        price = await database.run(price_for, model)
        if price is not None:
            memo.put(("price", model), price)
    if price is None and free_unless_priced:
        return replace(UNPRICED, model=model, is_free=True)
    if price is None:
        raise RelayError(
            404,
            f"The model '{model}' does not exist or has no price on this site.",
            code="model_not_found",
            retry=False,
        )
    return price


async def _hold(call: Call) -> None:
    """Place the call's hold: the most it can cost, or, when it named no output limit and the
    balance is short, as much as the balance covers (the upstream is then asked for less)."""
    per_call = media.hold_for(call)  # images and audio, by their per-call prices
    named = metering.output_limit(call.operation, call.body)
    choices = metering.choices(call.operation, call.body)
    most = max(call.price.max_output_tokens, 1) if call.operation.produces_output else 0
    limit = most if named is None else min(named, most)
    options = call.options
    demand = Demand(
        input_tokens=call.input_tokens,
        output_tokens=limit,
        choices=choices,
        audio_input_tokens=call.audio_input_tokens,
        audio_output=options.audio_output,
        cache_writes=options.cache_writes,
        web_searches=options.web_searches,
    )
    full = call.price.most(demand, call.group_ratio) if per_call is None else per_call
    least = full
    if named is None and limit > 1:
        least = call.price.most(replace(demand, output_tokens=1), call.group_ratio)
    reserve = Reserve(
        user_id=call.key.user_id,
        api_key_id=call.key.id,
        unlimited_key=call.key.unlimited_quota,
        amount=full,
        minimum=least,
    )
    # A hold placed ahead for this key (relay.ready_holds) that covers this call in full.
    ready = ready_holds.take(reserve) if per_call is None else None
    outcome = ready if ready is not None else await _place(reserve)
    if isinstance(outcome, InsufficientQuota):
        if outcome.spent:
            who = ("key", call.key.id) if outcome.limit == "key" else ("user", call.key.user_id)
            _out_of_credit.put(who, True)
        raise out_of_credit(outcome.limit, least)
    if isinstance(outcome, Exception):
        if database.is_unreachable(outcome):  # the writer met the database away
            database.mark_away(outcome)
            raise database.unavailable() from outcome
        raise outcome
    held = call.hold = cast(HeldQuota, outcome)  # a Reserve's outcome, once not refused
    if per_call is not None:
        return  # no output limit to decide: relay.media settles what it held
    ready_holds.refill(replace(reserve, minimum=None))  # the key's next call's, meanwhile
    if held.amount < full:
        limit = call.price.output_covered(held.amount, demand, call.group_ratio)
        sent = limit if settings.RELAY_CAP_OUTPUT_TO_BALANCE else None
    else:
        sent = limit if named is not None or settings.RELAY_CAP_OUTPUT_TO_BALANCE else None
    if call.operation.produces_output:
        call.output_limit = sent
    call.output_cap = (sent if sent is not None else most) * choices
    call.limit_spelling = metering.client_limit_spelling(call.operation, call.body)


async def _place(reserve: Reserve):
    """Place a hold through the ledger writer: its outcome (a hold, a refusal, or the error)."""
    if database.away():  # a call just found it away: answer now, not after a wait
        raise database.unavailable()
    placing = writer.submit(reserve)
    try:
        return await asyncio.wait_for(asyncio.shield(placing), settings.RELAY_DATABASE_WAIT_SECONDS)
    except TimeoutError:
        # The database does not answer (frozen, or far behind): the call is answered 503 now,
        # and a hold placed later is given back, as for a client that left.
        placing.add_done_callback(_release_orphan)
        database.mark_away(f"no hold within {settings.RELAY_DATABASE_WAIT_SECONDS:g} s")
        raise database.unavailable() from None
    except asyncio.CancelledError:
        # The client left while the hold was being placed: nobody will settle it.
        placing.add_done_callback(_release_orphan)
        raise


def _release_orphan(placing: asyncio.Future) -> None:
    hold = placing.result()
    if isinstance(hold, HeldQuota):
        writer.submit(Release(hold))


async def _channels(
    request: Request, key: KeyInfo, model: str, operation: Operation
) -> list[ChannelInfo]:
    """The channels to try, in order; or why there are none."""
    version = await database.remembered("channels-version", channels_version)
    enabled = routing.current_snapshot(version)
    if enabled is None:
        enabled = await database.run(enabled_channels, version)
    types = channel_types_for(operation.served_by)
    channels = channels_for(enabled, group=key.group, model=model, types=types)
    if channels:
        return channels
    # A model offered only by channels that cannot do this operation (a Claude model on
    # /v1/embeddings) is usable elsewhere: say so rather than that nobody offers it.
    offered = any(channel.serves(group=key.group, model=model) for channel in enabled)
    raise RelayError(
        404,
        f"The model '{model}' cannot be used with {request.path}."
        if offered
        else f"No channel offers the model '{model}' to your group ('{key.group}').",
        code="model_not_found",
        retry=False,
    )


async def _count_input(
    request: Request, operation: Operation, body: dict, model: str, formats: set[Format]
) -> tuple[int, int]:
    """(input tokens, audio input tokens), counted the way the dearest channel family that
    may serve the call bills them."""
    if len(request.body) <= COUNT_INLINE_BYTES:
        return _count_input_now(operation, body, model, formats)
    return await asyncio.to_thread(_count_input_now, operation, body, model, formats)


def _count_input_now(
    operation: Operation, body: dict, model: str, formats: set[Format]
) -> tuple[int, int]:
    if operation.input in ("messages", "items", "contents"):
        system = body.get("system") if operation.client_format == "anthropic" else None
        messages, tools = body.get("messages") or [], body.get("tools")
        if operation.input == "items":  # the Responses API: instructions and input items
            system, messages, tools = openai_responses.messages_for_counting(body)
        if operation.input == "contents":  # Gemini: system instruction, contents and tools
            system, messages, tools = gemini.countable(body)
        tokens_by_family = [
            tokens.count_messages(
                messages,
                model,
                system=system,
                tools=tools,
                media="anthropic" if family == "anthropic" else "openai",
            )
            for family in sorted(formats) or ["openai"]
        ]
        return max(tokens_by_family), tokens.count_audio_input(messages)
    if operation.input == "moderation":
        return tokens.count_input(_moderation_text(body.get("input")), model), 0
    if operation.input == "rerank":
        return _rerank_tokens(body, model), 0
    return tokens.count_input(body.get(operation.input, ""), model), 0


def _moderation_text(value) -> str | list:
    """The text a moderation input carries: a string, strings, or the text of typed parts
    (images are not counted: moderation models are priced by text, when priced at all)."""
    if isinstance(value, list) and any(isinstance(part, dict) for part in value):
        return [part.get("text") or "" for part in value if isinstance(part, dict)]
    return value if isinstance(value, str | list) else ""


def _document_text(document) -> str:
    if isinstance(document, str):
        return document
    if isinstance(document, dict) and isinstance(document.get("text"), str):
        return document["text"]
    return json.dumps(document)


def _rerank_tokens(body: dict, model: str) -> int:
    """A rerank's input as token-billing upstreams count it: the query is read with each
    document (Jina, Cohere-compatible servers), so the query counts once per document."""
    documents = body.get("documents") or []
    query = tokens.count_text(_document_text(body.get("query", "")), model)
    return sum(tokens.count_text(_document_text(d), model) + query for d in documents)
