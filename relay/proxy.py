"""A relayed call, end to end.

Admission, on the event loop: key (relay.auth, already checked from the headers by
relay.views.before_body) -> a slot among the calls in flight -> body parsed once and checked
(relay.validation) -> model and price -> channels that serve the user's group (all read
through this process's memo) -> paid options priced or refused, input counted the way the
serving family bills it -> hold covering the most the call can cost (relay.metering; placed
by the ledger writer, billing.writer). Then the upstream request, with exactly the output limit
the hold covers, another channel on failure while the client has seen nothing, the answer
streamed as it arrives. Last: settle the hold exactly once, for the upstream's usage if it is
believable (relay.metering), with its journal row (the ledger writer again; a plain answer
waits for that commit).

Settlement never depends on ``CancelledError`` reaching this code: every way a call ends
(answer sent, upstream failure, client gone while waiting, client gone mid-stream, a stalled
reader that vanishes) goes through ``Call.settle`` or ``Call.release``, both idempotent and
shielded from cancellation, and the hold's expiry is the backstop if the worker itself dies.
"""

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from billing import services as billing
from billing import writer
from billing.models import Hold, UsageLog
from billing.pricing import Demand, Price, TokenUsage, group_ratio_for, price_for
from config.cache import LocalMemo, memo
from relay import (
    auth,
    conversions,
    database,
    errors,
    metering,
    routing,
    tokens,
    upstream,
    validation,
)
from relay.auth import KeyInfo
from relay.errors import RelayError
from relay.providers import provider_for
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, UsageProblem
from relay.responses import Request, Response, StreamingResponse
from relay.routing import ChannelInfo, channels_for, channels_version, enabled_channels
from relay.streams import EventParser, Translator, anthropic_sse, openai_sse, translator_for

logger = logging.getLogger(__name__)

# The dialect each operation's client speaks.
CLIENT_DIALECT = {
    CHAT: "openai",
    COMPLETIONS: "openai",
    EMBEDDINGS: "openai",
    MESSAGES: "anthropic",
}
# Which channel dialects can serve an operation (directly or through relay.conversions).
SERVABLE_BY = {
    CHAT: frozenset({"openai", "anthropic"}),
    MESSAGES: frozenset({"openai", "anthropic"}),
    COMPLETIONS: frozenset({"openai"}),
    EMBEDDINGS: frozenset({"openai"}),
}
# Upstream answers after which another channel may do better.
RETRY_STATUSES = {401, 403, 408, 409, 429} | set(range(500, 600))
# Client headers passed to the upstream (versions and beta flags; never auth or cookies).
FORWARDED_HEADERS = {"anthropic-version", "anthropic-beta", "openai-beta"}
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
URL_PATTERN = re.compile(r"(?:https?|wss?)://\S+", re.IGNORECASE)


# Calls holding quota that have not been settled or released yet, in this process, and how
# many of them each key has (RELAY_MAX_CALLS_PER_KEY).
_in_flight: set = set()
# Calls admitted or being admitted, in all and per key: the caps count a call from its first
# check, so calls arriving together cannot all pass it before any of them is counted.
_slots = {"all": 0}
_slots_by_key: dict[int, int] = {}


def _take_slot(key_id: int) -> None:
    per_key = settings.RELAY_MAX_CALLS_PER_KEY
    if _slots["all"] >= settings.RELAY_MAX_CALLS_IN_FLIGHT:
        raise metering.too_many_in_flight("process")
    if per_key and _slots_by_key.get(key_id, 0) >= per_key:
        raise metering.too_many_in_flight("key")
    _slots["all"] += 1
    _slots_by_key[key_id] = _slots_by_key.get(key_id, 0) + 1


def _give_slot(key_id: int) -> None:
    _slots["all"] -= 1
    left = _slots_by_key.pop(key_id, 1) - 1
    if left > 0:
        _slots_by_key[key_id] = left


def calls_in_flight() -> int:
    """How many admitted calls this process has not closed yet."""
    return len(_in_flight)


