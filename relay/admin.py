"""Channels in admin: the upstream key is write-only (stored encrypted, never shown); demo
channels (built-in models, no upstream) are flagged in the list and need neither URL nor key."""

from django import forms
from django.contrib import admin

from relay.models import Channel
from relay.providers.demo import BASE_URL as DEMO_BASE_URL


class ChannelForm(forms.ModelForm):
    base_url = forms.URLField(
        assume_scheme="https", required=False, help_text=Channel.base_url.field.help_text
    )
    key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current key. A demo channel needs none.",
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
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns (typed as maybe None)
        if cleaned.get("type") == Channel.Type.DEMO:
            cleaned["base_url"] = cleaned.get("base_url") or DEMO_BASE_URL
            return cleaned
        if not cleaned.get("base_url") and "base_url" not in self.errors:
            # Not required by the field (a demo channel has none), so the model's own check
            # would be skipped.
            self.add_error("base_url", "An upstream channel needs its base URL.")
        if not self.instance.pk and not cleaned.get("key"):
            self.add_error("key", "A new channel needs its upstream key.")
        return cleaned


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ("name", "type", "demo", "priority", "weight", "status", "created_at")
    list_filter = ("type", "status")
    search_fields = ("name",)

    @admin.display(boolean=True, description="demo", ordering="type")
    def demo(self, channel: Channel) -> bool:
        return channel.is_demo

    def save_model(self, request, obj, form, change):
        if form.cleaned_data.get("key"):
            obj.set_key(form.cleaned_data["key"])
        elif not obj.encrypted_key:
            obj.set_key("")  # a demo channel: no upstream, no key
        super().save_model(request, obj, form, change)
