"""The money: ledger, holds, the consumption journal, prices.

Every amount is an integer in quota units: 500,000 quota = 1 USD. The books balance when, for
every user and every key,

    balance + open holds == sum(ledger) - sum(consumption journal)

``UsageLog`` rows are the journal of consumption: each settled call is one row carrying its
charge, so a call costs one write, not two. When the retention period closes a day, its rows
are summarized into one ``LedgerEntry`` (kind ``consume``) per user and key in the same
transaction that deletes them, so the equation holds across the purge. ``billing.services``
is the only code that changes a balance.
"""

from decimal import Decimal

from django.conf import settings
from django.db import models


class LedgerEntry(models.Model):
    """One settled change of a balance. Append-only: a correction is a new row."""

    class Kind(models.TextChoices):
        CONSUME = "consume", "consumption (daily summary)"
        REFUND = "refund"
        TOPUP = "topup"
        REDEMPTION = "redemption"
        TRIAL = "trial", "trial credit"
        TRIAL_EXPIRY = "trial_expiry", "trial credit expired"
        INVITE_REWARD = "invite_reward", "invite reward"
        VIP_PURCHASE = "vip_purchase", "VIP tier purchase"
        ADJUSTMENT = "adjustment"
        KEY_LIMIT = "key_limit", "key limit change"
        # A reseller's money moving into a carved sub-key (carving it, topping it up) and
        # back (revoking it, or its expiry): each movement is two rows, one per side, the
        # reseller's in ``amount`` and the key's in ``key_amount`` (billing.subkeys).
        TO_SUBKEY = "to_subkey", "moved to a sub-key"
        FROM_SUBKEY = "from_subkey", "returned from a sub-key"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField(help_text="Change of the user's balance, quota units.")
    key_amount = models.BigIntegerField(
        default=0, help_text="Change of the key's own allowance, quota units."
    )
    note = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["-id"]
        # The site's log pages page one user's rows newest first (keyset on id), by kind.
        indexes = [
            models.Index(fields=["user", "-id"], name="ledger_user_id"),
            models.Index(fields=["user", "kind", "-id"], name="ledger_user_kind_id"),
        ]

    def __str__(self):
        return f"{self.kind} {self.amount:+d} for {self.user_id}"