@dataclass(eq=False)
class Call:
    """One client request on its way through the relay."""

    key: KeyInfo
    operation: str
    body: dict
    model: str
    stream: bool
    client_ip: str | None
    price: Price
    group_ratio: Decimal  # the user's group ratio times the service tier's
    input_tokens: int  # counted locally: sizes the hold, bills a stream the upstream never did
    audio_input_tokens: int = 0
    raw_body: bytes = b""
    options: metering.PaidOptions = field(default_factory=metering.PaidOptions)
    # The output limit per choice sent upstream (None: the client's body is left as it is),
    # and the most output the call may produce in all, which its hold covers.
    output_limit: int | None = None
    output_cap: int | None = None  # None: the model's largest output
    limit_spelling: str | None = None
    started: float = field(default_factory=time.monotonic)
    client_headers: dict = field(default_factory=dict)  # the few forwarded upstream
    channels: list[ChannelInfo] = field(default_factory=list)
    hold: Hold | None = None
    channel: ChannelInfo | None = None
    upstream_model: str = ""
    _closing: asyncio.Future | None = None
    _settled: int | None = None  # the charge of a settlement under way (the answer was sent)

    @property
    def client_dialect(self) -> str:
        return CLIENT_DIALECT[self.operation]

    @property
    def client_wants_usage(self) -> bool:
        return bool((self.body.get("stream_options") or {}).get("include_usage"))

    async def settle(
        self,
        reported: TokenUsage | None,
        status: str,
        *,
        local_output: int | Callable[[], int] = 0,
        problem: dict | None = None,
    ) -> None:
        """Charge the call (exactly once, whatever else happens to this task), for the
        upstream's usage when it is believable, else for the local counts (``local_output``:
        the output counted from what was sent; ``problem``: figures the adapter rejected)."""

        def local() -> TokenUsage:
            return TokenUsage(
                input_tokens=self.input_tokens,
                audio_input_tokens=self.audio_input_tokens,
                output_tokens=local_output() if callable(local_output) else local_output,
            )

        try:
            usage, flag, raw = metering.billable_usage(
                reported,
                local=local,
                local_input=self.input_tokens + self.audio_input_tokens,
                output_cap=(
                    self.price.max_output_tokens if self.output_cap is None else self.output_cap
                ),
                web_search_cap=self.options.web_searches,
                problem=problem,
            )
        except Exception:  # a bug must not leave the answer unbilled: bill the local counts
            logger.exception("checking the upstream usage of hold %s failed", self.hold.id)
            usage, flag, raw = local(), UsageLog.UsageFlag.REJECTED, None
        if self.options.searches_per_call and usage.web_search_calls == 0:
            usage = replace(usage, web_search_calls=1)  # OpenAI reports no count: one per call
        if flag != UsageLog.UsageFlag.TRUSTED:
            logger.warning(
                "call on channel %s: upstream usage %s (%s)",
                self.channel and self.channel.id,
                flag,
                raw,
            )
        await self._close_once(self._settlement, usage, status, flag, raw)

    async def release(self) -> None:
        """Give the hold back: nothing of the call reached the client."""
        await self._close_once(self._release)

    async def _close_once(self, make_operation, *args) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(writer.run(make_operation(*args)))
            self._closing.add_done_callback(self._closed)
        try:
            # Shielded: if this task is cancelled meanwhile, the settlement still runs to the end.
            await asyncio.shield(self._closing)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged by _closed; the hold's expiry is the backstop
            pass

    def _closed(self, closing: asyncio.Future) -> None:
        if self in _in_flight:
            _in_flight.discard(self)
            _give_slot(self.key.id)
        if closing.cancelled() or closing.exception() is None:
            return
        logger.error(
            "closing hold %s failed", self.hold and self.hold.id, exc_info=closing.exception()
        )
        if self._settled is not None:
            # The answer was delivered: the hold must be charged, not released by its expiry.
            writer.submit(billing.Deliver(self.hold, self._settled)).add_done_callback(
                self._delivery_recorded
            )

    def _delivery_recorded(self, recording: asyncio.Future) -> None:
        outcome = None if recording.cancelled() else recording.result()
        if outcome is not True:
            logger.error(
                "hold %s: a delivered answer could not be recorded (%r); its expiry will "
                "release it",
                self.hold.id,
                outcome,
            )

    def _settlement(self, usage: TokenUsage, status: str, flag: str, raw) -> billing.Settle:
        self._settled = self.price.charge(usage, self.group_ratio)
        return billing.Settle(
            hold=self.hold,
            price=self.price,
            group_ratio=self.group_ratio,
            usage=usage,
            call=billing.CallRecord(
                endpoint=self.operation,
                model=self.model,
                upstream_model=self.upstream_model,
                channel_id=self.channel.id if self.channel else None,
                is_stream=self.stream,
                status=status,
                latency_ms=int((time.monotonic() - self.started) * 1000),
                client_ip=self.client_ip,
                service_tier=self.options.service_tier,
                usage_flag=flag,
                reported_usage=raw,
            ),
        )

    def _release(self) -> billing.Release:
        return billing.Release(self.hold)


