"""Forwarding an admitted call: the upstream request, the answer relayed as it arrives.

``relay`` serves one /v1 call: admission (relay.admission) places its hold; then each channel
in turn gets the request, built by the provider adapter with exactly the output limit the hold
covers, until one answers; another is tried on failure as long as the client has seen nothing.
A plain answer is settled (relay.calls) once it was written, or released if its client left
first; a stream is settled by its own ``finally`` with what was sent, whatever ends it, after
its last byte went out. The upstream response is closed on every
path, which cancels the upstream's work and frees its connection.
"""

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from billing.operations import CallStatus
from billing.pricing import TokenUsage
from relay import errors, formats, media, metering, stored_responses, tokens, upstream
from relay.admission import admit
from relay.calls import STREAM_CONTENT_TYPE, Call, stream_response
from relay.errors import RelayError
from relay.formats.common import (
    ConversionError,
    Event,
    EventParser,
    MalformedUpstream,
    Translator,
    UpstreamStreamError,
    UsageProblem,
)
from relay.operations import OPERATIONS
from relay.providers import provider_for
from relay.responses import END, Request, Response, StreamingResponse
from relay.routing import ChannelInfo

logger = logging.getLogger(__name__)

# Upstream answers after which another channel may do better.
RETRY_STATUSES = {401, 403, 408, 409, 429} | set(range(500, 600))
URL_PATTERN = re.compile(r"(?:https?|wss?)://\S+", re.IGNORECASE)


async def relay(request: Request, *, operation: str) -> Response | StreamingResponse:
    """Serve one /v1 call of the given operation, errors in the caller's format."""
    op = OPERATIONS[operation]
    try:
        call = await admit(request, op)
    except RelayError as error:
        return errors.render(error, api=op.client_format)
    try:
        return await _forward(call)
    except RelayError as error:
        # Nothing reached the client: the hold goes back, and the failure is journaled.
        await call.fail(error.code or "error")
        return errors.render(error, api=op.client_format)
    except BaseException:
        await call.release()
        raise


async def _forward(call: Call) -> Response | StreamingResponse:
    """Try the channels in order until one answers; nothing has reached the client before."""
    last_error: RelayError | None = None
    for channel in call.channels:
        call.channel = channel
        call.upstream_model = channel.upstream_model(call.model)
        provider = provider_for(channel.type)
        url = provider.url_for(
            channel.base_url, _upstream_operation(call, provider), model=call.upstream_model
        )
        headers = provider.headers(channel.api_key, call.client_headers)
        if call.operation.media:  # images and audio: JSON or a streamed upload (relay.media)
            outgoing = media.upstream_request(call, provider, url, headers)
        else:
            try:
                request_body = _upstream_body(call, provider)
            except ConversionError as problem:
                raise errors.invalid_request(str(problem)) from None
            outgoing = upstream.request(url, headers, json.dumps(request_body).encode())
        client = provider.client()
        try:
            response = await client.send(outgoing, stream=True)
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
            if call.operation.media:
                answered = await media.answer(call, response)
                # Speech streams: its body's own ending closes the response then.
                handed_on = isinstance(answered, StreamingResponse)
                return answered
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
    return provider.upstream_operation(call.operation.name, stream=call.stream)


