"""Redemption codes: how users top up.

A code is ``SLC-`` and 26 characters of base32 (130 random bits), so it can be typed as well as
pasted: case, spaces and dashes do not matter, and the digits people confuse with letters (0,
1, 8) are read as the letters (O, I, B), which are the only ones the alphabet has. The database
keeps only an HMAC of the code (under ``KEY_LOOKUP_SECRET``, apart from API keys by a prefix of
its own), so a leaked table does not reveal an unused code, and a hint for support
(``SLC-ABCD…WXYZ``, 40 of the 130 bits). Codes are shown once, when made.

A code credits its user exactly once: ``redeem_code`` moves the code from unused to used with
one conditional UPDATE, and only the caller whose UPDATE changed the row writes the ledger row,
in the same transaction. Wrong guesses are counted per user and per client IP in Django's
default cache (Redis in production, this process's memory in embedded mode); past the limit a
caller is refused until the window ends, and when the cache cannot be reached every attempt
is refused (closed, rather than open to guessing).
"""

import contextlib
import csv
import hashlib
import hmac
import io
import secrets
from datetime import datetime
from typing import Literal

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone

from billing import services
from billing.balances import User
from billing.models import LedgerEntry, RedemptionBatch, RedemptionCode, VipTier
from billing.tiers import grant_tier

CODE_PREFIX = "SLC-"
CODE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 base32
CODE_LENGTH = 26  # 130 bits
# What people type for a letter the alphabet has, read as that letter.
LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})
MOST_CODES_PER_BATCH = 10_000

Reason = Literal["unknown", "used", "expired", "disabled", "too_many_attempts"]


class RedemptionRefused(Exception):
    """A code that did not credit anything, and why (``reason``), with a message for people."""

    MESSAGES: dict[str, str] = {
        "unknown": "This code does not exist. Check it and try again.",
        "used": "This code has already been redeemed.",
        "expired": "This code has expired.",
        "disabled": "This code has been disabled.",
        "too_many_attempts": "Too many wrong codes. Wait an hour before trying again.",
    }

    def __init__(self, reason: Reason, message: str | None = None):
        self.reason = reason
        self.message = message or self.MESSAGES[reason]
        super().__init__(self.message)


def generate_code() -> str:
    """A new code: the prefix and 26 random base32 characters."""
    return CODE_PREFIX + "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def canonical(code: str) -> str:
    """The code's 26 characters, however it was typed (case, spaces, dashes, lookalikes)."""
    body = "".join(code.split()).upper().replace("-", "").replace("_", "")
    if body.startswith(CODE_PREFIX.rstrip("-")):
        body = body[len(CODE_PREFIX) - 1 :]
    return body.translate(LOOKALIKES)


def code_hash(code: str) -> str:
    """The keyed hash a code is stored and found by."""
    message = b"redemption-code:" + canonical(code).encode()
    return hmac.new(settings.KEY_LOOKUP_SECRET.encode(), message, hashlib.sha256).hexdigest()


def code_hint(code: str) -> str:
    """What lists show of a code: enough for support to find it, too little to redeem it."""
    body = canonical(code)
    return f"{CODE_PREFIX}{body[:4]}…{body[-4:]}"


def make_batch(
    *,
    name: str,
    quota: int,
    count: int,
    expires_at: datetime | None = None,
    tier: VipTier | None = None,
    by: User | None = None,
) -> tuple[RedemptionBatch, list[str]]:
    """A batch of ``count`` new codes worth ``quota`` each; returns it and the codes in clear,
    which exist nowhere else: show or export them now."""
    with transaction.atomic():
        batch = RedemptionBatch(
            name=name, quota=quota, count=count, expires_at=expires_at, tier=tier, created_by=by
        )
        check_batch(batch)
        batch.save()
        return batch, issue_codes(batch=batch)


def check_batch(batch: RedemptionBatch) -> None:
    """Raise ValueError when a batch would make codes worth nothing or too many at once."""
    if not 1 <= batch.count <= MOST_CODES_PER_BATCH:
        raise ValueError(f"a batch holds 1 to {MOST_CODES_PER_BATCH} codes")
    if batch.quota < 0:
        raise ValueError("a code cannot take quota")
    if batch.quota == 0 and batch.tier_id is None:
        raise ValueError("a code must be worth some quota or a tier")


def issue_codes(*, batch: RedemptionBatch) -> list[str]:
    """Make the codes of a batch saved without any (``batch.count`` of them); returns them in
    clear, once."""
    codes = [generate_code() for _ in range(batch.count)]
    RedemptionCode.objects.bulk_create(
        RedemptionCode(batch=batch, lookup_hash=code_hash(code), hint=code_hint(code))
        for code in codes
    )
    return codes