async def relay(request: Request, *, operation: str) -> Response | StreamingResponse:
    """Serve one /v1 call of the given operation, errors in the caller's format."""
    api = errors.ANTHROPIC if operation == MESSAGES else errors.OPENAI
    try:
        call = await _admit(request, operation)
    except RelayError as error:
        return errors.render(error, api=api)
    try:
        return await _forward(call)
    except RelayError as error:
        await call.release()
        return errors.render(error, api=api)
    except BaseException:
        await call.release()
        raise


# Users and keys whose last hold was refused for want of credit, for a few seconds: their
# next calls are refused from the headers, before a byte of the body is read.
_out_of_credit = LocalMemo(seconds=3, max_entries=10_000)
# Bodies larger than this are not read before the balance is checked in the database.
CHECK_BALANCE_ABOVE_BYTES = 1024 * 1024


def forget_spent_balances() -> None:
    """Forget which users and keys this process saw refused for a spent balance."""
    _out_of_credit.clear()


def out_of_credit(limit: str, amount: int | None = None) -> RelayError:
    whose = "This API key's own quota" if limit == "key" else "Your account balance"
    needs = f" (it needs up to {amount} quota)" if amount is not None else ""
    return RelayError(
        429,
        f"{whose} is too low for this request{needs}. Top up, or lower max_tokens.",
        code="insufficient_quota",
        error_type="insufficient_quota",
        retry=False,
    )


async def refuse_before_body(request: Request) -> RelayError | None:
    """Why a call whose key is known must not send its body, if it must not: its balance (or
    its key's allowance) is at or below zero."""
    key: KeyInfo = request.key
    if _out_of_credit.lookup(("user", key.user_id))[0]:
        return out_of_credit("balance")
    if not key.unlimited_quota and _out_of_credit.lookup(("key", key.id))[0]:
        return out_of_credit("key")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) <= CHECK_BALANCE_ABOVE_BYTES:
        return None  # small bodies: the hold itself checks the balance
    limit = await database.run(billing.spent_limit, user_id=key.user_id, api_key_id=key.id)
    return out_of_credit(limit) if limit else None


async def _admit(request: Request, operation: str) -> Call:
    """Everything before the upstream: who, what, whether it may, and the hold.

    On the event loop: what it reads (the key's settings, prices, channels) comes from this
    process's memo, with a thread hop only when that is stale. The hold goes through the ledger
    writer (billing.writer). If the client leaves while the hold is being placed, it is given
    back.
    """
    if request.key is not None:  # checked by relay.views.before_body, from the headers
        key, ip = request.key, request.client_ip
    else:
        key, ip = await auth.authenticate(request)
    _take_slot(key.id)
    try:
        call = await _admit_call(request, operation, key, ip)
    except BaseException:
        _give_slot(key.id)
        raise
    _in_flight.add(call)  # from here on, closing the call gives its slot back
    return call