def _upstream_body(call: Call, provider) -> dict:
    body = call.body
    upstream_format = provider.format_for(call.operation)
    same_format = call.client_format == upstream_format
    body = formats.convert_request(
        body,
        client=call.client_format,
        upstream=upstream_format,
        default_max_tokens=settings.RELAY_ANTHROPIC_DEFAULT_MAX_TOKENS,
    )
    operation = _upstream_operation(call, provider)
    body = metering.set_output_limit(
        body,
        operation=operation,
        upstream_format=upstream_format,
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
    content: bytes | str
    try:
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ValueError("not an object")
        upstream_format = provider.format_for(call.operation)
        if call.client_format == upstream_format:
            content = raw
        else:
            converted = formats.convert_answer(
                answer, upstream=upstream_format, client=call.client_format, model=call.model
            )
            content = json.dumps(converted)
    except (ValueError, RecursionError, MalformedUpstream):
        raise RelayError(
            502,
            "The upstream sent an answer that could not be read.",
            code="upstream_error",
            error_type="server_error",
        ) from None
    problem = None
    try:
        reported = provider.normalize_usage(answer.get(provider.usage_field))
    except UsageProblem as bad:
        reported, problem = None, bad.raw
    # Remembered before the answer goes out: the client may ask for it back at once.
    await stored_responses.answered(call, answer.get("id"), reported)

    async def settle(written: bool) -> None:
        if not written:  # the client left before it could have the answer: no charge
            await call.fail("client_gone")
            return
        # An upstream that reports no usage (or none to believe) is billed on local counts.
        await call.settle(
            reported,
            CallStatus.SUCCESS,
            local_output=lambda: tokens.count_text(_answer_text(answer), call.model),
            problem=problem,
        )

    body = content if isinstance(content, bytes) else content.encode()
    return Response(200, body, after=settle)


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
    for item in _dicts(answer.get("output")):  # a Responses answer's output items
        for part in _dicts(item.get("content")):
            pieces.append(part.get("text") or "")
        pieces.append(f"{item.get('name') or ''}{item.get('arguments') or ''}")
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
    first: list[Event] = []
    try:
        while not first:
            first = parser.feed(await anext(chunks))
    except (StopAsyncIteration, httpx.HTTPError):
        return None
    translator = formats.translator(
        client=call.client_format,
        upstream=provider.format_for(call.operation),
        model=call.model,
        client_wants_usage=call.client_wants_usage,
        client_body=call.body,
    )
    return stream_response(
        call,
        stream_answer(call, response, chunks, parser, first, translator),
        on_unsent=lambda: _close_quietly(response),
        # A Gemini client streaming without alt=sse reads one JSON array, not SSE.
        content_type=getattr(translator, "content_type", STREAM_CONTENT_TYPE),
    )


async def stream_answer(
    call: Call,
    response: httpx.Response,
    chunks,
    parser: EventParser,
    first: list,
    translator: Translator,
):
    """The client's stream of an upstream stream (``first``: the events already read, then
    the rest of ``chunks``). Whatever ends it, its ``finally`` closes the upstream response
    and settles what was sent."""
    sent_text: list[str] = []
    status = CallStatus.CLIENT_GONE
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
        status = CallStatus.SUCCESS if translator.completed else (CallStatus.UPSTREAM_ERROR)
        yield END  # the client has it all: the response ends before the settlement below
    except (httpx.HTTPError, UpstreamStreamError) as broken:
        status = CallStatus.UPSTREAM_ERROR
        logger.warning(
            "stream from channel %s broke: %s",
            call.channel and call.channel.id,
            type(broken).__name__,
        )
        yield _stream_error(call, getattr(broken, "error_type", "api_error"), translator)
        yield END
    except Exception:  # a malformed event no translator foresaw: end the stream cleanly
        status = CallStatus.UPSTREAM_ERROR
        logger.exception(
            "stream from channel %s could not be translated", call.channel and call.channel.id
        )
        yield _stream_error(call, translator=translator)
        yield END
    finally:
        if status == CallStatus.CLIENT_GONE and translator.completed:
            # The client left after the upstream's last event had been handed on (the SDKs
            # close on [DONE] or message_stop without reading the end of the body): it has
            # the whole answer, which the upstream's usage counts exactly.
            status = CallStatus.SUCCESS
        reported = translator.usage
        problem = getattr(translator, "usage_problem", None)
        output = tokens.count_text("".join(sent_text), call.model)
        if not (status == CallStatus.SUCCESS and reported and reported.output_tokens):
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
            await stored_responses.answered(call, translator.answer_id, reported)


def _input_reported(usage: TokenUsage) -> bool:
    return bool(usage.input_tokens or usage.cached_input_tokens or usage.cache_write_tokens)


async def _close_quietly(response: httpx.Response) -> None:
    with contextlib.suppress(Exception):  # a broken upstream connection is already gone
        await response.aclose()


def _stream_error(
    call: Call, error_type: str = "api_error", translator: Translator | None = None
) -> bytes:
    """The event that ends a broken stream, in the client's format (from the translator when
    it numbers its events, as the Responses API does)."""
    error_event = getattr(translator, "error_event", None)
    if error_event is not None:
        return error_event(error_type)
    return formats.stream_error(call.client_format, error_type)
