"""Operators' view of the money. Ledger, holds and usage are read-only: history is not edited."""

from django.contrib import admin

from billing.models import GroupRatio, Hold, LedgerEntry, ModelPrice, TrialGrant, UsageLog


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "kind",
        "amount",
        "api_key",
        "key_amount",
        "note",
        "created_by",
    )
    list_filter = ("kind",)
    search_fields = ("user__username", "note")


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "api_key",
        "amount",
        "key_amount",
        "status",
        "created_at",
        "expires_at",
    )
    list_filter = ("status",)


@admin.register(UsageLog)
class UsageLogAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "model",
        "channel_id",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "quota",
        "usage_flag",
        "error",
        "latency_ms",
        "is_stream",
        "status",
        "client_ip",
    )
    list_filter = ("status", "usage_flag", "is_stream", "endpoint")
    search_fields = ("user__username", "model")


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = (
        "model",
        "model_ratio",
        "completion_ratio",
        "cache_read_ratio",
        "cache_write_ratio",
        "per_call_quota",
        "is_free",
        "max_output_tokens",
        "web_search_quota",
    )
    search_fields = ("model",)


@admin.register(GroupRatio)
class GroupRatioAdmin(admin.ModelAdmin):
    list_display = ("name", "ratio")


@admin.register(TrialGrant)
class TrialGrantAdmin(ReadOnlyAdmin):
    list_display = ("user", "amount", "expires_at", "closed_at", "expired_amount")