async def _admit_call(request: Request, operation: str, key: KeyInfo, ip: str | None) -> Call:
    body = await _read_body(request, operation)
    model = body["model"]
    if not key.allows_model(model):
        raise RelayError(
            403,
            f"This API key is not allowed to use the model '{model}'.",
            code="model_not_allowed",
            retry=False,
        )
    price = await _price(model)
    group_ratio = await database.remembered(("group", key.group), group_ratio_for, key.group)
    channels = await _channels(request, key, model, operation)
    dialects = {provider_for(channel.type).dialect for channel in channels}
    options = metering.paid_options(
        operation, body, request.body, request.headers, price, anthropic="anthropic" in dialects
    )
    input_tokens, audio_tokens = await _count_input(request, operation, body, model, dialects)
    metering.refuse_audio_input(price, audio_tokens)
    call = Call(
        key=key,
        operation=operation,
        body=body,
        raw_body=request.body,
        model=model,
        stream=bool(body.get("stream")) and operation != EMBEDDINGS,
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


async def _read_body(request: Request, operation: str) -> dict:
    """The body, parsed once and checked against the operation's shape (400 naming the bad
    field); a big one off the event loop."""
    if len(request.body) <= COUNT_INLINE_BYTES:
        return _parsed(request.body, operation)
    return await asyncio.to_thread(_parsed, request.body, operation)


def _parsed(raw: bytes, operation: str) -> dict:
    body = validation.parse_json(raw)
    validation.validate_request(operation, body)
    return body


async def _price(model: str) -> Price:
    """The model's price; only a priced model is remembered (unknown names are unbounded)."""
    found, price = memo.lookup(("price", model))
    if not found:
        price = await database.run(price_for, model)
        if price is not None:
            memo.put(("price", model), price)
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
    named = metering.output_limit(call.operation, call.body)
    choices = metering.choices(call.operation, call.body)
    most = 0 if call.operation == EMBEDDINGS else max(call.price.max_output_tokens, 1)
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
    full = call.price.most(demand, call.group_ratio)
    least = full
    if named is None and limit > 1:
        least = call.price.most(replace(demand, output_tokens=1), call.group_ratio)
    placing = writer.submit(
        billing.Reserve(
            user_id=call.key.user_id,
            api_key_id=call.key.id,
            unlimited_key=call.key.unlimited_quota,
            amount=full,
            minimum=least,
        )
    )
    try:
        outcome = await asyncio.shield(placing)
    except asyncio.CancelledError:
        # The client left while the hold was being placed: nobody will settle it.
        placing.add_done_callback(_release_orphan)
        raise
    if isinstance(outcome, billing.InsufficientQuota):
        if outcome.spent:
            who = ("key", call.key.id) if outcome.limit == "key" else ("user", call.key.user_id)
            _out_of_credit.put(who, True)
        raise out_of_credit(outcome.limit, least)
    if isinstance(outcome, Exception):
        raise outcome
    call.hold = outcome
    if outcome.amount < full:
        limit = call.price.output_covered(outcome.amount, demand, call.group_ratio)
        sent = limit if settings.RELAY_CAP_OUTPUT_TO_BALANCE else None
    else:
        sent = limit if named is not None or settings.RELAY_CAP_OUTPUT_TO_BALANCE else None
    if call.operation != EMBEDDINGS:
        call.output_limit = sent
    call.output_cap = (sent if sent is not None else most) * choices
    call.limit_spelling = metering.client_limit_spelling(call.operation, call.body)


def _release_orphan(placing: asyncio.Future) -> None:
    hold = placing.result()
    if isinstance(hold, Hold):
        writer.submit(billing.Release(hold))


async def _channels(request: Request, key: KeyInfo, model: str, operation: str):
    """The channels to try, in order; or why there are none."""
    version = await database.remembered("channels-version", channels_version)
    enabled = routing.current_snapshot(version)
    if enabled is None:
        enabled = await database.run(enabled_channels, version)
    channels = channels_for(enabled, group=key.group, model=model, types=SERVABLE_BY[operation])
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


# Bodies up to this size are counted on the event loop (a few microseconds per kilobyte);
# bigger ones (long documents, base64 images) in a worker thread.
COUNT_INLINE_BYTES = 64 * 1024


async def _count_input(
    request: Request, operation: str, body: dict, model: str, dialects: set[str]
) -> tuple[int, int]:
    """(input tokens, audio input tokens), counted the way the dearest channel family that
    may serve the call bills them."""
    if len(request.body) <= COUNT_INLINE_BYTES:
        return _count_input_now(operation, body, model, dialects)
    return await asyncio.to_thread(_count_input_now, operation, body, model, dialects)


def _count_input_now(operation: str, body: dict, model: str, dialects) -> tuple[int, int]:
    if operation in (CHAT, MESSAGES):
        system = body.get("system") if operation == MESSAGES else None
        tokens_by_family = [
            tokens.count_messages(
                body.get("messages") or [],
                model,
                system=system,
                tools=body.get("tools"),
                media=dialect,
            )
            for dialect in sorted(dialects) or ["openai"]
        ]
        return max(tokens_by_family), tokens.count_audio_input(body.get("messages") or [])
    if operation == COMPLETIONS:
        return tokens.count_input(body.get("prompt", ""), model), 0
    return tokens.count_input(body.get("input", ""), model), 0


async def _forward(call: Call) -> Response | StreamingResponse:
    """Try the channels in order until one answers; nothing has reached the client before."""
    last_error: RelayError | None = None
    for channel in call.channels:
        call.channel = channel
        call.upstream_model = channel.upstream_model(call.model)
        provider = provider_for(channel.type)
        try:
            request_body = _upstream_body(call, provider)
        except conversions.ConversionError as problem:
            raise errors.invalid_request(str(problem)) from None
        client = upstream.client()
        try:
            response = await client.send(
                upstream.request(
                    provider.url(channel.base_url, _upstream_operation(call, provider)),
                    provider.headers(channel.api_key, call.client_headers),
                    json.dumps(request_body).encode(),
                ),
                stream=True,
            )
        except httpx.PoolTimeout:
            # Every upstream connection of this process is busy: another channel would wait
            # for the same pool, and the client should not.
            logger.warning("upstream connection pool exhausted")
            raise RelayError(
                503,
                "The server is busy. Try again shortly.",
                code="server_busy",
                error_type="server_error",
            ) from None
        except httpx.HTTPError as problem:
            logger.warning("channel %s unreachable: %s", channel.id, type(problem).__name__)
            last_error = RelayError(
                503,
                "The upstream service is unavailable. Try again shortly.",
                code="upstream_unavailable",
                error_type="server_error",
            )
            continue
        handed_on = False
        try:
            if response.status_code >= 400:
                last_error = await _upstream_failure(response, channel)
                if response.status_code in RETRY_STATUSES:
                    continue
                raise last_error
            if call.stream:
                started = await _start_stream(call, provider, response)
                if started is not None:
                    handed_on = True  # the stream's own ending closes the response now
                    return started
                last_error = RelayError(
                    502,
                    "The upstream service ended the stream before answering.",
                    code="upstream_error",
                    error_type="server_error",
                )
                continue
            return await _finish_plain(call, provider, response)
        finally:
            if not handed_on:
                # Every other way out (an answer read, a failure, the client's disconnect
                # cancelling this task) closes the upstream response, which cancels the
                # upstream call and gives its connection back to the pool.
                await asyncio.shield(_close_quietly(response))
    raise last_error or RelayError(
        503,
        "No upstream could serve this request.",
        code="upstream_unavailable",
        error_type="server_error",
    )


def _upstream_operation(call: Call, provider) -> str:
    """The operation the upstream performs: the client's, or its counterpart after converting."""
    if call.operation in provider.native:
        return call.operation
    return MESSAGES if provider.dialect == "anthropic" else CHAT


def _upstream_body(call: Call, provider) -> dict:
    body = call.body
    same_format = call.client_dialect == provider.dialect
    if not same_format:
        if provider.dialect == "anthropic":
            body = conversions.openai_chat_to_anthropic(
                body, default_max_tokens=settings.RELAY_ANTHROPIC_DEFAULT_MAX_TOKENS
            )
        else:
            body = conversions.anthropic_to_openai_chat(body)
    operation = _upstream_operation(call, provider)
    body = metering.set_output_limit(
        body,
        operation=operation,
        dialect=provider.dialect,
        upstream_model=call.upstream_model,
        limit=call.output_limit,
        client_spelling=call.limit_spelling if same_format else None,
    )
    return provider.prepare(body, operation=operation, upstream_model=call.upstream_model)


async def _upstream_failure(response: httpx.Response, channel: ChannelInfo) -> RelayError:
    """The upstream's error, told without its key, URL or internals."""
    raw = await response.aread()
    status = response.status_code
    logger.warning("channel %s answered %s", channel.id, status)
    if status in RETRY_STATUSES:
        if status == 429:
            return RelayError(
                429, "The upstream is rate limited. Try again shortly.", code="rate_limit_exceeded"
            )
        return _upstream_broke()
    try:
        detail = json.loads(raw).get("error")
        message = detail.get("message", "") if isinstance(detail, dict) else detail
    except (ValueError, AttributeError, RecursionError):
        message = ""
    if not isinstance(message, str):
        return _upstream_broke()  # an error of a shape no API has: nothing to tell
    return RelayError(
        status if status in (400, 404, 413, 422) else 400,
        _scrub(message, channel) or "The upstream rejected the request.",
        code="upstream_rejected",
        retry=False,
    )


def _upstream_broke() -> RelayError:
    return RelayError(
        502,
        "The upstream service failed. Try again shortly.",
        code="upstream_error",
        error_type="server_error",
    )


# Anything shaped like an API key ("sk-...", "sk-ant-...", a key masked as "sk-abc***xyz").
KEY_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}", re.IGNORECASE)


