"""The realtime API: ``GET /v1/realtime?model=…`` as a WebSocket, relayed to an OpenAI channel.

A plain ASGI WebSocket handler beside relay.http, not a Django Channels consumer: a session is
one client socket joined to one upstream socket, so there is nothing for a channel layer to
carry, and the relay's own front already lives outside Django's handler. config.asgi hands
every ``websocket`` scope under /v1/realtime to ``serve``.

A session goes like this:

1. **Before the upgrade** the key is checked as for any call (``Authorization: Bearer``, or,
   from a browser, the ``openai-insecure-api-key.<key>`` subprotocol; then status, expiry, IP
   and model allow-lists), the model must be priced with audio ratios (a realtime model without
   an audio price is refused), a spent balance is refused, and the upstream is connected:
   OpenAI channels serving the model, in routing order, at the channel's base URL with ``wss``
   and ``/v1/realtime?model=<upstream model>``, ``Authorization: Bearer <channel key>``, and
   ``OpenAI-Beta: realtime=v1`` when the client asked for the beta interface. A refusal is an
   HTTP answer in OpenAI's error format (401, 403, 404, 429, 502, ...) where the server supports
   ASGI's WebSocket denial response, a 403 otherwise.
2. **Relayed both ways**, text and binary frames as they are. Buffers are bounded: each side
   is read only after the frame before it was handed on, the upstream socket queues at most
   ``UPSTREAM_QUEUE`` frames, and sends wait for the network (uvicorn's and websockets' flow
   control); a client that reads nothing for ``SEND_TIMEOUT`` seconds is disconnected.
3. **Billed per response.** A hold is placed when the client sends ``response.create`` (before
   it is forwarded) or, for a response the upstream starts by itself (server VAD), when its
   ``response.created`` arrives (before it is forwarded). The hold covers the response's
   output limit (``max_output_tokens`` of the response, else the session's
   ``max_response_output_tokens`` / ``max_output_tokens``, else the model's largest output),
   priced as audio, plus the input so far as audio and text (``InputEstimate``). The
   upstream's ``response.done`` usage settles it, once (relay.calls ``Call``), before
   ``response.done`` is forwarded. When a hold cannot be placed, the client gets an ``error``
   event saying so and the session is closed (code 1000).
4. **Closed on both sides** when either closes. A response still open then is billed for
   what the client was sent (the relay's own counts: the input estimate, text deltas by the
   tokenizer, audio deltas by their length), or released if nothing of it reached the client.
"""

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from accounts import secrets as key_secrets
from billing import services as billing
from billing import writer
from billing.operations import CallStatus, HeldQuota, InsufficientQuota, Release, Reserve
from billing.pricing import Demand, Price, TokenUsage, group_ratio_for
from relay import auth, database, errors, http, routing, tokens
from relay.admission import _price as admission_price
from relay.admission import out_of_credit
from relay.auth import KeyInfo
from relay.calls import Call, give_slot, take_slot
from relay.errors import RelayError
from relay.formats.common import UsageProblem, token_count, usage_part
from relay.operations import Operation
from relay.providers.base import join_url
from relay.responses import Request, new_request_id, request_id
from relay.routing import ChannelInfo

logger = logging.getLogger(__name__)

PATH = "/v1/realtime"
# The operation its usage rows and money steps name. Not a row of relay.operations' table:
# that table is the HTTP front's routes (relay.views makes a request/response endpoint of each
# row), and a WebSocket session is neither.
REALTIME = Operation(
    name="realtime",
    path=PATH,
    method="GET",
    client_format="openai",
    served_by=frozenset({"openai"}),
    input="input",
    output_limit_fields=("max_output_tokens",),
)
# Only OpenAI channels speak the realtime protocol (the demo channel does not).
CHANNEL_TYPES = frozenset({"openai"})

MAX_FRAME_BYTES = 16 * 1024 * 1024  # as uvicorn's own limit on the client's side
UPSTREAM_QUEUE = 16  # frames received from the upstream and not yet handed on
CONNECT_TIMEOUT = 10.0  # seconds for the upstream handshake
SEND_TIMEOUT = 30.0  # seconds a client may leave a frame unread before it is disconnected
CLOSE_TIMEOUT = 2.0  # seconds to wait for the upstream's close handshake
# Upstream handshake answers after which another channel may do better.
RETRY_STATUSES = {401, 403, 408, 409, 429} | set(range(500, 600))