class Hold(models.Model):
    """Quota set aside for a call in flight; settled once into a UsageLog row, or released.

    ``delivered``: the call's answer reached its client but its settlement could not be
    written; ``delivered_quota`` is what it should cost. The expiry sweep settles such a hold
    (charging it), never releases it: an answer that was delivered is always billed.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        DELIVERED = "delivered", "delivered, not settled yet"
        SETTLED = "settled"
        RELEASED = "released"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    amount = models.BigIntegerField(help_text="Taken from the user's balance, quota units.")
    key_amount = models.BigIntegerField(
        default=0, help_text="Taken from the key's allowance (0 for unlimited keys)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    delivered_quota = models.BigIntegerField(
        null=True, blank=True, help_text="Cost of a delivered answer not yet settled, quota units."
    )

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self):
        return f"hold {self.id} {self.amount} {self.status}"


class UsageLog(models.Model):
    """One relayed call: what was used and what it cost. Never the prompt or the answer."""

    class Status(models.TextChoices):
        SUCCESS = "success"
        CLIENT_GONE = "client_gone", "client disconnected"
        UPSTREAM_ERROR = "upstream_error", "upstream failed mid-stream"
        FAILED = "failed", "failed before an answer (no charge)"

    class UsageFlag(models.TextChoices):
        TRUSTED = "", "upstream usage billed"
        REJECTED = "rejected", "upstream usage rejected, local counts billed"
        CLAMPED = "clamped", "upstream usage above the call's limits, clamped"
        SETTLED_LATE = "settled_late", "settled by the expiry sweep after a failed settlement"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    hold_id = models.BigIntegerField(null=True, unique=True)
    # A plain id, not a foreign key: billing does not depend on relay, and usage outlives
    # deleted channels.
    channel_id = models.BigIntegerField(null=True)
    endpoint = models.CharField(max_length=32)
    model = models.CharField(max_length=128, help_text="As the client asked (priced by this).")
    upstream_model = models.CharField(max_length=128, blank=True)
    is_stream = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUCCESS)
    # 64-bit: a hostile upstream's figure must never make the row unwritable.
    input_tokens = models.BigIntegerField(default=0, help_text="Uncached input.")
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0, help_text="5-minute cache writes.")
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0, help_text="Includes reasoning tokens.")
    reasoning_tokens = models.BigIntegerField(default=0)
    audio_input_tokens = models.BigIntegerField(default=0)
    audio_output_tokens = models.BigIntegerField(default=0)
    web_search_calls = models.BigIntegerField(default=0)
    service_tier = models.CharField(max_length=16, blank=True)
    usage_flag = models.CharField(
        max_length=16, choices=UsageFlag.choices, default=UsageFlag.TRUSTED, blank=True
    )
    reported_usage = models.JSONField(
        null=True, blank=True, help_text="The upstream's figures, kept when they were not billed."
    )
    quota = models.BigIntegerField(default=0, help_text="Charged, quota units.")
    key_quota = models.BigIntegerField(
        default=0, help_text="Charged to the key's allowance (0 for unlimited keys)."
    )
    carved = models.BooleanField(
        default=False, help_text="Paid by a carved sub-key's balance, not the user's."
    )
    # The prices it was charged at, so a later price change never rewrites history.
    group_ratio = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(1))
    model_ratio = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    completion_ratio = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    cache_read_ratio = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    cache_write_ratio = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    per_call_quota = models.BigIntegerField(null=True, blank=True)
    latency_ms = models.IntegerField(default=0)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    error = models.CharField(
        max_length=64, blank=True, help_text="Why a failed call failed (its error code)."
    )
    refunded_at = models.DateTimeField(
        null=True, blank=True, help_text="When its charge was given back (a refund ledger row)."
    )

    class Meta:
        ordering = ["-id"]
        # The site's log pages page one user's rows newest first (keyset on id), filtered by
        # key or model; date ranges become id bounds through (user, created_at).
        indexes = [
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["user", "-id"], name="usage_user_id"),
            models.Index(fields=["user", "api_key", "-id"], name="usage_user_key_id"),
            models.Index(fields=["user", "model", "-id"], name="usage_user_model_id"),
        ]

    def __str__(self):
        return f"{self.model} {self.quota} for {self.user_id}"


class ModelPrice(models.Model):
    """What a model costs. Ratio 1 = $0.002 per 1K tokens = 1 quota per token."""

    model = models.CharField(max_length=128, unique=True)
    model_ratio = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    completion_ratio = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(1), help_text="Output price / input."
    )
    cache_read_ratio = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(1), help_text="Cached input / input."
    )
    cache_write_ratio = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(1), help_text="Cache write / input."
    )
    per_call_quota = models.BigIntegerField(
        null=True, blank=True, help_text="Fixed price per call, quota units (replaces tokens)."
    )
    is_free = models.BooleanField(
        default=False, help_text="Serve without charge (a model with no price is refused)."
    )
    cache_write_1h_ratio = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(2), help_text="1-hour cache write / input."
    )
    audio_input_ratio = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Audio input / input. Empty: calls with audio input are refused.",
    )
    audio_output_ratio = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Audio output / input. Empty: calls asking for audio output are refused.",
    )
    web_search_quota = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Price of one server-side web search, quota units. Empty: web search refused.",
    )
    max_output_tokens = models.IntegerField(
        null=True,
        blank=True,
        help_text="The model's largest output: held (and, when the balance is short, lowered "
        "and sent) for a call that names no limit, and the most any call may ask "
        "(default: RELAY_DEFAULT_MAX_OUTPUT_TOKENS).",
    )
    # Per-call prices, quota units, for calls that are not billed by tokens.
    image_quotas = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per image, by "SIZE/QUALITY" or "SIZE" (e.g. {"1024x1024/hd": 40000}), '
        "quota units. Empty: images refused.",
    )
    audio_minute_quota = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Per minute of audio transcribed or translated, quota units.",
    )
    speech_1k_chars_quota = models.BigIntegerField(
        null=True, blank=True, help_text="Per 1,000 characters of speech made, quota units."
    )
    midjourney_quotas = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per Midjourney task, by "ACTION/MODE" or "ACTION" '
        '(e.g. {"imagine/fast": 50000}), quota units.',
    )

    def __str__(self):
        return self.model


class GroupRatio(models.Model):
    """A pricing group's multiplier on every charge (VIP tiers are groups with ratio < 1)."""

    name = models.CharField(max_length=32, unique=True)
    ratio = models.DecimalField(max_digits=8, decimal_places=4, default=Decimal(1))

    def __str__(self):
        return f"{self.name} ×{self.ratio}"


