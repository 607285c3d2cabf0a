"""Forms of the user site's pages: a key's settings, a personal access token's name."""

import ipaddress
from datetime import datetime, time
from decimal import Decimal, InvalidOperation

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.pricing import QUOTA_PER_USD


class KeyForm(forms.Form):
    """A key's name, expiry, own quota (in dollars) or unlimited, models and IPs.

    ``models`` are the choices offered: the models the user's group can call.
    """

    name = forms.CharField(label=_("Name"), max_length=100, required=False)
    expires_on = forms.DateField(
        label=_("Expires on"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Empty: never expires. The key stops working at the end of that day."),
    )
    unlimited = forms.BooleanField(
        label=_("Unlimited (bounded only by your balance)"), required=False, initial=True
    )
    quota_usd = forms.DecimalField(
        label=_("Own quota in $"),
        required=False,
        min_value=Decimal(0),
        max_digits=14,
        decimal_places=6,
        help_text=_("The most this key may spend, used when it is not unlimited."),
    )
    allowed_models = forms.MultipleChoiceField(
        label=_("Allowed models"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None ticked: every model your account can call."),
    )
    allowed_ips = forms.CharField(
        label=_("Allowed IPs"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "203.0.113.7, 10.0.0.0/8"}),
        help_text=_("IP addresses or CIDR ranges, separated by commas or lines. Empty: any."),
    )

    def __init__(self, *args, models: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [(model, model) for model in models or []]

    def clean_allowed_ips(self) -> list[str]:
        items = [
            item.strip()
            for item in self.cleaned_data["allowed_ips"].replace("\n", ",").split(",")
            if item.strip()
        ]
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise forms.ValidationError(
                    _("%(value)s is not an IP address or CIDR range."), params={"value": item}
                ) from None
        return items

    def clean(self):
        data = super().clean()
        if not data.get("unlimited") and data.get("quota_usd") is None:
            self.add_error("quota_usd", _("Give the key a quota, or tick Unlimited."))
        return data

    @property
    def quota(self) -> int | None:
        """The key's own allowance in quota units (None: unlimited), rounded down."""
        if self.cleaned_data.get("unlimited"):
            return None
        try:
            return int(self.cleaned_data["quota_usd"] * QUOTA_PER_USD)
        except (InvalidOperation, TypeError):
            return None

    @property
    def expires_at(self) -> datetime | None:
        """The end of the chosen day in the site's time zone."""
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return timezone.make_aware(datetime.combine(day, time.max))

    @classmethod
    def initial_for(cls, key) -> dict:
        """The form's values for an existing key."""
        return {
            "name": key.name,
            "expires_on": timezone.localtime(key.expires_at).date() if key.expires_at else None,
            "unlimited": key.unlimited_quota,
            "quota_usd": None
            if key.unlimited_quota
            else Decimal(key.remaining_quota) / QUOTA_PER_USD,
            "allowed_models": list(key.allowed_models),
            "allowed_ips": ", ".join(key.allowed_ips),
        }


class AccessTokenForm(forms.Form):
    name = forms.CharField(label=_("Token name"), max_length=100)