# OpenAI bills realtime audio by its duration: input at one token per 100 ms, output at one
# per 50 ms. Bytes per second of each audio format, beta and GA spellings.
INPUT_AUDIO_TOKENS_PER_SECOND = 10
OUTPUT_AUDIO_TOKENS_PER_SECOND = 20
PCM16_BYTES_PER_SECOND = 48_000  # 24 kHz, 16-bit, mono: the default
AUDIO_BYTES_PER_SECOND = {
    "pcm16": PCM16_BYTES_PER_SECOND,
    "audio/pcm": PCM16_BYTES_PER_SECOND,
    "g711_ulaw": 8_000,
    "g711_alaw": 8_000,
    "audio/pcmu": 8_000,
    "audio/pcma": 8_000,
}
TEXT_DELTAS = {
    "response.text.delta",
    "response.audio_transcript.delta",
    "response.output_text.delta",
    "response.output_audio_transcript.delta",
}
AUDIO_DELTAS = {"response.audio.delta", "response.output_audio.delta"}
KEY_SUBPROTOCOL = auth.SUBPROTOCOL_KEY_PREFIX
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"


# --- The input a response will be billed for, as the relay can tell it --------------------


def _audio_format_rate(value: Any) -> int:
    """Bytes per second of an audio format given as a name (beta) or an object (GA)."""
    if isinstance(value, dict):
        kind = value.get("type")
        rate = value.get("rate")
        per_second = AUDIO_BYTES_PER_SECOND.get(kind if isinstance(kind, str) else "")
        if per_second == PCM16_BYTES_PER_SECOND and isinstance(rate, int) and rate > 0:
            return rate * 2
        return per_second or PCM16_BYTES_PER_SECOND
    return AUDIO_BYTES_PER_SECOND.get(value if isinstance(value, str) else "", 48_000)


def _base64_bytes(data: Any) -> int:
    """The length of what a base64 string decodes to (without decoding it)."""
    if not isinstance(data, str):
        return 0
    return len(data) * 3 // 4 - data[-2:].count("=")


@dataclass
class InputEstimate:
    """The input of the session's next response: what sizes its hold, and what a response cut
    before the upstream reported its usage is billed for.

    After a response, the conversation is what the upstream counted (that response's input
    and output, which become the next one's context); before the first, the session's
    instructions and tools. Added since: text items counted by the tokenizer, audio by its
    duration, images at the most one can cost.
    """

    model: str
    session_text: int = 0
    context_text: int | None = None
    context_audio: int = 0
    added_text: int = 0
    added_audio_bytes: int = 0  # in the input audio format
    input_rate: int = PCM16_BYTES_PER_SECOND
    output_rate: int = PCM16_BYTES_PER_SECOND
    session_limit: int | None = None  # the session's output limit per response; None: none

    def tokens(self) -> tuple[int, int]:
        """(text tokens, audio tokens) of the input so far."""
        text = self.session_text if self.context_text is None else self.context_text
        audio = math.ceil(self.added_audio_bytes * INPUT_AUDIO_TOKENS_PER_SECOND / self.input_rate)
        return text + self.added_text, self.context_audio + audio

    def read_session(self, session: Any) -> None:
        """The session as the upstream reports it (``session.created`` / ``.updated``)."""
        if not isinstance(session, dict):
            return
        self.session_text = self.count(session.get("instructions")) + self.count_json(
            session.get("tools")
        )
        limit = session.get("max_response_output_tokens", session.get("max_output_tokens"))
        self.session_limit = limit if type(limit) is int and limit > 0 else None
        audio = _object(session.get("audio"))
        audio_in, audio_out = _object(audio.get("input")), _object(audio.get("output"))
        self.input_rate = _audio_format_rate(
            session.get("input_audio_format") or audio_in.get("format")
        )
        self.output_rate = _audio_format_rate(
            session.get("output_audio_format") or audio_out.get("format")
        )

    def add_audio(self, data: Any) -> None:
        self.added_audio_bytes += _base64_bytes(data)

    def add_item(self, item: Any) -> None:
        """A conversation item the client adds (``conversation.item.create``)."""
        self.added_text += self.item_tokens(item)

    def item_tokens(self, item: Any) -> int:
        """Text tokens of an item (its audio is added to the audio); images at their most."""
        if not isinstance(item, dict):
            return 0
        text = self.count(item.get("output")) + self.count(item.get("arguments"))
        for part in item.get("content") or ():
            if not isinstance(part, dict):
                continue
            text += self.count(part.get("text")) + self.count(part.get("transcript"))
            if part.get("audio") is not None:
                self.add_audio(part.get("audio"))
            if "image" in str(part.get("type")):
                text += tokens.openai_image_tokens(None, "high", self.model)
        return text

    def after_response(self, usage: TokenUsage | None) -> None:
        """The conversation as the upstream counted it when a response was done."""
        if usage is None:
            return
        self.context_text = usage.input_tokens + usage.cached_input_tokens + usage.output_tokens
        self.context_audio = usage.audio_input_tokens + usage.audio_output_tokens
        self.added_text = self.added_audio_bytes = 0

    def count(self, text: Any) -> int:
        return tokens.count_text(text, self.model) if isinstance(text, str) else 0

    def count_json(self, value: Any) -> int:
        return self.count(json.dumps(value)) if value else 0


