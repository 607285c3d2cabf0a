"""What a call asks of the ledger, and what it gets back: typed values, decided by the batch.

A call places a hold (``Reserve``) before it goes upstream and closes it once after: ``Settle``
(its exact charge and journal row), ``Release`` (nothing reached the client) or, when the
settlement could not be written, ``Deliver`` (the expiry sweep charges it later). The relay
queues these through ``billing.writer``; ``billing.batch.apply_batch`` decides them.

Every operation and every outcome is a frozen value: a placed hold is a ``HeldQuota``, a refusal
an ``InsufficientQuota`` naming its limit, a settlement the quota charged (None if the hold was
settled before), a release or delivery whether this one did it. Nothing here reads or writes the
database, and the relay needs no model of billing's to speak to it.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, TypeAlias

from billing.models import Hold, UsageLog
from billing.pricing import Price, TokenUsage

Limit: TypeAlias = Literal["balance", "key"]
"""Which limit a refusal names: the user's balance, or the key's own allowance."""

# The values a journal row stores; the relay names them through these, not through the model.
CallStatus = UsageLog.Status  # how the call ended: success, client_gone, upstream_error
UsageFlag = UsageLog.UsageFlag  # whose figures were billed: trusted (""), rejected, clamped, ...


@dataclass(frozen=True, slots=True)
class HeldQuota:
    """An open hold: quota set aside for one call until it is settled or released, once.

    Amounts are quota units. ``key_amount`` is what the key's own allowance gave (0 for an
    unlimited key); ``api_key_id`` is None once the key was deleted.
    """

    id: int
    user_id: int
    api_key_id: int | None
    amount: int
    key_amount: int
    expires_at: datetime

    @classmethod
    def from_row(cls, row: Hold) -> "HeldQuota":
        """A hold's row (read by the expiry sweep, say) as the value operations take."""
        return cls(
            id=row.id,
            user_id=row.user_id,
            api_key_id=row.api_key_id,
            amount=row.amount,
            key_amount=row.key_amount,
            expires_at=row.expires_at,
        )


class InsufficientQuota(Exception):
    """A hold could not be placed. ``limit`` says which: "balance" or "key"; ``spent``,
    whether that limit is at or below zero (not merely short of this call's hold).

    A value of the batch like any other outcome (it changes nothing and the batch goes on);
    an exception only so that ``reserve_quota`` and ``writer.run`` can raise it.
    """

    def __init__(self, limit: Limit, *, spent: bool = False) -> None:
        super().__init__(limit)
        self.limit: Limit = limit
        self.spent = spent


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserve:
    """Set ``amount`` aside for a call, from the balance and the key's allowance, or refuse.

    The balance must cover it and be above zero (checked even for a free call, which holds
    nothing); so must a limited key's allowance. With ``minimum`` set, less is taken when
    less is there: as much as the balance and the allowance both cover, if that is at least
    ``minimum`` (the call then asks the upstream for less output). Outcome: ``HeldQuota``
    (its ``amount`` says what was taken), or ``InsufficientQuota`` naming the limit.

    ``spare``: what the balance (and a limited key's allowance) must still hold after this
    hold, or it is refused: a hold placed ahead of a call that may never come
    (relay.ready_holds) must not leave the user's other calls short.
    """

    user_id: int
    api_key_id: int
    unlimited_key: bool
    amount: int
    minimum: int | None = None
    spare: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """What the relay knows about a finished call, for its journal row."""

    endpoint: str
    model: str
    upstream_model: str = ""
    channel_id: int | None = None
    is_stream: bool = False
    status: CallStatus = CallStatus.SUCCESS
    latency_ms: int = 0
    client_ip: str | None = None
    service_tier: str = ""
    usage_flag: UsageFlag = UsageFlag.TRUSTED
    reported_usage: dict | None = None  # the upstream's raw figures when they were not billed
    error: str = ""  # a failed call's error code


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle:
    """Turn a hold into its exact charge, once, with its journal row. Outcome: the quota
    charged, or None if the hold was settled before.

    A hold the expiry sweep already released (the call outlived HOLD_TTL_SECONDS) is still
    charged in full, since the call did happen; a hold settled before is never charged again.

    ``replayed``: made again from billing.journal, because the first attempt failed or may have
    been lost with a PostgreSQL crash. Its hold is checked to be the same hold (same user, amount
    and expiry); if that hold is gone or is another one, the call is charged without it (its
    hold's placement was lost too, so nothing was taken for it).
    """

    hold: HeldQuota
    price: Price
    group_ratio: Decimal
    usage: TokenUsage
    call: CallRecord
    cost: int | None = None  # charged instead of the price's figure (a delivered hold's)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Release:
    """Give an open hold back in full, once (the call failed before anything was used).
    With ``call``, the failure is journaled too: a usage row with its status and error and no
    charge, so operators see calls that failed. Outcome: whether this released it."""

    hold: HeldQuota
    call: CallRecord | None = None


@dataclass(frozen=True, slots=True)
class Deliver:
    """Mark an open hold as delivered-but-unsettled, with what it should cost (``quota``),
    when its settlement could not be written; the expiry sweep then charges it instead of
    releasing it. Outcome: whether this marked it."""

    hold: HeldQuota
    quota: int


Operation: TypeAlias = Reserve | Settle | Release | Deliver
Outcome: TypeAlias = HeldQuota | InsufficientQuota | int | bool | None
