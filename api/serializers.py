"""The REST API's shapes. Money is quota units (500,000 = $1), with dollars beside it as a
string (exact, never a float)."""

import ipaddress
from decimal import Decimal

from rest_framework import serializers

from accounts.models import ApiKey
from billing.models import UsageLog
from billing.pricing import QUOTA_PER_USD

MOST_KEYS_PER_REQUEST = 100


def usd(quota: int) -> str:
    """Quota as dollars, exactly (display only)."""
    return format((Decimal(quota) / QUOTA_PER_USD).normalize(), "f")


class ApiKeySerializer(serializers.ModelSerializer):
    """One of the person's ``sk-`` keys (never the key itself, except once at creation)."""

    remaining_usd = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = (
            "id",
            "name",
            "hint",
            "status",
            "expires_at",
            "unlimited_quota",
            "remaining_quota",
            "remaining_usd",
            "used_quota",
            "allowed_models",
            "allowed_ips",
            "created_at",
            "last_used_at",
            "carved",
            "revoked_at",
        )
        read_only_fields = fields

    def get_remaining_usd(self, key) -> str:
        return usd(key.remaining_quota)


class NewApiKeySerializer(ApiKeySerializer):
    """A key just made: the only time the key is shown."""

    key = serializers.CharField(read_only=True)

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "key")
        read_only_fields = fields


def _ip_networks(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise serializers.ValidationError(f"{value!r} is not an IP address or CIDR") from None
    return values


class KeySettingsSerializer(serializers.Serializer):
    """What a person may set on a key. ``quota``: its own allowance in quota units (null:
    unlimited, bounded by the balance only); setting it writes a ledger row."""

    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    quota = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False, max_length=200
    )
    allowed_ips = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=200
    )

    def validate_allowed_ips(self, value):
        return _ip_networks(value)


class KeyCreateSerializer(KeySettingsSerializer):
    count = serializers.IntegerField(
        min_value=1,
        max_value=MOST_KEYS_PER_REQUEST,
        required=False,
        help_text="Make this many keys alike (answered as a list).",
    )
    carve = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="Resellers: make sub-keys, each holding this much quota moved from your "
        "balance (all or none). Not with `quota`.",
    )

    def validate(self, data):
        if data.get("carve") is not None and data.get("quota") is not None:
            raise serializers.ValidationError("A sub-key's balance is `carve`; leave out `quota`.")
        return data


class AmountSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, help_text="Quota units (500,000 = $1).")


class RevokedSerializer(serializers.Serializer):
    returned = serializers.IntegerField(help_text="Quota moved back to your balance.")
    returned_usd = serializers.CharField()
    key = ApiKeySerializer()


class KeyUpdateSerializer(KeySettingsSerializer):
    status = serializers.ChoiceField(choices=ApiKey.Status.choices, required=False)


class UsageSerializer(serializers.ModelSerializer):
    """One call: tokens and cost, never the prompt or the answer."""

    usd = serializers.SerializerMethodField()

    class Meta:
        model = UsageLog
        fields = (
            "id",
            "created_at",
            "api_key",
            "endpoint",
            "model",
            "is_stream",
            "status",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "quota",
            "usd",
            "latency_ms",
            "error",
        )
        read_only_fields = fields

    def get_usd(self, row) -> str:
        return usd(row.quota)


class LogFilterSerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="From this moment on.")
    end = serializers.DateTimeField(required=False, help_text="Before this moment.")
    key = serializers.IntegerField(required=False, help_text="One of your keys' id.")
    model = serializers.CharField(required=False, max_length=128)
    status = serializers.ChoiceField(choices=UsageLog.Status.choices, required=False)


class BalanceSerializer(serializers.Serializer):
    quota = serializers.IntegerField(help_text="Spendable balance, quota units.")
    usd = serializers.CharField()
    used_quota = serializers.IntegerField()
    used_usd = serializers.CharField()
    request_count = serializers.IntegerField()


class TierSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    group = serializers.CharField()
    days = serializers.IntegerField()
    price = serializers.IntegerField(help_text="Quota units.")
    included_quota = serializers.IntegerField(help_text="Quota units.")


class MembershipSerializer(serializers.Serializer):
    tier = serializers.CharField(source="tier.name")
    group = serializers.CharField(source="tier.group")
    started_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()


class ProfileSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    group = serializers.CharField()
    invite_code = serializers.CharField()
    balance = BalanceSerializer()
    tier = MembershipSerializer(allow_null=True)
    low_balance_threshold = serializers.IntegerField(
        allow_null=True, help_text="Quota units; an email when the balance falls to it."
    )


class ProfileUpdateSerializer(serializers.Serializer):
    low_balance_threshold = serializers.IntegerField(
        min_value=0,
        allow_null=True,
        help_text="Quota units (500,000 = $1): one email when the balance falls to it, then "
        "none until it rises above it again; null turns the notice off.",
    )


class RedeemSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=100, trim_whitespace=True)


class RedeemedSerializer(serializers.Serializer):
    credited = serializers.IntegerField(help_text="Quota units.")
    credited_usd = serializers.CharField()
    balance = BalanceSerializer()


class RefusalSerializer(serializers.Serializer):
    reason = serializers.CharField()
    detail = serializers.CharField()


class PerCallSerializer(serializers.Serializer):
    kind = serializers.CharField()
    variant = serializers.CharField()
    quota = serializers.IntegerField()
    usd = serializers.CharField()


class PriceLineSerializer(serializers.Serializer):
    """A model's prices as the viewer pays them (their group's ratio included), computed by
    the code that charges calls (billing.price_list)."""

    model = serializers.CharField()
    is_free = serializers.BooleanField()
    input_per_million = serializers.DecimalField(max_digits=30, decimal_places=6, allow_null=True)
    output_per_million = serializers.DecimalField(max_digits=30, decimal_places=6, allow_null=True)
    cached_input_per_million = serializers.DecimalField(
        max_digits=30, decimal_places=6, allow_null=True
    )
    usd_input_per_million = serializers.DecimalField(
        max_digits=30, decimal_places=12, allow_null=True
    )
    usd_output_per_million = serializers.DecimalField(
        max_digits=30, decimal_places=12, allow_null=True
    )
    usd_cached_input_per_million = serializers.DecimalField(
        max_digits=30, decimal_places=12, allow_null=True
    )
    per_call = PerCallSerializer(many=True)


class PricingSerializer(serializers.Serializer):
    group = serializers.CharField()
    group_ratio = serializers.DecimalField(max_digits=12, decimal_places=4)
    models = PriceLineSerializer(many=True)