def realtime_usage(usage: Any) -> TokenUsage | None:
    """A ``response.done`` usage in the normalized form (None when absent).

    ``input_tokens`` includes the cached tokens and the audio ones; the cached ones are split
    by ``cached_tokens_details`` when given. OpenAI prices cached audio as cached text, so all
    cached tokens are billed at the cache-read ratio. Image input is billed as text input.
    ``UsageProblem`` when a figure is not a token count or the parts exceed their whole.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise UsageProblem("usage is not an object", usage)
    input_total = token_count(usage, "input_tokens", usage=usage)
    output_total = token_count(usage, "output_tokens", usage=usage)
    details = usage_part(usage, "input_token_details")
    cached = token_count(details, "cached_tokens", usage=usage)
    audio_in = token_count(details, "audio_tokens", usage=usage)
    cached_details = usage_part(details, "cached_tokens_details")
    if cached_details:
        cached_audio = token_count(cached_details, "audio_tokens", usage=usage)
    else:  # cached tokens beyond the text ones are audio
        cached_audio = max(0, cached - (input_total - audio_in))
    output_details = usage_part(usage, "output_token_details")
    audio_out = token_count(output_details, "audio_tokens", usage=usage)
    if cached > input_total or audio_in > input_total or cached_audio > min(cached, audio_in):
        raise UsageProblem("cached and audio input exceed the input", usage)
    uncached_text = input_total - audio_in - (cached - cached_audio)
    if uncached_text < 0:
        raise UsageProblem("cached text exceeds the text input", usage)
    if audio_out > output_total:
        raise UsageProblem("audio output exceeds the output", usage)
    return TokenUsage(
        input_tokens=uncached_text,
        cached_input_tokens=cached,
        audio_input_tokens=audio_in - cached_audio,
        output_tokens=output_total - audio_out,
        audio_output_tokens=audio_out,
    )


# --- Admission: everything answered before the upgrade ------------------------------------


@dataclass
class Admitted:
    """A session allowed to start: who, what model at what price, and its upstream."""

    key: KeyInfo
    client_ip: str | None
    model: str
    price: Price
    group_ratio: Any
    channel: ChannelInfo
    upstream: ClientConnection


def _request(scope) -> Request:
    headers = {}
    for name, value in scope["headers"]:
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    client = scope.get("client")
    return Request(
        method="GET",
        path=scope["path"],
        headers=headers,
        peer=client[0] if client else None,
        query=scope.get("query_string", b"").decode("latin-1"),
    )


async def _price(model: str) -> Price:
    """The model's price (admission's lookup: 404 when unpriced), which must price audio."""
    price = await admission_price(model)
    if not price.is_free and (price.audio_input_ratio is None or price.audio_output_ratio is None):
        raise RelayError(
            400,
            f"The model '{model}' has no audio price on this site, so it cannot be used "
            "through the realtime API.",
            code="model_not_supported",
            param="model",
            retry=False,
        )
    return price


async def _channels(key: KeyInfo, model: str) -> list[ChannelInfo]:
    version = await database.remembered("channels-version", routing.channels_version)
    enabled = routing.current_snapshot(version)
    if enabled is None:
        enabled = await database.run(routing.enabled_channels, version)
    channels = routing.channels_for(enabled, group=key.group, model=model, types=CHANNEL_TYPES)
    if not channels:
        raise RelayError(
            404,
            f"No channel offers the model '{model}' to your group ('{key.group}') through the "
            "realtime API.",
            code="model_not_found",
            retry=False,
        )
    return channels


def upstream_url(base_url: str, upstream_model: str) -> str:
    """The channel's realtime URL: its base URL with ``wss`` (``ws`` for plain http)."""
    url = urlsplit(join_url(base_url, PATH))
    scheme = "ws" if url.scheme == "http" else "wss"
    query = "&".join(part for part in (url.query, urlencode({"model": upstream_model})) if part)
    return urlunsplit((scheme, url.netloc, url.path, query, ""))