class TrialGrant(models.Model):
    """Trial credit given to a new user, and what became of it when its lifetime ended.

    Trial credit is taken as spent first: when it expires, the expiry takes at most the grant
    less everything the user consumed since it was given, and never more than the balance, so
    money the user paid for is never taken. The expiry is a ledger row of its own
    (``trial_expiry``); ``expired_amount`` is what it took.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField(help_text="Granted, quota units.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never.")
    closed_at = models.DateTimeField(null=True, blank=True)
    expired_amount = models.BigIntegerField(default=0, help_text="Taken at expiry, quota units.")

    class Meta:
        indexes = [models.Index(fields=["closed_at", "expires_at"])]

    def __str__(self):
        return f"trial {self.amount} for {self.user_id}"


class VipTier(models.Model):
    """A tier an operator sells: its group (and so its ratio and channels) for ``days``.

    Bought with balance (``billing.tiers.buy_tier``) or with a redemption code whose batch
    carries the tier. Money fields are quota units (500,000 = $1).
    """

    name = models.CharField(max_length=64, unique=True)
    group = models.CharField(max_length=32, help_text="The pricing group the tier grants.")
    days = models.PositiveIntegerField(help_text="How long one purchase lasts.")
    price = models.BigIntegerField(default=0, help_text="Paid from the balance, quota units.")
    included_quota = models.BigIntegerField(
        default=0, help_text="Credit that comes with a purchase, quota units."
    )
    is_active = models.BooleanField(default=True, help_text="Offered for sale.")

    class Meta:
        verbose_name = "VIP tier"

    def __str__(self):
        return f"{self.name} ({self.group}, {self.days} days)"


class TierMembership(models.Model):
    """A user's time in a tier. One open membership per user at most; it ends exactly once
    (``ended_at`` set by a status transition), which puts the user back in ``default``."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="tier_memberships"
    )
    tier = models.ForeignKey(VipTier, on_delete=models.PROTECT, related_name="memberships")
    started_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["ended_at", "ends_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(ended_at=None),
                name="one_open_tier_membership",
            )
        ]

    def __str__(self):
        return f"{self.tier.name} for {self.user_id} until {self.ends_at:%Y-%m-%d}"


class RedemptionBatch(models.Model):
    """Codes made together, each worth ``quota`` (and the batch's tier, if it carries one)."""

    name = models.CharField(max_length=100)
    quota = models.BigIntegerField(help_text="Credited per code, quota units.")
    count = models.PositiveIntegerField(help_text="How many codes were made.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never.")
    tier = models.ForeignKey(
        VipTier,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="A code of this batch also grants this tier.",
    )
    disabled = models.BooleanField(default=False, help_text="No code of the batch redeems.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "redemption batches"
        ordering = ["-id"]

    def __str__(self):
        return self.name


class RedemptionCode(models.Model):
    """One code, stored only as its keyed hash (billing.redemption) and a hint for support."""

    batch = models.ForeignKey(RedemptionBatch, on_delete=models.PROTECT, related_name="codes")
    lookup_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=24, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True)
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    entry = models.OneToOneField(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.hint
