"""Operators' view of the money. Ledger, holds and usage are read-only: history is not edited."""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from billing import redemption
from billing.models import (
    GroupRatio,
    Hold,
    LedgerEntry,
    ModelPrice,
    RedemptionBatch,
    RedemptionCode,
    TierMembership,
    TrialGrant,
    UsageLog,
    VipTier,
)


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


# A ratio of 1 is $0.002 per 1K tokens: $2 per million.
USD_PER_MILLION_PER_RATIO = Decimal(2)
SIX_PLACES = Decimal("0.000001")
# Each dollar field, and the ratio (relative to input) it is the dollar face of.
DOLLAR_FIELDS = {
    "input_usd": None,
    "output_usd": "completion_ratio",
    "cached_input_usd": "cache_read_ratio",
    "cache_write_usd": "cache_write_ratio",
}
RATIO_FIELDS = ("model_ratio", "completion_ratio", "cache_read_ratio", "cache_write_ratio")


def usd_per_million(row: ModelPrice, relative: str | None = None) -> Decimal:
    """The row's price in $ per 1M tokens of a kind (``relative``: its ratio to input)."""
    factor = getattr(row, relative) if relative else Decimal(1)
    return (row.model_ratio * factor * USD_PER_MILLION_PER_RATIO).normalize()


def per_call_table(value) -> dict:
    """A per-call price table: names to whole non-negative quota amounts."""
    if not isinstance(value, dict):
        raise forms.ValidationError('Enter an object such as {"1024x1024/hd": 40000}.')
    for name, quota in value.items():
        if not name or not isinstance(quota, int) or isinstance(quota, bool) or quota < 0:
            raise forms.ValidationError(
                f"{name!r}: each price is a whole number of quota units, 0 or more."
            )
    return value