def wants_beta(request: Request, subprotocols: list[str]) -> bool:
    """Whether the client speaks the beta interface (its events are named differently)."""
    return "realtime" in request.headers.get("openai-beta", "") or BETA_SUBPROTOCOL in subprotocols


async def _connect(channel: ChannelInfo, model: str, *, beta: bool) -> ClientConnection:
    headers = {"Authorization": f"Bearer {channel.api_key}"}
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    return await connect(
        upstream_url(channel.base_url, channel.upstream_model(model)),
        additional_headers=headers,
        user_agent_header=None,
        proxy=None,
        compression=None,
        open_timeout=CONNECT_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        max_size=MAX_FRAME_BYTES,
        max_queue=UPSTREAM_QUEUE,
    )


async def admit(request: Request, subprotocols: list[str]) -> Admitted:
    """The session, admitted and connected upstream; or the RelayError that refuses it. The
    caller owns the key's slot (``give_slot``) and the upstream connection from here on."""
    key_text = auth.presented_key(request.headers, request.query) or auth.subprotocol_key(
        subprotocols
    )
    if not key_text:
        raise auth.no_key()
    key = await auth.key_info(key_secrets.lookup_hash(key_text))
    if key is None:
        raise auth.unknown_key()
    ip = auth.check_key(key, request)
    request.key, request.client_ip = key, ip
    model = (parse_qs(request.query).get("model") or [""])[0].strip()
    if not model:
        raise errors.invalid_request("Name the model: /v1/realtime?model=...", param="model")
    request.model = model
    if not key.allows_model(model):
        raise RelayError(
            403,
            f"This API key is not allowed to use the model '{model}'.",
            code="model_not_allowed",
            retry=False,
        )
    price = await _price(model)
    group_ratio = await database.remembered(("group", key.group), group_ratio_for, key.group)
    channels = await _channels(key, model)
    spent = await database.run(billing.spent_limit, user_id=key.user_id, api_key_id=key.id)
    if spent:
        raise out_of_credit(spent)
    take_slot(key.id)
    try:
        channel, upstream = await _connect_first(channels, model, wants_beta(request, subprotocols))
    except BaseException:
        give_slot(key.id)
        raise
    return Admitted(key, ip, model, price, group_ratio, channel, upstream)


async def _connect_first(
    channels: list[ChannelInfo], model: str, beta: bool
) -> tuple[ChannelInfo, ClientConnection]:
    """The first channel whose realtime endpoint accepts the session, in routing order."""
    for channel in channels:
        try:
            return channel, await _connect(channel, model, beta=beta)
        except InvalidStatus as refused:
            status = refused.response.status_code
            logger.warning("channel %s refused a realtime session: %s", channel.id, status)
            if status not in RETRY_STATUSES:
                raise RelayError(
                    502,
                    f"The upstream refused the realtime session (status {status}).",
                    code="upstream_error",
                    error_type="server_error",
                ) from None
        except (OSError, TimeoutError, InvalidHandshake) as problem:
            logger.warning("channel %s unreachable: %s", channel.id, type(problem).__name__)
    raise RelayError(
        503,
        "The upstream service is unavailable. Try again shortly.",
        code="upstream_unavailable",
        error_type="server_error",
    )


