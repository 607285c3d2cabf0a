"""A relayed call, end to end.

Admission, on the event loop: key (relay.auth) -> body and model checks -> price -> channels
that serve the user's group (all read through this process's memo) -> hold (placed by the
ledger writer, billing.writer). Then the upstream request, another channel on failure while the
client has seen nothing, the answer streamed as it arrives. Last: settle the hold exactly once,
with its journal row (the ledger writer again; a plain answer waits for that commit).

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
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from accounts import secrets as key_secrets
from billing import services as billing
from billing import writer
from billing.models import Hold, UsageLog
from billing.pricing import Price, TokenUsage, group_ratio_for, price_for
from relay import auth, conversions, database, errors, routing, tokens, upstream
from relay.auth import KeyInfo
from relay.errors import RelayError
from relay.providers import provider_for
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES
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


# Calls holding quota that have not been settled or released yet, in this process.
_in_flight: set = set()


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
    group_ratio: Decimal
    input_tokens: int  # counted locally: sizes the hold, bills a stream the upstream never did
    started: float = field(default_factory=time.monotonic)
    client_headers: dict = field(default_factory=dict)  # the few forwarded upstream
    channels: list[ChannelInfo] = field(default_factory=list)
    hold: Hold | None = None
    channel: ChannelInfo | None = None
    upstream_model: str = ""
    _closing: asyncio.Future | None = None

    @property
    def client_dialect(self) -> str:
        return CLIENT_DIALECT[self.operation]

    @property
    def client_wants_usage(self) -> bool:
        return bool((self.body.get("stream_options") or {}).get("include_usage"))

    async def settle(self, usage: TokenUsage, status: str) -> None:
        """Charge the call (exactly once, whatever else happens to this task)."""
        await self._close_once(self._settlement, usage, status)

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
        _in_flight.discard(self)
        if not closing.cancelled() and closing.exception() is not None:
            logger.error(
                "settling hold %s failed; its expiry will release it",
                self.hold and self.hold.id,
                exc_info=closing.exception(),
            )

    def _settlement(self, usage: TokenUsage, status: str) -> billing.Settle:
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


async def _admit(request: Request, operation: str) -> Call:
    """Everything before the upstream: who, what, whether it may, and the hold.

    On the event loop: what it reads (the key's settings, prices, channels) comes from this
    process's memo, with a thread hop only when that is stale. The hold goes through the ledger
    writer (billing.writer). If the client leaves while the hold is being placed, it is given
    back.
    """
    presented = auth.presented_key(request.headers)
    if not presented:
        raise auth.no_key()
    key = await auth.key_info(key_secrets.lookup_hash(presented))
    # Who is calling is answered before what was asked: a bad key gets 401 whatever its body.
    ip = auth.check_key(key, request)
    body = _parse_body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.invalid_request("You must provide a model parameter.", param="model")
    if not key.allows_model(model):
        raise RelayError(
            403,
            f"This API key is not allowed to use the model '{model}'.",
            code="model_not_allowed",
            retry=False,
        )
    price = await database.remembered(("price", model), price_for, model)
    if price is None:
        raise RelayError(
            404,
            f"The model '{model}' does not exist or has no price on this site.",
            code="model_not_found",
            retry=False,
        )
    group_ratio = await database.remembered(("group", key.group), group_ratio_for, key.group)
    channels = await _channels(request, key, model, operation)
    call = Call(
        key=key,
        operation=operation,
        body=body,
        model=model,
        stream=bool(body.get("stream")) and operation != EMBEDDINGS,
        client_ip=ip,
        price=price,
        group_ratio=group_ratio,
        input_tokens=await _count_input(request, operation, body, model),
        client_headers={
            name: value for name, value in request.headers.items() if name in FORWARDED_HEADERS
        },
        channels=channels,
    )
    estimate = price.estimate(
        input_tokens=call.input_tokens,
        max_output=_max_output(operation, body),
        group_ratio=call.group_ratio,
    )
    placing = writer.submit(
        billing.Reserve(
            user_id=key.user_id,
            api_key_id=key.id,
            unlimited_key=key.unlimited_quota,
            amount=estimate,
        )
    )
    try:
        outcome = await asyncio.shield(placing)
    except asyncio.CancelledError:
        # The client left while the hold was being placed: nobody will settle it.
        placing.add_done_callback(_release_orphan)
        raise
    if isinstance(outcome, billing.InsufficientQuota):
        whose = "This API key's own quota" if outcome.limit == "key" else "Your account balance"
        raise RelayError(
            429,
            f"{whose} is too low for this request (it needs up to {estimate} quota). "
            "Top up, or lower max_tokens.",
            code="insufficient_quota",
            error_type="insufficient_quota",
            retry=False,
        )
    if isinstance(outcome, Exception):
        raise outcome
    call.hold = outcome
    _in_flight.add(call)
    return call


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


def _parse_body(request: Request) -> dict:
    try:
        body = json.loads(request.body)
    except ValueError:
        raise errors.invalid_request(
            "We could not parse the JSON body of your request. Send valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    return body


# Bodies up to this size are counted on the event loop (a few microseconds per kilobyte);
# bigger ones (long documents, base64 images) in a worker thread.
COUNT_INLINE_BYTES = 64 * 1024


async def _count_input(request: Request, operation: str, body: dict, model: str) -> int:
    if len(request.body) <= COUNT_INLINE_BYTES:
        return _count_input_now(operation, body, model)
    return await asyncio.to_thread(_count_input_now, operation, body, model)


def _count_input_now(operation: str, body: dict, model: str) -> int:
    if operation == CHAT:
        return tokens.count_messages(body.get("messages") or [], model, tools=body.get("tools"))
    if operation == MESSAGES:
        return tokens.count_messages(
            body.get("messages") or [], model, system=body.get("system"), tools=body.get("tools")
        )
    if operation == COMPLETIONS:
        return tokens.count_input(body.get("prompt", ""), model)
    return tokens.count_input(body.get("input", ""), model)


def _max_output(operation: str, body: dict) -> int | None:
    if operation == EMBEDDINGS:
        return 0
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value >= 0:
            return value
    return None


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
        except httpx.HTTPError as problem:
            logger.warning("channel %s unreachable: %s", channel.id, type(problem).__name__)
            last_error = RelayError(
                503,
                "The upstream service is unavailable. Try again shortly.",
                code="upstream_unavailable",
                error_type="server_error",
            )
            continue
        if response.status_code >= 400:
            last_error = await _upstream_failure(response, channel)
            if response.status_code in RETRY_STATUSES:
                continue
            raise last_error
        if call.stream:
            started = await _start_stream(call, provider, response)
            if started is not None:
                return started
            last_error = RelayError(
                502,
                "The upstream service ended the stream before answering.",
                code="upstream_error",
                error_type="server_error",
            )
            continue
        return await _finish_plain(call, provider, response)
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
    if call.client_dialect != provider.dialect:
        if provider.dialect == "anthropic":
            body = conversions.openai_chat_to_anthropic(
                body, default_max_tokens=settings.RELAY_ANTHROPIC_DEFAULT_MAX_TOKENS
            )
        else:
            body = conversions.anthropic_to_openai_chat(body)
    return provider.prepare(
        body, operation=_upstream_operation(call, provider), upstream_model=call.upstream_model
    )


async def _upstream_failure(response: httpx.Response, channel: ChannelInfo) -> RelayError:
    """The upstream's error, told without its key, URL or internals."""
    try:
        raw = await response.aread()
    finally:
        await response.aclose()
    message = ""
    try:
        detail = json.loads(raw).get("error")
        message = detail.get("message", "") if isinstance(detail, dict) else str(detail or "")
    except (ValueError, AttributeError):
        pass
    message = _scrub(message, channel)
    status = response.status_code
    logger.warning("channel %s answered %s", channel.id, status)
    if status in RETRY_STATUSES:
        if status == 429:
            return RelayError(
                429, "The upstream is rate limited. Try again shortly.", code="rate_limit_exceeded"
            )
        return RelayError(
            502,
            "The upstream service failed. Try again shortly.",
            code="upstream_error",
            error_type="server_error",
        )
    return RelayError(
        status if status in (400, 404, 413, 422) else 400,
        message or "The upstream rejected the request.",
        code="upstream_rejected",
        retry=False,
    )


def _scrub(text: str, channel: ChannelInfo) -> str:
    text = URL_PATTERN.sub("[url]", text)
    if channel.api_key:
        text = text.replace(channel.api_key, "[key]")
    # The channel's address also appears without a scheme ("dial tcp 10.0.0.5:8080: ...").
    address = urlsplit(channel.base_url)
    for part in (address.netloc, address.hostname):
        if part:
            text = re.sub(re.escape(part), "[upstream]", text, flags=re.IGNORECASE)
    return text[:500]


async def _finish_plain(call: Call, provider, response: httpx.Response) -> Response:
    try:
        raw = await response.aread()
    finally:
        await response.aclose()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise RelayError(
            502,
            "The upstream sent an answer that is not JSON.",
            code="upstream_error",
            error_type="server_error",
        ) from None
    usage = provider.normalize_usage(answer.get("usage")) or TokenUsage(
        # An upstream that reports no usage is billed on local counts of both sides.
        input_tokens=call.input_tokens,
        output_tokens=tokens.count_text(_answer_text(answer), call.model),
    )
    if call.client_dialect == provider.dialect:
        content = raw
    elif provider.dialect == "anthropic":
        content = json.dumps(conversions.anthropic_response_to_openai(answer, model=call.model))
    else:
        content = json.dumps(conversions.openai_response_to_anthropic(answer, model=call.model))
    await call.settle(usage, UsageLog.Status.SUCCESS)
    return Response(200, content if isinstance(content, bytes) else content.encode())


def _answer_text(answer: dict) -> str:
    """The output text of a non-stream answer, OpenAI or Anthropic shaped."""
    pieces = []
    for choice in answer.get("choices") or []:
        message = choice.get("message") or {}
        pieces.append(message.get("content") or choice.get("text") or "")
        for tool_call in message.get("tool_calls") or []:
            function = tool_call.get("function") or {}
            pieces.append(f"{function.get('name', '')}{function.get('arguments', '')}")
    for block in answer.get("content") or []:
        pieces.append(block.get("text") or json.dumps(block.get("input") or ""))
    return "".join(p for p in pieces if isinstance(p, str))


async def _start_stream(call: Call, provider, response: httpx.Response):
    """Read up to the first event; then the answer is committed to this channel.

    Returns the streaming response, or None when the upstream ended before any event, which
    leaves the call free to try another channel.
    """
    parser = EventParser()
    chunks = response.aiter_raw()
    first = []
    try:
        while not first:
            first = parser.feed(await anext(chunks))
    except (StopAsyncIteration, httpx.HTTPError):
        await response.aclose()
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
        yield _stream_error(call, problem)
    finally:
        if status == UsageLog.Status.CLIENT_GONE and translator.completed:
            # The client left after the upstream's last event had been handed on (the SDKs
            # close on [DONE] or message_stop without reading the end of the body): it has
            # the whole answer, which the upstream's usage counts exactly.
            status = UsageLog.Status.SUCCESS
        reported = translator.usage
        if status == UsageLog.Status.SUCCESS and reported and reported.output_tokens:
            usage = reported
        else:
            usage = _usage_of_what_was_sent(call, translator.usage, sent_text)
        try:
            # Closing the upstream response cancels the upstream call if it is still running.
            await asyncio.shield(_close_quietly(response))
        finally:
            # Reached even when the client's disconnect cancels this task during the close.
            await call.settle(usage, status)


async def _close_quietly(response: httpx.Response) -> None:
    try:
        await response.aclose()
    except Exception:  # noqa: BLE001 - a broken upstream connection is already gone
        pass


def _usage_of_what_was_sent(call: Call, reported: TokenUsage | None, sent_text) -> TokenUsage:
    """Usage when the upstream's own count is missing or covers more than the client got."""
    output = tokens.count_text("".join(sent_text), call.model)
    if reported is not None and (reported.input_tokens or reported.cached_input_tokens):
        return TokenUsage(
            input_tokens=reported.input_tokens,
            cached_input_tokens=reported.cached_input_tokens,
            cache_write_tokens=reported.cache_write_tokens,
            output_tokens=output,
        )
    return TokenUsage(input_tokens=call.input_tokens, output_tokens=output)


def _stream_error(call: Call, problem: Exception) -> bytes:
    message = "The upstream stream broke off. The answer is incomplete."
    if call.client_dialect == "anthropic":
        return anthropic_sse(
            "error", {"type": "error", "error": {"type": "api_error", "message": message}}
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
