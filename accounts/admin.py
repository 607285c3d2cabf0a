"""Operators' view of users and keys. Balances and key limits change through billing services."""

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.template.response import TemplateResponse

from accounts import secrets as key_secrets
from accounts.models import AccessToken, ApiKey, SiteSettings, User
from billing import services as billing
from billing.admin import group_choice_field


class UserChangeForm(DjangoUserAdmin.form):
    adjust_quota = forms.IntegerField(
        required=False, help_text="Quota to add (negative to take); 500000 = $1. Ledgered."
    )
    adjust_note = forms.CharField(required=False, max_length=255)

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
        "is_staff",
        "is_active",
    )
    list_filter = ("group", "is_staff", "is_active")
    readonly_fields = (
        "quota",
        "used_quota",
        "request_count",
        "invite_code",
        "last_login",
        "date_joined",
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
        "unlimited_quota",
        "remaining_quota",
        "used_quota",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("status", "unlimited_quota")
    search_fields = ("name", "user__username")
    readonly_fields = ("hint", "remaining_quota", "used_quota", "created_at", "last_used_at")
    raw_id_fields = ("user",)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.key_in_clear = key_secrets.generate_api_key()  # for response_add, only
            obj.set_key(obj.key_in_clear)
        super().save_model(request, obj, form, change)
        limit = form.cleaned_data.get("limit")
        if limit is not None and not obj.unlimited_quota:
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