async def _refuse(scope, send, error: RelayError) -> None:
    """Refuse the upgrade: an HTTP answer in OpenAI's error format if the server can send one
    (ASGI's ``websocket.http.response`` extension), else a plain close (uvicorn: 403)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    response = errors.render(error, api="openai")
    headers = [(b"content-type", b"application/json")]
    headers += [(name.encode(), value.encode()) for name, value in response.headers.items()]
    await send(
        {"type": "websocket.http.response.start", "status": response.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": response.body})


def chosen_subprotocol(offered: list[str]) -> str | None:
    """The subprotocol to answer with: ``realtime`` when offered (as OpenAI answers), else the
    first that is not the key; never the key subprotocol, which would echo the key."""
    if "realtime" in offered:
        return "realtime"
    return next((name for name in offered if not name.startswith(KEY_SUBPROTOCOL)), None)


async def serve(scope, receive, send) -> None:
    """Serve one WebSocket connection to /v1/realtime (config.asgi routes it here)."""
    if (await receive())["type"] != "websocket.connect":
        return
    bound = request_id.set(new_request_id())
    try:
        request = _request(scope)
        subprotocols = list(scope.get("subprotocols") or ())
        try:
            admitted = await admit(request, subprotocols)
        except RelayError as error:
            logger.info("realtime session refused: %s %s", error.status, error.code)
            await _refuse(scope, send, error)
            return
        session = Session(admitted, send)
        await session.run(receive, chosen_subprotocol(subprotocols))
    finally:
        request_id.reset(bound)


async def refuse_http(scope, receive, send) -> None:
    """A plain HTTP request to /v1/realtime: it must be a WebSocket upgrade (426)."""
    error = RelayError(
        426,
        "/v1/realtime is a WebSocket endpoint: connect with a WebSocket client.",
        code="upgrade_required",
        retry=False,
    )
    response = errors.render(error, api="openai")
    response.headers["upgrade"] = "websocket"
    await http.write(send, response)


# --- The session ---------------------------------------------------------------------------


@dataclass(eq=False)
class OpenResponse:
    """A response with its hold: placed, not yet settled or released."""

    call: Call
    event_id: str | None = None  # the client's response.create, while it is pending
    reached_client: bool = False
    text_out: int = 0
    audio_out_bytes: int = 0


class _Stop(Exception):
    """The session must end (the reason is on the session)."""


@dataclass(eq=False)
class Session:
    """One relayed realtime session and the holds of its responses."""

    admitted: Admitted
    send: Any
    estimate: InputEstimate = field(init=False)
    pending: deque[OpenResponse] = field(default_factory=deque)  # asked for, not yet started
    open: dict[str, OpenResponse] = field(default_factory=dict)  # by upstream response id
    ended_by: str = ""  # "client", "upstream", "balance", "slow_client"
    client_closed: bool = False
    upstream_close: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        self.estimate = InputEstimate(model=self.admitted.model)
        self.upstream = self.admitted.upstream

    async def run(self, receive, subprotocol: str | None) -> None:
        try:
            await self.send({"type": "websocket.accept", "subprotocol": subprotocol})
            pumps = [
                asyncio.ensure_future(self._from_client(receive)),
                asyncio.ensure_future(self._from_upstream()),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            # Shielded: however this task ends (server shutdown included), both sides are
            # closed and every hold is settled or released.
            await asyncio.shield(self._end())

    # -- client -> upstream ----------------------------------------------------------------

    async def _from_client(self, receive) -> None:
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    self.ended_by = self.ended_by or "client"
                    self.client_closed = True
                    return
                text = message.get("text")
                if text is not None:
                    await self._client_event(text)
                    await self.upstream.send(text)
                elif message.get("bytes") is not None:
                    await self.upstream.send(message["bytes"])
        except _Stop:
            return
        except ConnectionClosed:
            self.ended_by = self.ended_by or "upstream"

    async def _client_event(self, text: str) -> None:
        event = _parsed(text)
        if event is None:
            return  # the upstream answers what it cannot read
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            self.estimate.add_audio(event.get("audio"))
        elif kind == "conversation.item.create":
            self.estimate.add_item(event.get("item"))
        elif kind == "response.create":
            asked = _object(event.get("response"))
            extra = self.estimate.count(asked.get("instructions"))
            for item in asked.get("input") or ():
                extra += self.estimate.item_tokens(item)
            response = await self._hold(self._limit(asked), extra, event.get("event_id"))
            self.pending.append(response)

    def _limit(self, asked: dict) -> int:
        """The response's output limit: its own, the session's, or the model's largest."""
        most = max(self.admitted.price.max_output_tokens, 1)
        named = asked.get("max_output_tokens", asked.get("max_response_output_tokens"))
        if not (type(named) is int and named > 0):
            named = self.estimate.session_limit
        return most if named is None else min(named, most)

    async def _hold(self, limit: int, extra_text: int, event_id: Any = None) -> OpenResponse:
        """Place the hold of one response, or tell the client why not and end the session."""
        admitted = self.admitted
        text, audio = self.estimate.tokens()
        text += extra_text
        demand = Demand(
            input_tokens=text, output_tokens=limit, audio_input_tokens=audio, audio_output=True
        )
        amount = admitted.price.most(demand, admitted.group_ratio)
        placing = writer.submit(
            Reserve(
                user_id=admitted.key.user_id,
                api_key_id=admitted.key.id,
                unlimited_key=admitted.key.unlimited_quota,
                amount=amount,
            )
        )
        try:
            outcome = await asyncio.shield(placing)
        except asyncio.CancelledError:
            placing.add_done_callback(_release_orphan)  # nobody will settle it
            raise
        if isinstance(outcome, InsufficientQuota):
            await self._out_of_credit(outcome, amount, event_id)
            raise _Stop
        if isinstance(outcome, Exception):
            logger.error("placing a realtime hold failed", exc_info=outcome)
            await self._error_event(
                "server_error", "server_error", "The server could not bill the next response."
            )
            self.ended_by = "error"
            raise _Stop
        call = Call(
            key=admitted.key,
            operation=REALTIME,
            body={},
            model=admitted.model,
            stream=True,
            client_ip=admitted.client_ip,
            price=admitted.price,
            group_ratio=admitted.group_ratio,
            input_tokens=text,
            audio_input_tokens=audio,
            output_cap=limit,
            channels=[admitted.channel],
            channel=admitted.channel,
            upstream_model=admitted.channel.upstream_model(admitted.model),
            hold=cast(HeldQuota, outcome),
        )
        return OpenResponse(call, event_id if isinstance(event_id, str) else None)

    async def _out_of_credit(self, refused: InsufficientQuota, amount: int, event_id) -> None:
        problem = out_of_credit(refused.limit, amount)
        message = problem.message.replace(", or lower max_tokens", "")
        message = message.replace("this request", "the next response")
        await self._error_event(
            "insufficient_quota",
            "insufficient_quota",
            f"{message} The session is closed.",
            event_id=event_id,
        )
        self.ended_by = "balance"

    async def _error_event(self, kind: str, code: str, message: str, *, event_id=None) -> None:
        event = {
            "type": "error",
            "event_id": "event_" + new_request_id()[4:],
            "error": {
                "type": kind,
                "code": code,
                "message": message,
                "param": None,
                "event_id": event_id if isinstance(event_id, str) else None,
            },
        }
        with contextlib.suppress(_Stop):
            await self._to_client({"type": "websocket.send", "text": json.dumps(event)})

    # -- upstream -> client ----------------------------------------------------------------

    async def _from_upstream(self) -> None:
        try:
            async for frame in self.upstream:
                if isinstance(frame, str):
                    response = await self._upstream_event(frame)
                    await self._to_client({"type": "websocket.send", "text": frame})
                else:
                    response = None
                    await self._to_client({"type": "websocket.send", "bytes": frame})
                if response is not None:
                    response.reached_client = True
        except _Stop:
            return
        except ConnectionClosed:
            pass
        self.ended_by = self.ended_by or "upstream"
        code, reason = self.upstream.close_code, self.upstream.close_reason
        self.upstream_close = (code or 1006, reason or "")

    async def _upstream_event(self, text: str) -> OpenResponse | None:
        """Bill what the event means; the open response it belongs to, if any."""
        event = _parsed(text)
        if event is None:
            return None
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            self.estimate.read_session(event.get("session"))
        elif kind == "response.created":
            response_id = _response_id(event)
            opened: OpenResponse | None
            if self.pending:
                opened = self.pending.popleft()
            else:  # started by the upstream itself (server VAD)
                opened = await self._hold(self._limit({}), 0)
            opened.event_id = None
            self.open[response_id] = opened
            return opened
        elif kind == "response.done":
            done = self.open.pop(_response_id(event), None)
            await self._settle_done(done, _object(event.get("response")).get("usage"))
        elif kind == "error":
            await self._release_refused(_object(event.get("error")).get("event_id"))
        else:
            delta_of = event.get("response_id")
            opened = self.open.get(delta_of) if isinstance(delta_of, str) else None
            if opened is not None:
                if kind in TEXT_DELTAS:
                    opened.text_out += self.estimate.count(event.get("delta"))
                elif kind in AUDIO_DELTAS:
                    opened.audio_out_bytes += _base64_bytes(event.get("delta"))
            return opened
        return None

    async def _settle_done(self, opened: OpenResponse | None, usage: Any) -> None:
        """Settle a response from its ``response.done`` usage, once."""
        try:
            reported = realtime_usage(usage)
        except UsageProblem as problem:
            if opened is not None:
                await opened.call.settle(
                    None,
                    CallStatus.SUCCESS,
                    local_output=self._local(opened).output_tokens,
                    problem=problem.raw,
                )
            return
        self.estimate.after_response(reported)
        if opened is None:
            return
        if reported is None:  # no usage at all: the relay's own counts
            reported = self._local(opened)
        await opened.call.settle(reported, CallStatus.SUCCESS)

    async def _release_refused(self, event_id: Any) -> None:
        """The upstream refused a response.create (an error naming its event): no response
        will start for it, so its hold goes back."""
        if not isinstance(event_id, str):
            return
        for waiting in list(self.pending):
            if waiting.event_id == event_id:
                self.pending.remove(waiting)
                await waiting.call.release()

    def _local(self, opened: OpenResponse) -> TokenUsage:
        """What a response cost by the relay's own counts: the input estimate and the output
        the client was sent."""
        call = opened.call
        audio = opened.audio_out_bytes * OUTPUT_AUDIO_TOKENS_PER_SECOND / self.estimate.output_rate
        return TokenUsage(
            input_tokens=call.input_tokens,
            audio_input_tokens=call.audio_input_tokens,
            output_tokens=opened.text_out,
            audio_output_tokens=math.ceil(audio),
        )

    async def _to_client(self, message: dict) -> None:
        """Hand one frame to the client; a client that does not read ends the session."""
        if self.client_closed:
            raise _Stop
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.send(message)
        except TimeoutError:
            self.ended_by = self.ended_by or "slow_client"
            raise _Stop from None
        except OSError:  # uvicorn's ClientDisconnected
            self.client_closed = True
            self.ended_by = self.ended_by or "client"
            raise _Stop from None

    # -- the end ---------------------------------------------------------------------------

    async def _end(self) -> None:
        """Close the upstream (its close handshake bounded by CLOSE_TIMEOUT), settle or release
        every hold, then close the client: within CLOSE_TIMEOUT, and not at all if it stopped
        reading (uvicorn closes the connection when this handler returns)."""
        try:
            with contextlib.suppress(Exception):  # closed already, or it broke: either way
                await self.upstream.close()
            await self._close_holds()
        finally:
            give_slot(self.admitted.key.id)
        if self.client_closed or self.ended_by == "slow_client":
            return
        code, reason = self._client_close()
        with contextlib.suppress(Exception):  # gone meanwhile, or not reading: uvicorn closes it
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.send({"type": "websocket.close", "code": code, "reason": reason})

    def _client_close(self) -> tuple[int, str]:
        if self.ended_by == "balance":
            return 1000, "insufficient_quota"
        if self.ended_by == "upstream" and self.upstream_close is not None:
            code, reason = self.upstream_close
            sendable = code in (1000, 1001, 1003, 1007, 1008, 1009, 1010, 1011) or (
                3000 <= code < 5000
            )
            return (code, reason[:120]) if sendable else (1011, "upstream connection lost")
        if self.ended_by == "error":
            return 1011, "server error"
        return 1000, ""

    async def _close_holds(self) -> None:
        """Every hold left: settled for what reached the client, or released."""
        status = (
            CallStatus.CLIENT_GONE
            if self.ended_by in ("client", "slow_client")
            else CallStatus.UPSTREAM_ERROR
        )
        for opened in list(self.open.values()):
            if opened.reached_client:
                await opened.call.settle(self._local(opened), status)
            else:
                await opened.call.release()
        for waiting in self.pending:
            await waiting.call.release()
        self.open.clear()
        self.pending.clear()


def _parsed(text: str) -> dict | None:
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _object(value: Any) -> dict:
    """``value`` if it is a JSON object, else an empty one (events are read leniently)."""
    return value if isinstance(value, dict) else {}


def _response_id(event: dict) -> str:
    response = event.get("response")
    found = response.get("id") if isinstance(response, dict) else None
    return found if isinstance(found, str) else ""


def _release_orphan(placing: asyncio.Future) -> None:
    outcome = placing.result()
    if isinstance(outcome, HeldQuota):
        writer.submit(Release(outcome))


__all__ = ["PATH", "REALTIME", "InputEstimate", "realtime_usage", "refuse_http", "serve"]
