"""People and their API keys.

Money fields are integer quota units: 500,000 quota = 1 USD. Balances change only through
``billing.services``, which writes the ledger row in the same transaction.
"""

import ipaddress
import secrets
from decimal import Decimal

from django.contrib.auth.models import AbstractUser
from django.db import models

from accounts import secrets as key_secrets


def ip_in(ip: str | None, networks) -> bool:
    """Whether ``ip`` falls in any of ``networks`` (IPs or CIDRs); a bad address never does."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


def new_invite_code() -> str:
    return secrets.token_urlsafe(6)


class KeepsMoneyFields:
    """A model whose money fields a plain ``save()`` never writes.

    ``save()`` writes every field from the instance's memory, which may be older than a
    settlement committed meanwhile (the admin form loaded the row, a call was billed, the form
    was saved). Balances move only through billing.services, by UPDATEs of their own; a save
    without ``update_fields`` leaves those columns as the database has them.
    """

    money_fields: tuple[str, ...] = ()

    def save(self, *args, **kwargs):
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in self.money_fields
            ]
        super().save(*args, **kwargs)


class User(KeepsMoneyFields, AbstractUser):
    """A person with a balance. Staff and superusers are the operators."""

    money_fields = ("quota", "used_quota", "request_count")

    quota = models.BigIntegerField(default=0, help_text="Spendable balance, quota units.")
    used_quota = models.BigIntegerField(default=0, help_text="Spent so far, quota units.")
    request_count = models.BigIntegerField(default=0)
    group = models.CharField(
        max_length=32, default="default", help_text="Pricing group: picks channels and ratio."
    )
    # Shared as /register?aff=CODE (the parameter name clients of one-api already know).
    invite_code = models.CharField(max_length=16, unique=True, default=new_invite_code)
    inviter = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="invitees"
    )
    is_reseller = models.BooleanField(
        default=False, help_text="May carve sub-keys: keys with a balance of their own."
    )
    # The low-balance notice (billing.notices): one email when the balance falls to the
    # threshold or below, then none until it has risen above it again.
    low_balance_threshold = models.BigIntegerField(
        null=True, blank=True, help_text="Email me when my balance falls to this, quota units."
    )
    low_balance_notified_at = models.DateTimeField(null=True, blank=True, editable=False)


class CarvedKeyProtected(Exception):
    """A carved sub-key is a record of money: it is revoked (its balance returned), never
    deleted."""


class ApiKeyQuerySet(models.QuerySet):
    def find(self, key: str):
        """The key's row, found by its lookup HMAC (the only way keys are looked up)."""
        return self.filter(lookup_hash=key_secrets.lookup_hash(key))

    def delete(self):
        if self.filter(carved=True).exists():
            raise CarvedKeyProtected("Carved sub-keys are revoked, not deleted.")
        return super().delete()


class ApiKey(KeepsMoneyFields, models.Model):
    """An ``sk-`` key. The database holds its HMAC and an encrypted copy, never the key."""

    money_fields = ("remaining_quota", "used_quota", "last_used_at")

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    lookup_hash = models.CharField(max_length=64, unique=True, editable=False)
    encrypted_key = models.TextField(editable=False)
    hint = models.CharField(max_length=16, editable=False, help_text="sk-ab…wxyz")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never.")
    unlimited_quota = models.BooleanField(default=True)
    # The key's own allowance, quota units. Tracked for unlimited keys too (it just is not
    # enforced), so turning a limit on later starts from a true figure; changes go through
    # billing.services.set_key_limit, which writes the ledger row.
    remaining_quota = models.BigIntegerField(default=0, editable=False)
    used_quota = models.BigIntegerField(default=0, editable=False)  # quota units
    # A carved sub-key (billing.subkeys) holds money of its own in ``remaining_quota``, moved
    # there from its reseller's balance; its calls spend that alone. Set at creation, never
    # changed (the ledger batch reads it under the key's lock, billing.batch).
    carved = models.BooleanField(default=False, editable=False)
    revoked_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="A revoked sub-key's balance went back."
    )
    allowed_models = models.JSONField(default=list, blank=True, help_text="Empty: all models.")
    allowed_ips = models.JSONField(default=list, blank=True, help_text="IPs/CIDRs; empty: any.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name or 'key'} ({self.hint})"

    def delete(self, *args, **kwargs):
        if self.carved:
            raise CarvedKeyProtected("Carved sub-keys are revoked, not deleted.")
        return super().delete(*args, **kwargs)

    def set_key(self, key: str) -> None:
        self.lookup_hash = key_secrets.lookup_hash(key)
        self.encrypted_key = key_secrets.encrypt(key)
        self.hint = key_secrets.mask(key)

    def reveal(self) -> str:
        """The key in clear, for its owner to copy again."""
        return key_secrets.decrypt(self.encrypted_key)


DEFAULT_CHAT_LINK = 'https://app.nextchat.dev/#/?settings={{"key":"{key}","url":"{base_url}"}}'


class SiteSettings(models.Model):
    """The operator's site options, edited in admin: one row (``SiteSettings.current()``).

    Money fields are quota units (500,000 = $1).
    """

    site_name = models.CharField(max_length=64, default="Sluice")
    registration_open = models.BooleanField(default=True, help_text="Whether people may sign up.")
    trial_quota = models.BigIntegerField(default=0, help_text="Given to every new user.")
    trial_days = models.PositiveIntegerField(
        default=0, help_text="How long trial credit lasts, in days; 0 = it never expires."
    )
    inviter_reward = models.BigIntegerField(
        default=0, help_text="Given to the inviter when someone signs up through their link."
    )
    invitee_reward = models.BigIntegerField(
        default=0, help_text="Given to a new user who signed up through an invite link."
    )
    display_currency = models.CharField(
        max_length=8, default="¥", help_text="Symbol of the currency shown beside dollars."
    )
    display_rate = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("7.2"),
        help_text="Units of the display currency per US dollar.",
    )
    shop_url = models.URLField(blank=True, help_text="Where people buy redemption codes.")
    topup_note = models.TextField(
        blank=True, help_text="Shown on the top-up page (Markdown: prices, exchange rate)."
    )
    key_page_title = models.CharField(
        max_length=100,
        blank=True,
        help_text='Title of the key-holder page /key (empty: "API key balance"); the page '
        "names nothing else of the site, so resellers' customers see only this.",
    )
    chat_link_template = models.CharField(
        max_length=500,
        default=DEFAULT_CHAT_LINK,
        help_text="A chat client's link with {key} and {base_url}; literal braces doubled.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "site settings"

    def __str__(self):
        return "site settings"

    @classmethod
    def current(cls) -> "SiteSettings":
        """The one row, created with the defaults the first time it is asked for."""
        settings, _ = cls.objects.get_or_create(pk=1)
        return settings


class AccessToken(models.Model):
    """A personal access token for the REST API (``/api/``): stored as its HMAC, like keys."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100)
    lookup_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} ({self.hint})"
