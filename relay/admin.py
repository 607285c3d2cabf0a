"""Channels in admin: the upstream key is write-only (stored encrypted, never shown)."""

from django import forms
from django.contrib import admin

from relay.models import Channel


class ChannelForm(forms.ModelForm):
    base_url = forms.URLField(assume_scheme="https", help_text=Channel.base_url.field.help_text)
    key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current key.",
    )

    class Meta:
        model = Channel
        fields = (
            "type",
            "name",
            "base_url",
            "served_models",
            "model_mapping",
            "groups",
            "priority",
            "weight",
            "status",
        )

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("key"):
            self.add_error("key", "A new channel needs its upstream key.")
        return cleaned


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ("name", "type", "priority", "weight", "status", "created_at")
    list_filter = ("type", "status")
    search_fields = ("name",)

    def save_model(self, request, obj, form, change):
        if form.cleaned_data.get("key"):
            obj.set_key(form.cleaned_data["key"])
        super().save_model(request, obj, form, change)