def codes_csv(batch: RedemptionBatch, codes: list[str]) -> str:
    """The codes of a new batch as CSV: code, quota, tier, expiry, batch."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["code", "quota", "usd", "tier", "expires_at", "batch"])
    expires = batch.expires_at.isoformat() if batch.expires_at else ""
    tier = batch.tier.name if batch.tier else ""
    usd = f"{batch.quota / 500_000:.2f}"  # display only
    for code in codes:
        writer.writerow([code, batch.quota, usd, tier, expires, batch.name])
    return out.getvalue()


def disable_codes(*, codes: "list[int] | None" = None, batch: RedemptionBatch | None = None) -> int:
    """Disable unused codes (by id, or every one of a batch, which stays disabled for codes
    of it); returns how many codes changed. Used codes stay as they were."""
    now = timezone.now()
    with transaction.atomic():
        unused = RedemptionCode.objects.filter(used_at=None, disabled_at=None)
        if batch is not None:
            RedemptionBatch.objects.filter(id=batch.id).update(disabled=True)
            return unused.filter(batch=batch).update(disabled_at=now)
        return unused.filter(id__in=codes or []).update(disabled_at=now)


def code_status(code: RedemptionCode, now: datetime | None = None) -> str:
    """unused, used, disabled or expired: what admin lists show."""
    now = now or timezone.now()
    if code.used_at:
        return "used"
    if code.disabled_at or code.batch.disabled:
        return "disabled"
    if code.batch.expires_at and code.batch.expires_at <= now:
        return "expired"
    return "unused"


def redeem_code(*, user: User, code: str, ip: str | None) -> int:
    """Credit the code's quota (and tier) to ``user`` exactly once; returns the quota credited.

    Raises ``RedemptionRefused`` (``.reason``: unknown, used, expired, disabled,
    too_many_attempts). Of any number of concurrent attempts at one code, one wins: the
    conditional UPDATE from unused to used decides, and its ledger row (kind ``redemption``,
    naming the code's id) commits with it.
    """
    _refuse_if_guessing(user_id=user.id, ip=ip)
    now = timezone.now()
    row = (
        RedemptionCode.objects.select_related("batch", "batch__tier")
        .filter(lookup_hash=code_hash(code))
        .first()
    )
    if row is None:
        _count_wrong_guess(user_id=user.id, ip=ip)
        raise RedemptionRefused("unknown")
    batch = row.batch
    if row.used_at is not None:
        raise RedemptionRefused("used")
    if row.disabled_at is not None or batch.disabled:
        raise RedemptionRefused("disabled")
    if batch.expires_at is not None and batch.expires_at <= now:
        raise RedemptionRefused("expired")
    amount = batch.quota + (batch.tier.included_quota if batch.tier else 0)
    with transaction.atomic():
        # Conditions on the code's own columns only: a condition that joins the batch makes
        # Django write "WHERE id IN (SELECT ...)", and PostgreSQL re-checks only the outer
        # condition after waiting for a concurrent winner's lock, so several would win (the
        # 50-way test saw four). Disabling a batch disables its unused codes one by one, so
        # ``disabled_at`` carries it.
        won = RedemptionCode.objects.filter(id=row.id, used_at=None, disabled_at=None).update(
            used_at=now, used_by_id=user.id
        )
        if not won:
            # Another attempt took it meanwhile, or the code was disabled in between.
            fresh = RedemptionCode.objects.select_related("batch").get(id=row.id)
            raise RedemptionRefused("used" if fresh.used_at else "disabled")
        note = f"code {row.id} ({row.hint})" + (f", tier {batch.tier.name}" if batch.tier else "")
        entry = services.grant(
            user=user, amount=amount, kind=LedgerEntry.Kind.REDEMPTION, note=note
        )
        RedemptionCode.objects.filter(id=row.id).update(entry=entry)
        if batch.tier is not None:
            grant_tier(user=user, tier=batch.tier)
    return amount


# --- Wrong guesses ----------------------------------------------------------------------------


def _limits() -> tuple[int, int, int]:
    """(wrong guesses per user, per IP, window in seconds)."""
    return (
        getattr(settings, "REDEEM_FAILURES_PER_USER", 10),
        getattr(settings, "REDEEM_FAILURES_PER_IP", 30),
        getattr(settings, "REDEEM_FAILURE_WINDOW_SECONDS", 3600),
    )


def _guess_keys(user_id: int, ip: str | None) -> list[tuple[str, int]]:
    per_user, per_ip, _ = _limits()
    keys = [(f"redeem-fail:user:{user_id}", per_user)]
    if ip:
        keys.append((f"redeem-fail:ip:{ip}", per_ip))
    return keys


UNAVAILABLE = "Redeeming codes is unavailable for a moment. Try again later."


def _refuse_if_guessing(*, user_id: int, ip: str | None) -> None:
    keys = _guess_keys(user_id, ip)
    try:
        counts = caches["guards"].get_many([key for key, _ in keys])
    except Exception:  # noqa: BLE001 - any cache failure closes redemption, never opens it
        raise RedemptionRefused("too_many_attempts", UNAVAILABLE) from None
    if any(counts.get(key, 0) >= limit for key, limit in keys):
        raise RedemptionRefused("too_many_attempts")


def _count_wrong_guess(*, user_id: int, ip: str | None) -> None:
    window = _limits()[2]
    # A cache that fails here refuses the next attempt's check while it is down.
    with contextlib.suppress(Exception):
        for key, _ in _guess_keys(user_id, ip):
            caches["guards"].add(key, 0, window)  # the window starts at the first wrong guess
            caches["guards"].incr(key)