def _scrub(text: str, channel: ChannelInfo) -> str:
    """The upstream's message without its key, base URL or any URL, whatever their case."""
    text = URL_PATTERN.sub("[url]", text[:2000])
    if channel.api_key:
        text = re.sub(re.escape(channel.api_key), "[key]", text, flags=re.IGNORECASE)
    text = KEY_PATTERN.sub("[key]", text)
    # The channel's address also appears without a scheme ("dial tcp 10.0.0.5:8080: ...").
    address = urlsplit(channel.base_url)
    for part in (address.netloc, address.hostname):
        if part:
            text = re.sub(re.escape(part), "[upstream]", text, flags=re.IGNORECASE)
    return text[:500]


async def _finish_plain(call: Call, provider, response: httpx.Response) -> Response:
    raw = await response.aread()
    try:
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ValueError("not an object")
        if call.client_dialect == provider.dialect:
            content = raw
        elif provider.dialect == "anthropic":
            content = json.dumps(conversions.anthropic_response_to_openai(answer, model=call.model))
        else:
            content = json.dumps(conversions.openai_response_to_anthropic(answer, model=call.model))
    except (ValueError, RecursionError, conversions.MalformedUpstream):
        raise RelayError(
            502,
            "The upstream sent an answer that could not be read.",
            code="upstream_error",
            error_type="server_error",
        ) from None
    problem = None
    try:
        reported = provider.normalize_usage(answer.get("usage"))
    except UsageProblem as bad:
        reported, problem = None, bad.raw
    # An upstream that reports no usage (or none to believe) is billed on local counts.
    await call.settle(
        reported,
        UsageLog.Status.SUCCESS,
        local_output=lambda: tokens.count_text(_answer_text(answer), call.model),
        problem=problem,
    )
    return Response(200, content if isinstance(content, bytes) else content.encode())