class ModelPriceForm(forms.ModelForm):
    """One price row, editable as ratios or as $ per 1M tokens: the same row both ways.

    The dollar fields start from the ratios; whichever side the operator edits is written
    as ratios (1 ratio = $2 per 1M tokens, the others relative to input).
    """

    input_usd = forms.DecimalField(required=False, min_value=0, label="Input, $ per 1M tokens")
    output_usd = forms.DecimalField(required=False, min_value=0, label="Output, $ per 1M tokens")
    cached_input_usd = forms.DecimalField(
        required=False, min_value=0, label="Cached input, $ per 1M tokens"
    )
    cache_write_usd = forms.DecimalField(
        required=False, min_value=0, label="Cache write (5 min), $ per 1M tokens"
    )

    class Meta:
        model = ModelPrice
        fields = (
            "model",
            "is_free",
            "max_output_tokens",
            "model_ratio",
            "completion_ratio",
            "cache_read_ratio",
            "cache_write_ratio",
            "cache_write_1h_ratio",
            "audio_input_ratio",
            "audio_output_ratio",
            "per_call_quota",
            "web_search_quota",
            "image_quotas",
            "audio_minute_quota",
            "speech_1k_chars_quota",
            "midjourney_quotas",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            for name, relative in DOLLAR_FIELDS.items():
                self.initial[name] = usd_per_million(self.instance, relative)

    def clean_image_quotas(self):
        return per_call_table(self.cleaned_data.get("image_quotas") or {})

    def clean_midjourney_quotas(self):
        return per_call_table(self.cleaned_data.get("midjourney_quotas") or {})

    def clean(self):
        super().clean()
        data = self.cleaned_data
        edited = [
            name
            for name in DOLLAR_FIELDS
            if name in self.changed_data and data.get(name) is not None
        ]
        if not edited:
            return data
        if any(name in self.changed_data for name in RATIO_FIELDS):
            raise forms.ValidationError("Edit the price either in dollars or as ratios, not both.")
        ratios = {name: data.get(name) or Decimal(0) for name in RATIO_FIELDS}
        current = ModelPrice(**ratios)
        dollars = {name: usd_per_million(current, rel) for name, rel in DOLLAR_FIELDS.items()}
        dollars.update({name: data[name] for name in edited})
        per_input = dollars["input_usd"]
        if per_input <= 0:
            if any(dollars[name] > 0 for name in DOLLAR_FIELDS):
                self.add_error(
                    "input_usd",
                    "Prices are ratios to the input price, so input must cost something; "
                    "use a per-call price or mark the model free.",
                )
            data["model_ratio"] = Decimal(0)
            return data
        data["model_ratio"] = (per_input / USD_PER_MILLION_PER_RATIO).quantize(SIX_PLACES)
        for name, relative in DOLLAR_FIELDS.items():
            if relative:
                data[relative] = (dollars[name] / per_input).quantize(SIX_PLACES)
        for name in RATIO_FIELDS:
            setattr(self.instance, name, data[name])
        return data


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    form = ModelPriceForm
    list_display = (
        "model",
        "model_ratio",
        "completion_ratio",
        "input_per_million",
        "output_per_million",
        "cache_read_ratio",
        "cache_write_ratio",
        "per_call_quota",
        "is_free",
        "max_output_tokens",
        "web_search_quota",
    )
    search_fields = ("model",)
    fieldsets = (
        (None, {"fields": ("model", "is_free", "max_output_tokens")}),
        (
            "Tokens in dollars ($ per 1M tokens)",
            {
                "description": "The same price as the ratios below: edit one side or the "
                "other. 1 ratio = $2 per 1M tokens.",
                "fields": ("input_usd", "output_usd", "cached_input_usd", "cache_write_usd"),
            },
        ),
        (
            "Tokens as ratios",
            {
                "fields": (
                    "model_ratio",
                    "completion_ratio",
                    "cache_read_ratio",
                    "cache_write_ratio",
                    "cache_write_1h_ratio",
                    "audio_input_ratio",
                    "audio_output_ratio",
                )
            },
        ),
        (
            "Per-call prices (quota units: 500,000 = $1)",
            {
                "fields": (
                    "per_call_quota",
                    "web_search_quota",
                    "image_quotas",
                    "audio_minute_quota",
                    "speech_1k_chars_quota",
                    "midjourney_quotas",
                )
            },
        ),
    )

    @admin.display(description="input $/1M")
    def input_per_million(self, row):
        return usd_per_million(row)

    @admin.display(description="output $/1M")
    def output_per_million(self, row):
        return usd_per_million(row, "completion_ratio")


@admin.register(GroupRatio)
class GroupRatioAdmin(admin.ModelAdmin):
    list_display = ("name", "ratio")


@admin.register(TrialGrant)
class TrialGrantAdmin(ReadOnlyAdmin):
    list_display = ("user", "amount", "expires_at", "closed_at", "expired_amount")


@admin.register(VipTier)
class VipTierAdmin(admin.ModelAdmin):
    """Tiers for sale (price and included credit in quota units: 500,000 = $1)."""

    list_display = ("name", "group", "days", "price", "included_quota", "is_active")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "group":
            return group_choice_field(**kwargs)
        return super().formfield_for_dbfield(db_field, request, **kwargs)


def group_names() -> list[str]:
    """The groups that exist: ``default`` and every priced group."""
    return sorted({"default", *GroupRatio.objects.values_list("name", flat=True)})


def group_choice_field(current: str | None = None, **kwargs) -> forms.ChoiceField:
    """A pricing group chosen from those that exist (a typo would cut a user off every
    channel); ``current`` stays choosable even if its GroupRatio was deleted."""
    names = group_names()
    if current and current not in names:
        names.append(current)
    kwargs.pop("widget", None)
    kwargs.pop("max_length", None)
    return forms.ChoiceField(choices=[(name, name) for name in names], **kwargs)


@admin.register(TierMembership)
class TierMembershipAdmin(ReadOnlyAdmin):
    list_display = ("user", "tier", "started_at", "ends_at", "ended_at")
    list_filter = ("tier",)
    search_fields = ("user__username",)


class RedemptionBatchForm(forms.ModelForm):
    class Meta:
        model = RedemptionBatch
        fields = ("name", "quota", "count", "expires_at", "tier", "disabled")

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if not self.instance.pk:
            batch = RedemptionBatch(
                quota=data.get("quota") or 0,
                count=data.get("count") or 0,
                tier=data.get("tier"),
            )
            try:
                redemption.check_batch(batch)
            except ValueError as problem:
                raise forms.ValidationError(str(problem)) from None
        return data


@admin.register(RedemptionBatch)
class RedemptionBatchAdmin(admin.ModelAdmin):
    """Batches of codes: made here (codes shown once), disabled here; never deleted."""

    form = RedemptionBatchForm
    list_display = (
        "name",
        "quota",
        "count",
        "redeemed",
        "tier",
        "expires_at",
        "disabled",
        "created_by",
        "created_at",
    )
    list_filter = ("disabled", "tier")
    search_fields = ("name",)
    actions = ("disable_batches",)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ("disabled",)
        return ("quota", "count", "expires_at", "tier", "disabled", "created_by", "created_at")

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="redeemed")
    def redeemed(self, batch):
        return batch.codes.exclude(used_at=None).count()

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        batch, codes = redemption.make_batch(
            name=obj.name,
            quota=obj.quota,
            count=obj.count,
            expires_at=obj.expires_at,
            tier=obj.tier,
            by=request.user,
        )
        obj.pk, obj.codes_in_clear = batch.pk, codes  # for response_add, only

    def response_add(self, request, obj, post_url_continue=None):
        """The new codes on this response's page, once (their hashes are all that is kept)."""
        codes = obj.codes_in_clear
        return TemplateResponse(
            request,
            "admin/billing/redemptionbatch/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "Redemption codes made",
                "opts": self.opts,
                "batch": obj,
                "codes_text": "\n".join(codes),
                "rows": min(len(codes), 30),
                "csv": redemption.codes_csv(obj, codes),
                "filename": f"codes-{obj.pk}.csv",
            },
        )

    @admin.action(description="Disable the selected batches (every unused code)")
    def disable_batches(self, request, queryset):
        disabled = sum(redemption.disable_codes(batch=batch) for batch in queryset)
        self.message_user(request, f"{disabled} unused codes disabled.", messages.SUCCESS)


class CodeStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("unused", "unused"), ("used", "used"), ("disabled", "disabled")]

    def queryset(self, request, queryset):
        if self.value() == "used":
            return queryset.exclude(used_at=None)
        if self.value() == "disabled":
            return queryset.filter(used_at=None).exclude(disabled_at=None, batch__disabled=False)
        if self.value() == "unused":
            return queryset.filter(used_at=None, disabled_at=None, batch__disabled=False)
        return queryset


@admin.register(RedemptionCode)
class RedemptionCodeAdmin(ReadOnlyAdmin):
    """Every code ever made, used or not, with who redeemed it when; found by its hint."""

    list_display = ("hint", "batch", "status", "used_by", "used_at", "disabled_at")
    list_filter = (CodeStatusFilter, "batch")
    list_select_related = ("batch", "used_by")
    search_fields = ("hint", "used_by__username", "batch__name")
    actions = ("disable_codes",)

    @admin.display(description="status")
    def status(self, code):
        return redemption.code_status(code)

    @admin.action(description="Disable the selected codes")
    def disable_codes(self, request, queryset):
        disabled = redemption.disable_codes(codes=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{disabled} unused codes disabled.", messages.SUCCESS)
