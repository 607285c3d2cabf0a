"""Operators' view of users and keys. Balances and key limits change through billing services."""

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.template.response import TemplateResponse

from accounts import secrets as key_secrets
from accounts.models import AccessToken, ApiKey, SiteSettings, User
from billing import services as billing
from billing import subkeys
from billing.admin import group_choice_field


class UserChangeForm(DjangoUserAdmin.form):
    adjust_quota = forms.IntegerField(
        required=False, help_text="Quota to add (negative to take); 500000 = $1. Ledgered."
    )
    adjust_note = forms.CharField(
        required=False, max_length=255, help_text="The reason (required with an adjustment)."
    )

    def clean(self):
        data = super().clean()
        if data.get("adjust_quota") and not (data.get("adjust_note") or "").strip():
            self.add_error("adjust_note", "Say why: the reason is kept in the ledger.")
        return data

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "group" in self.fields:  # chosen from the groups that exist, not typed
            self.fields["group"] = group_choice_field(
                current=self.instance.group, help_text=self.fields["group"].help_text
            )


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    list_display = (
        "username",
        "email",
        "group",
        "quota",
        "used_quota",
        "request_count",
        "is_reseller",
        "is_staff",
        "is_active",
    )
    list_filter = ("group", "is_reseller", "is_staff", "is_active")
    readonly_fields = (
        "quota",
        "used_quota",
        "request_count",
        "invite_code",
        "last_login",
        "date_joined",
        "low_balance_notified_at",
    )
    fieldsets = DjangoUserAdmin.fieldsets + (
        (
            "Sluice",
            {
                "fields": (
                    "group",
                    "quota",
                    "adjust_quota",
                    "adjust_note",
                    "used_quota",
                    "request_count",
                    "invite_code",
                    "inviter",
                    "is_reseller",
                    "low_balance_threshold",
                    "low_balance_notified_at",
                )
            },
        ),
    )
    raw_id_fields = ("inviter",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        amount = form.cleaned_data.get("adjust_quota")
        if amount:
            billing.grant(
                user=obj,
                amount=amount,
                note=form.cleaned_data.get("adjust_note", ""),
                by=request.user,
            )


class ApiKeyForm(forms.ModelForm):
    limit = forms.IntegerField(
        required=False,
        min_value=0,
        help_text="Set the key's remaining allowance (quota units); ledgered. "
        "Empty keeps it as it is.",
    )

    class Meta:
        model = ApiKey
        fields = (
            "user",
            "name",
            "status",
            "expires_at",
            "unlimited_quota",
            "allowed_models",
            "allowed_ips",
        )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "hint",
        "name",
        "user",
        "status",
        "carved",
        "unlimited_quota",
        "remaining_quota",
        "used_quota",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("status", "unlimited_quota", "carved")
    search_fields = ("name", "user__username")
    readonly_fields = (
        "hint",
        "carved",
        "revoked_at",
        "remaining_quota",
        "used_quota",
        "created_at",
        "last_used_at",
    )
    raw_id_fields = ("user",)
    actions = ("revoke_sub_keys",)

    def has_delete_permission(self, request, obj=None):
        # A carved sub-key is a record of money: revoked (its balance returned), never deleted.
        return super().has_delete_permission(request, obj) and not (obj and obj.carved)

    def get_readonly_fields(self, request, obj=None):
        fields = self.readonly_fields
        if obj is None:
            return fields
        # A key's owner is fixed: moving it would move a sub-key's balance (and a plain key's
        # calls in flight) to another person without a ledger row between the two.
        fields = (*fields, "user")
        if obj.carved:  # its balance moves only by top-up or revocation
            fields = (*fields, "unlimited_quota")
        if obj.revoked_at is not None:  # revoked for good: its balance went back
            fields = (*fields, "status")
        return fields

    @admin.action(description="Revoke selected sub-keys (their balance goes back)")
    def revoke_sub_keys(self, request, queryset):
        returned = sum(
            subkeys.revoke_key(api_key=key, by=request.user) for key in queryset.filter(carved=True)
        )
        self.message_user(request, f"Returned {returned} quota to the resellers.")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.key_in_clear = key_secrets.generate_api_key()  # for response_add, only
            obj.set_key(obj.key_in_clear)
        super().save_model(request, obj, form, change)
        limit = form.cleaned_data.get("limit")
        if limit is not None and not obj.unlimited_quota and not obj.carved:
            billing.set_key_limit(
                api_key=obj, remaining=limit, by=request.user, note="set in admin"
            )

    def response_add(self, request, obj, post_url_continue=None):
        """The new key on this response's page, once. Not as a message: messages are kept in
        a cookie (signed, not encrypted) or the session, and the key would travel in them."""
        return TemplateResponse(
            request,
            "admin/accounts/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "API key created",
                "opts": self.opts,
                "api_key": obj,
                "key": obj.key_in_clear,
            },
        )


@admin.register(SiteSettings)
class SiteSettingsAdmin(admin.ModelAdmin):
    """The one row of site options (money fields in quota units: 500,000 = $1)."""

    def has_add_permission(self, request):
        return not SiteSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "hint", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("user", "name", "hint", "created_at", "last_used_at")
    search_fields = ("user__username", "name")

    def has_add_permission(self, request):
        return False