def _answer_text(answer: dict) -> str:
    """The output text of a non-stream answer, OpenAI or Anthropic shaped (never raises)."""
    pieces = []
    for choice in _dicts(answer.get("choices")):
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        pieces.append(message.get("content") or choice.get("text") or "")
        for tool_call in _dicts(message.get("tool_calls")):
            function = tool_call.get("function")
            if isinstance(function, dict):
                pieces.append(f"{function.get('name', '')}{function.get('arguments', '')}")
    for block in _dicts(answer.get("content")):
        pieces.append(block.get("text") or json.dumps(block.get("input") or ""))
    return "".join(p for p in pieces if isinstance(p, str))


def _dicts(value) -> list:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


async def _start_stream(call: Call, provider, response: httpx.Response):
    """Read up to the first event; then the answer is committed to this channel.

    Returns the streaming response, or None when the upstream ended before any event, which
    leaves the call free to try another channel. The caller closes the upstream response
    unless a streaming response is returned.
    """
    parser = EventParser()
    chunks = response.aiter_raw()
    first = []
    try:
        while not first:
            first = parser.feed(await anext(chunks))
    except (StopAsyncIteration, httpx.HTTPError):
        return None
    translator = translator_for(
        client_dialect=call.client_dialect,
        upstream_dialect=provider.dialect,
        model=call.model,
        client_wants_usage=call.client_wants_usage,
    )
    return stream_response(
        call, response, _stream(call, response, chunks, parser, first, translator)
    )


