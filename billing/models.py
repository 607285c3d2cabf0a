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
        TRIAL = "trial"
        INVITE = "invite"
        ADJUSTMENT = "adjustment"
        KEY_LIMIT = "key_limit", "key limit change"

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

    def __str__(self):
        return f"{self.kind} {self.amount:+d} for {self.user_id}"


class Hold(models.Model):
    """Quota set aside for a call in flight; settled once into a UsageLog row, or released."""

    class Status(models.TextChoices):
        OPEN = "open"
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
    input_tokens = models.IntegerField(default=0, help_text="Uncached input.")
    cached_input_tokens = models.IntegerField(default=0)
    cache_write_tokens = models.IntegerField(default=0)
    output_tokens = models.IntegerField(default=0, help_text="Includes reasoning tokens.")
    reasoning_tokens = models.IntegerField(default=0)
    quota = models.BigIntegerField(default=0, help_text="Charged, quota units.")
    key_quota = models.BigIntegerField(
        default=0, help_text="Charged to the key's allowance (0 for unlimited keys)."
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

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "created_at"])]

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
    output_estimate = models.IntegerField(
        null=True,
        blank=True,
        help_text="Output tokens held for a call that names no max_tokens (default: setting).",
    )

    def __str__(self):
        return self.model


class GroupRatio(models.Model):
    """A pricing group's multiplier on every charge (VIP tiers are groups with ratio < 1)."""

    name = models.CharField(max_length=32, unique=True)
    ratio = models.DecimalField(max_digits=8, decimal_places=4, default=Decimal(1))

    def __str__(self):
        return f"{self.name} ×{self.ratio}"
