"""Operators' view of the money. Ledger, holds and usage are read-only: history is not edited."""

import csv
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from billing import redemption, reports, services
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
from billing.pricing import QUOTA_PER_USD


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _day_range(request) -> tuple[date, date]:
    """The ``start``/``end`` days (YYYY-MM-DD, end inclusive) of an operator's report; the
    last 30 days when absent or unreadable."""
    today = timezone.localdate()
    try:
        end = date.fromisoformat(request.GET.get("end", ""))
    except ValueError:
        end = today
    try:
        start = date.fromisoformat(request.GET.get("start", ""))
    except ValueError:
        start = end - timedelta(days=29)
    return min(start, end), end


def _moment(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _csv_response(filename: str, header: list[str], rows) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows(rows)
    return response


def channel_names(ids) -> dict[int, str]:
    """Channel names by id, for display. A lookup by app label: billing keeps a plain channel
    id (it never imports relay), and a deleted channel just shows its id."""
    Channel = apps.get_model("relay", "Channel")
    return dict(Channel.objects.filter(id__in=set(ids) - {None}).values_list("id", "name"))


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
    change_list_template = "admin/billing/ledgerentry/change_list.html"

    def get_urls(self):
        own = [
            path(
                "statement/",
                self.admin_site.admin_view(self.statement_view),
                name="billing_ledgerentry_statement",
            ),
            path(
                "summary/",
                self.admin_site.admin_view(self.summary_view),
                name="billing_ledgerentry_summary",
            ),
        ]
        return own + super().get_urls()

    def statement_view(self, request):
        """One user's statement for a date range (billing.reports.user_statement)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        start, end = _day_range(request)
        username = request.GET.get("user", "").strip()
        statement = None
        user = None
        if username:
            user = get_user_model().objects.filter(username=username).first()
            if user is not None:
                statement = reports.user_statement(
                    user_id=user.id, start=_moment(start), end=_moment(end + timedelta(days=1))
                )
        if statement is not None and request.GET.get("format") == "csv":
            rows = [["opening", statement.opening, usd(statement.opening)]]
            rows += [[kind, amount, usd(amount)] for kind, amount in statement.movements.items()]
            rows.append(["closing", statement.closing, usd(statement.closing)])
            return _csv_response(
                f"statement-{username}-{start}-{end}.csv", ["line", "quota", "usd"], rows
            )
        return TemplateResponse(
            request,
            "admin/billing/ledgerentry/statement.html",
            {
                **self.admin_site.each_context(request),
                "title": "Statement",
                "opts": self.opts,
                "start": start,
                "end": end,
                "username": username,
                "found": user is not None,
                "statement": statement,
                "movements": [
                    (kind, amount, usd(amount))
                    for kind, amount in (statement.movements.items() if statement else [])
                ],
                "usd": {
                    name: usd(getattr(statement, name))
                    for name in ("opening", "closing", "balance_now", "open_holds_now")
                }
                if statement
                else {},
            },
        )

    def summary_view(self, request):
        """Revenue and consumption per day, by model, channel and group, with top spenders."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        start, end = _day_range(request)
        since, until = _moment(start), _moment(end + timedelta(days=1))
        days = reports.daily_summary(start=since, end=until)
        names = channel_names(
            channel for day in days for channel in day["by_channel"] if channel is not None
        )
        rows = []
        for day in days:
            for kind, total in sorted(day["revenue"].items()):
                rows.append([day["day"], "revenue", kind, total, usd(total)])
            for dimension in ("by_model", "by_channel", "by_group"):
                for name, total in sorted(day[dimension].items(), key=lambda i: str(i[0])):
                    if dimension == "by_channel":
                        name = names.get(name, f"#{name}") if name is not None else "(none)"
                    rows.append([day["day"], dimension[3:], name, total, usd(total)])
        if request.GET.get("format") == "csv":
            return _csv_response(
                f"summary-{start}-{end}.csv", ["day", "what", "name", "quota", "usd"], rows
            )
        spenders = reports.top_spenders(start=since, end=until)
        return TemplateResponse(
            request,
            "admin/billing/ledgerentry/summary.html",
            {
                **self.admin_site.each_context(request),
                "title": "Daily summary",
                "opts": self.opts,
                "start": start,
                "end": end,
                "rows": rows,
                "spenders": [{**row, "usd": usd(row["spent"])} for row in spenders],
            },
        )


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


class DateRangeFilter(admin.ListFilter):
    """Calls from ``created_from`` to ``created_to`` (days, inclusive), typed as dates."""

    title = "date range"
    template = "admin/billing/date_range_filter.html"
    parameters = ("created_from", "created_to")

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.values = {}
        for name in self.parameters:
            if name in params:
                value = params.pop(name)
                value = value[-1] if isinstance(value, list) else value
                try:
                    self.values[name] = date.fromisoformat(value)
                except ValueError:
                    pass

    def has_output(self):
        return True

    def expected_parameters(self):
        return list(self.parameters)

    def queryset(self, request, queryset):
        if "created_from" in self.values:
            queryset = queryset.filter(created_at__gte=_moment(self.values["created_from"]))
        if "created_to" in self.values:
            end = _moment(self.values["created_to"] + timedelta(days=1))
            queryset = queryset.filter(created_at__lt=end)
        return queryset

    def choices(self, changelist):
        return []


@admin.register(UsageLog)
class UsageLogAdmin(ReadOnlyAdmin):
    """The operator's usage log: who, which key and channel, what it cost in quota and $,
    filtered by dates and searched by user, key, model or channel, with totals and CSV."""

    list_display = (
        "when",
        "user_name",
        "key_name",
        "model_name",
        "channel_name",
        "tokens",
        "cost",
        "status",
        "latency_ms",
    )
    list_filter = (DateRangeFilter, "status", "usage_flag", "is_stream", "carved", "endpoint")
    search_fields = ("user__username", "api_key__name", "model")
    list_select_related = ("user", "api_key")
    change_list_template = "admin/billing/usagelog/change_list.html"
    actions = ("refund_calls",)

    def has_refund_permission(self, request):
        return request.user.has_perm("billing.change_usagelog")

    @admin.action(description="Refund selected calls (a reason is asked)", permissions=["refund"])
    def refund_calls(self, request, queryset):
        """Give each selected call's charge back, once, after the operator says why."""
        reason = request.POST.get("reason", "").strip()
        if "apply" not in request.POST or not reason:
            return TemplateResponse(
                request,
                "admin/billing/usagelog/refund.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Refund calls",
                    "opts": self.opts,
                    "calls": queryset,
                    "total": usd(sum(queryset.values_list("quota", flat=True))),
                    "missing_reason": "apply" in request.POST,
                    "action_checkbox_name": ACTION_CHECKBOX_NAME,
                },
            )
        refunded = refused = 0
        for row in queryset:
            try:
                services.refund_call(usage=row, reason=reason, by=request.user)
                refunded += 1
            except services.RefundRefused:
                refused += 1
        self.message_user(
            request, f"Refunded {refunded} call(s); {refused} refunded before or never charged."
        )
        return None

    def get_queryset(self, request):
        # The channel's name in the page's one query (a plain id: billing never imports relay),
        # not kept on this admin, which every request shares.
        Channel = apps.get_model("relay", "Channel")
        names = Channel.objects.filter(id=OuterRef("channel_id")).values("name")[:1]
        return super().get_queryset(request).annotate(channel_label=Subquery(names))

    def get_search_results(self, request, queryset, search_term):
        found, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:
            Channel = apps.get_model("relay", "Channel")
            channels = Channel.objects.filter(name__icontains=search_term).values("id")
            found |= queryset.filter(channel_id__in=channels)
        return found, duplicates

    def get_urls(self):
        export = path(
            "export.csv",
            self.admin_site.admin_view(self.export_view),
            name="billing_usagelog_export",
        )
        return [export, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        context = response.context_data if isinstance(response, TemplateResponse) else None
        changelist = (context or {}).get("cl")
        if context is not None and changelist is not None:
            totals = changelist.queryset.aggregate(
                calls=Count("id"),
                quota=Coalesce(Sum("quota"), 0),
                input=Coalesce(Sum("input_tokens"), 0),
                output=Coalesce(Sum("output_tokens"), 0),
            )
            context["totals"] = {**totals, "usd": usd(totals["quota"])}
        return response

    def export_view(self, request):
        """The filtered log as CSV (the changelist's filters and search apply)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = self.get_changelist_instance(request).get_queryset(request)
        rows = rows.select_related("user", "api_key").order_by("-id")[:EXPORT_LIMIT]
        names = channel_names(rows.values_list("channel_id", flat=True))
        return _csv_response(
            "usage.csv",
            [
                "created_at",
                "user",
                "key",
                "model",
                "channel",
                "input_tokens",
                "cached_input_tokens",
                "output_tokens",
                "quota",
                "usd",
                "status",
                "carved",
            ],
            (
                [
                    row.created_at.isoformat(),
                    row.user.username,
                    row.api_key.name if row.api_key else "",
                    row.model,
                    names.get(row.channel_id, row.channel_id or ""),
                    row.input_tokens,
                    row.cached_input_tokens,
                    row.output_tokens,
                    row.quota,
                    usd(row.quota),
                    row.status,
                    row.carved,
                ]
                for row in rows
            ),
        )

    @admin.display(description="when", ordering="created_at")
    def when(self, row):
        return f"{timezone.localtime(row.created_at):%Y-%m-%d %H:%M:%S}"

    @admin.display(description="user", ordering="user__username")
    def user_name(self, row):
        return cut(row.user.get_username())

    @admin.display(description="key", ordering="api_key__name")
    def key_name(self, row):
        if row.api_key is None:
            return "(deleted)"
        return cut(row.api_key.name or row.api_key.hint)

    @admin.display(description="model", ordering="model")
    def model_name(self, row):
        return cut(row.model)

    @admin.display(description="channel")
    def channel_name(self, row):
        name = row.channel_label or (f"#{row.channel_id}" if row.channel_id else "")
        return cut(name)

    @admin.display(description="tokens in / out")
    def tokens(self, row):
        return format_html("{}<br>{}", f"{row.input_tokens:,}", f"{row.output_tokens:,}")

    @admin.display(description="cost", ordering="quota")
    def cost(self, row):
        return format_html("{}<br><small>{} quota</small>", usd(row.quota), f"{row.quota:,}")


# What a usage-log cell shows of a name before it is cut (the whole name is its tooltip): the
# fields allow 100-150 characters, and one long name must not push the table past the page.
CELL_CHARACTERS = 32


def cut(text: str) -> str:
    """A name for a narrow column: whole when short, else its start and an ellipsis, with the
    whole name as the tooltip."""
    if len(text) <= CELL_CHARACTERS:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: CELL_CHARACTERS - 1])


# The most rows one CSV export writes (the filters narrow it).
EXPORT_LIMIT = 200_000


def usd(quota: int) -> str:
    """Quota as dollars for the operator's pages (display only)."""
    return f"${Decimal(quota) / QUOTA_PER_USD:,.6f}".rstrip("0").rstrip(".")


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