def stream_response(call: Call, upstream_response, body) -> StreamingResponse:
    """The client's stream of a call, cleaned up even if its body never starts."""

    async def unsent() -> None:
        # The client left before the body started, so the body's own finally never runs:
        # nothing was sent, the hold goes back and the upstream call is cancelled here.
        await _close_quietly(upstream_response)
        await call.release()

    return StreamingResponse(body, unsent=unsent, headers=STREAM_HEADERS)


async def _stream(call, response, chunks, parser, first, translator: Translator):
    """The client's stream. Whatever ends it, the ``finally`` settles what was sent."""
    sent_text: list[str] = []
    status = UsageLog.Status.CLIENT_GONE
    try:
        pending = list(first)
        while True:
            for event in pending:
                data, text = translator.feed(event)
                if data:
                    yield data
                # Reached only once the bytes were handed on: the client was sent this text.
                sent_text.append(text)
            try:
                pending = parser.feed(await anext(chunks))
            except StopAsyncIteration:
                break
        tail = translator.finish()
        if tail:
            yield tail
        status = (
            UsageLog.Status.SUCCESS if translator.completed else (UsageLog.Status.UPSTREAM_ERROR)
        )
    except (httpx.HTTPError, conversions.UpstreamStreamError) as problem:
        status = UsageLog.Status.UPSTREAM_ERROR
        logger.warning("stream from channel %s broke: %s", call.channel.id, type(problem).__name__)
        yield _stream_error(call, getattr(problem, "error_type", "api_error"))
    except Exception:  # a malformed event no translator foresaw: end the stream cleanly
        status = UsageLog.Status.UPSTREAM_ERROR
        logger.exception("stream from channel %s could not be translated", call.channel.id)
        yield _stream_error(call)
    finally:
        if status == UsageLog.Status.CLIENT_GONE and translator.completed:
            # The client left after the upstream's last event had been handed on (the SDKs
            # close on [DONE] or message_stop without reading the end of the body): it has
            # the whole answer, which the upstream's usage counts exactly.
            status = UsageLog.Status.SUCCESS
        reported = translator.usage
        problem = getattr(translator, "usage_problem", None)
        output = tokens.count_text("".join(sent_text), call.model)
        if not (status == UsageLog.Status.SUCCESS and reported and reported.output_tokens):
            # The upstream's count is missing or covers more than the client got: bill the
            # output that was sent, and the upstream's input count when it gave one.
            if reported is not None and not _input_reported(reported):
                reported = None
            elif reported is not None:
                reported = replace(
                    reported, output_tokens=output, reasoning_tokens=0, audio_output_tokens=0
                )
        try:
            # Closing the upstream response cancels the upstream call if it is still running.
            await asyncio.shield(_close_quietly(response))
        finally:
            # Reached even when the client's disconnect cancels this task during the close.
            await call.settle(reported, status, local_output=output, problem=problem)


def _input_reported(usage: TokenUsage) -> bool:
    return bool(usage.input_tokens or usage.cached_input_tokens or usage.cache_write_tokens)


async def _close_quietly(response: httpx.Response) -> None:
    try:
        await response.aclose()
    except Exception:  # noqa: BLE001 - a broken upstream connection is already gone
        pass


def _stream_error(call: Call, error_type: str = "api_error") -> bytes:
    """The event that ends a broken stream, in the client's format; an Anthropic client keeps
    the kind of error the upstream named (``overloaded_error``...) when it is one of Anthropic's."""
    message = "The upstream stream broke off. The answer is incomplete."
    if call.client_dialect == "anthropic":
        if error_type not in errors.ANTHROPIC_TYPES.values():
            error_type = "api_error"
        return anthropic_sse(
            "error", {"type": "error", "error": {"type": error_type, "message": message}}
        )
    return openai_sse(
        {
            "error": {
                "message": message,
                "type": "server_error",
                "param": None,
                "code": "upstream_error",
            }
        }
    )
