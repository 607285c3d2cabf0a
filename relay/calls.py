"""A call's money steps: its hold, settled exactly once or released, and the registry of calls
in flight. Used by every endpoint that spends quota (/v1 today, /mj next): admission
(relay.admission) makes a ``Call`` with its hold; whatever serves it ends it through
``Call.settle`` or ``Call.release``.

Settlement never depends on ``CancelledError`` reaching the serving code: every way a call
ends (answer sent, upstream failure, client gone while waiting, client gone mid-stream, a
stalled reader that vanishes) goes through ``settle`` or ``release``, both idempotent and
shielded from cancellation, and the hold's expiry is the backstop if the worker itself dies.
If a settlement cannot be written, the hold is marked delivered (``billing.Deliver``) so the
expiry sweep charges it instead of releasing it.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from django.conf import settings

from billing import writer
from billing.operations import (
    CallRecord,
    CallStatus,
    Deliver,
    HeldQuota,
    Release,
    Settle,
    UsageFlag,
)
from billing.pricing import Price, TokenUsage
from relay import metering
from relay.auth import KeyInfo
from relay.operations import Format, Operation
from relay.responses import StreamingResponse
from relay.routing import ChannelInfo

logger = logging.getLogger(__name__)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_CONTENT_TYPE = "text/event-stream"


# Calls holding quota that have not been settled or released yet, in this process.
_in_flight: set["Call"] = set()
# Calls admitted or being admitted, in all and per key: the caps count a call from its first
# check, so calls arriving together cannot all pass it before any of them is counted.
_slots = {"all": 0}
_slots_by_key: dict[int, int] = {}


def take_slot(key_id: int) -> None:
    """Count a call being admitted for ``key_id``, or refuse it (503 for the process, 429 for
    the key) when a cap is reached; ``give_slot`` gives it back."""
    per_key = settings.RELAY_MAX_CALLS_PER_KEY
    if _slots["all"] >= settings.RELAY_MAX_CALLS_IN_FLIGHT:
        raise metering.too_many_in_flight("process")
    if per_key and _slots_by_key.get(key_id, 0) >= per_key:
        raise metering.too_many_in_flight("key")
    _slots["all"] += 1
    _slots_by_key[key_id] = _slots_by_key.get(key_id, 0) + 1


def give_slot(key_id: int) -> None:
    """Give back the slot of a call that was refused, or has ended."""
    _slots["all"] -= 1
    left = _slots_by_key.pop(key_id, 1) - 1
    if left > 0:
        _slots_by_key[key_id] = left


def calls_in_flight() -> int:
    """How many admitted calls this process has not closed yet."""
    return len(_in_flight)


def track(call: "Call") -> None:
    """Count an admitted call (holding its slot) until it is settled or released."""
    _in_flight.add(call)


@dataclass(eq=False)
class Call:
    """One admitted client request: who, what, its price and its hold, until it is closed."""

    key: KeyInfo
    operation: Operation
    body: dict
    model: str
    stream: bool
    client_ip: str | None
    price: Price
    group_ratio: Decimal  # the user's group ratio times the service tier's
    input_tokens: int  # counted locally: sizes the hold, bills a stream the upstream never did
    audio_input_tokens: int = 0
    raw_body: bytes = b""
    # Images and audio (relay.media): the spooled upload, if any, and what the hold was sized
    # from (relay.media.Held), which its settlement reads.
    upload: Any = None
    media: Any = None
    options: metering.PaidOptions = field(default_factory=metering.PaidOptions)
    # The output limit per choice sent upstream (None: the client's body is left as it is),
    # and the most output the call may produce in all, which its hold covers.
    output_limit: int | None = None
    output_cap: int | None = None  # None: the model's largest output
    limit_spelling: str | None = None
    started: float = field(default_factory=time.monotonic)
    client_headers: dict = field(default_factory=dict)  # the few forwarded upstream
    channels: list[ChannelInfo] = field(default_factory=list)
    hold: HeldQuota | None = None
    channel: ChannelInfo | None = None
    upstream_model: str = ""
    _closing: asyncio.Future | None = None
    _settled: int | None = None  # the charge of a settlement under way (the answer was sent)

    @property
    def held(self) -> HeldQuota:
        """The call's hold, which admission places before it hands the call on."""
        if self.hold is None:
            raise RuntimeError("a call is settled or released only once its hold is placed")
        return self.hold

    @property
    def client_format(self) -> Format:
        return self.operation.client_format

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

        output_cap = self.price.max_output_tokens if self.output_cap is None else self.output_cap
        try:
            usage, flag, raw = metering.billable_usage(
                reported,
                local=local,
                local_input=self.input_tokens + self.audio_input_tokens,
                output_cap=output_cap,
                web_search_cap=self.options.web_searches,
                problem=problem,
            )
        except Exception:  # a bug must not leave the answer unbilled: bill the local counts
            logger.exception("checking the upstream usage of hold %s failed", self.held.id)
            usage = metering.within_output_cap(local(), output_cap)
            flag, raw = UsageFlag.REJECTED, None
        if self.options.searches_per_call and usage.web_search_calls == 0:
            usage = replace(usage, web_search_calls=1)  # OpenAI reports no count: one per call
        if flag != UsageFlag.TRUSTED:
            logger.warning(
                "call on channel %s: upstream usage %s (%s)",
                self.channel and self.channel.id,
                flag,
                raw,
            )
        await self._close_once(self._settlement, usage, status, flag, raw)

    async def settle_at(
        self,
        cost: int,
        status: str,
        *,
        usage: TokenUsage | None = None,
        flag: UsageFlag = UsageFlag.TRUSTED,
        raw: dict | None = None,
    ) -> None:
        """Charge exactly ``cost`` quota, once: a call billed by a per-call price (images,
        speech, audio minutes; relay.media works the cost out)."""
        await self._close_once(self._settlement, usage or TokenUsage(), status, flag, raw, cost)

    async def release(self) -> None:
        """Give the hold back: nothing of the call reached the client."""
        await self._close_once(self._release)

    async def fail(self, error: str) -> None:
        """Give the hold back and journal the failure (status failed, ``error``, no charge):
        the call was refused or failed before anything reached the client."""
        await self._close_once(self._release, error)

    async def _close_once(self, make_operation, *args) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(writer.run(make_operation(*args)))
            self._closing.add_done_callback(self._closed)
        # Shielded: if this task is cancelled meanwhile, the settlement still runs to the end
        # (a cancellation is not an Exception: it goes on up). A failure is handled by _closed.
        with contextlib.suppress(Exception):
            await asyncio.shield(self._closing)

    def _closed(self, closing: asyncio.Future) -> None:
        if self in _in_flight:
            _in_flight.discard(self)
            give_slot(self.key.id)
        if closing.cancelled() or closing.exception() is None:
            return
        logger.error(
            "closing hold %s failed", self.hold and self.hold.id, exc_info=closing.exception()
        )
        if self._settled is not None:
            # The answer was delivered: the hold must be charged, not released by its expiry.
            writer.submit(Deliver(self.held, self._settled)).add_done_callback(
                self._delivery_recorded
            )

    def _delivery_recorded(self, recording: asyncio.Future) -> None:
        outcome = None if recording.cancelled() else recording.result()
        if outcome is not True:
            logger.error(
                "hold %s: a delivered answer could not be recorded (%r); its expiry will "
                "release it",
                self.held.id,
                outcome,
            )

    def _settlement(
        self,
        usage: TokenUsage,
        status: CallStatus,
        flag: UsageFlag,
        raw: dict | None,
        cost: int | None = None,
    ) -> Settle:
        self._settled = self.price.charge(usage, self.group_ratio) if cost is None else cost
        return Settle(
            hold=self.held,
            price=self.price,
            group_ratio=self.group_ratio,
            usage=usage,
            call=self._record(status, flag, raw),
            cost=cost,
        )

    def _record(
        self, status: CallStatus, flag: UsageFlag, raw: dict | None, error: str = ""
    ) -> CallRecord:
        """The call's journal row: what it was, where it went, how it ended."""
        return CallRecord(
            endpoint=self.operation.name,
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
            error=error,
        )

    def _release(self, error: str | None = None) -> Release:
        if error is None:
            return Release(self.held)
        return Release(self.held, self._record(CallStatus.FAILED, UsageFlag.TRUSTED, None, error))


def stream_response(
    call: Call,
    body: AsyncGenerator[bytes, None],
    *,
    on_unsent: Callable[[], Awaitable[None]],
    content_type: str = STREAM_CONTENT_TYPE,
) -> StreamingResponse:
    """The client's stream of a call, cleaned up even if its body never starts: the body's
    own ``finally`` settles what was sent; if the client leaves before the first byte that
    never runs, so ``on_unsent`` (e.g. closing the upstream response) runs and the hold goes
    back."""

    async def unsent() -> None:
        try:
            await on_unsent()
        finally:
            await call.release()

    return StreamingResponse(body, unsent=unsent, headers=STREAM_HEADERS, content_type=content_type)
