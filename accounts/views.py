"""The user site's pages: thin views that read through accounts.site and write through services.

Every page but home, pricing and docs needs a login. Anything named by an id in the URL (a key,
a token) is looked up among the signed-in user's own rows, so another user's id is a 404.
"""

import re
from datetime import datetime, time
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import site
from accounts.forms_site import AccessTokenForm, KeyForm
from accounts.models import AccessToken, ApiKey
from accounts.services import create_api_key
from accounts.templatetags.money import usd
from accounts.tokens import create_access_token, revoke_access_token
from billing import notices, subkeys
from billing import services as billing
from billing.price_list import price_list
from billing.pricing import QUOTA_PER_USD, group_ratio_for
from billing.redemption import RedemptionRefused, redeem_code


def home(request):
    group = request.user.group if request.user.is_authenticated else "default"
    return render(request, "home.html", {"models": site.models_on_offer(group)})


@login_required
def dashboard(request):
    days = 30 if request.GET.get("days") == "30" else 7
    by_day = site.usage_by_day(request.user, days=days)
    return render(
        request,
        "site/dashboard.html",
        {
            "days": days,
            "bars": site.chart_bars(by_day),
            "period_quota": sum(day.quota for day in by_day),
            "period_calls": sum(day.calls for day in by_day),
            "by_model": site.usage_by_model(request.user, days=days),
            "last_calls": site.last_calls(request.user),
        },
    )


# --- Keys -------------------------------------------------------------------------------------


def _own_key(request, key_id: int) -> ApiKey:
    return get_object_or_404(ApiKey, id=key_id, user=request.user)


def _key_models(request, key: ApiKey | None = None) -> list[str]:
    """Models offered in a key's form: what the user's group can call (and what it has)."""
    models = set(site.models_on_offer(request.user.group))
    if key is not None:
        models.update(key.allowed_models)
    return sorted(models)


def _keys_page(
    request,
    *,
    form=None,
    revealed: ApiKey | None = None,
    status=200,
    sub_key_form=None,
    carved_keys: list[str] | None = None,
):
    return render(
        request,
        "site/keys.html",
        {
            "keys": site.user_keys(request.user),
            "form": form or KeyForm(models=_key_models(request)),
            "revealed": revealed,
            "revealed_key": revealed.reveal() if revealed else "",
            "sub_key_form": sub_key_form or SubKeyForm(),
            "carved_keys": carved_keys or [],
        },
        status=status,
    )


# --- Resellers' sub-keys (billing.subkeys) ---------------------------------------------------


def _quota_of(dollars: Decimal) -> int:
    return int(dollars * QUOTA_PER_USD)


class SubKeyForm(forms.Form):
    """Sub-keys a reseller carves: each holds ``carve_usd`` moved from the balance."""

    name = forms.CharField(max_length=100, required=False)
    carve_usd = forms.DecimalField(min_value=Decimal("0.000002"), max_digits=14, decimal_places=6)
    count = forms.IntegerField(min_value=1, max_value=100, initial=1)
    expires_on = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


class AmountForm(forms.Form):
    amount_usd = forms.DecimalField(min_value=Decimal("0.000002"), max_digits=14, decimal_places=6)


@login_required
@require_POST
def sub_keys_create(request):
    if not request.user.is_reseller:
        messages.error(request, _("Only resellers can carve sub-keys."))
        return _keys_page(request, status=403)
    form = SubKeyForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, sub_key_form=form, status=400)
    data = form.cleaned_data
    day = data["expires_on"]  # the end of that day in the site's time zone, as for keys
    expires_at = timezone.make_aware(datetime.combine(day, time.max)) if day else None
    made = []
    try:
        with transaction.atomic():
            for _n in range(data["count"]):
                key, clear = create_api_key(
                    user=request.user, name=data["name"], expires_at=expires_at
                )
                subkeys.carve_key(api_key=key, amount=_quota_of(data["carve_usd"]), by=request.user)
                made.append(clear)
    except subkeys.SubkeyRefused as refusal:  # nothing was made
        messages.error(request, refusal.message)
        return _keys_page(request, sub_key_form=form, status=400)
    # The new keys in this answer only (never in a message: those may travel in a cookie).
    response = _keys_page(request, carved_keys=made)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def sub_key_top_up(request, key_id: int):
    key = _own_key(request, key_id)
    form = AmountForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Enter an amount above zero."))
        return redirect("keys")
    try:
        subkeys.top_up_key(
            api_key=key, amount=_quota_of(form.cleaned_data["amount_usd"]), by=request.user
        )
    except subkeys.SubkeyRefused as refusal:
        messages.error(request, refusal.message)
    else:
        messages.success(request, _("Sub-key topped up."))
    return redirect("keys")


@login_required
@require_POST
def sub_key_revoke(request, key_id: int):
    key = _own_key(request, key_id)
    try:
        returned = subkeys.revoke_key(api_key=key, by=request.user)
    except subkeys.SubkeyRefused as refusal:
        messages.error(request, refusal.message)
    else:
        messages.success(
            request, _("Sub-key revoked; %(amount)s returned.") % {"amount": usd(returned)}
        )
    return redirect("keys")


@login_required
def keys(request):
    if request.method == "POST":
        form = KeyForm(request.POST, models=_key_models(request))
        if not form.is_valid():
            return _keys_page(request, form=form, status=400)
        key, _clear = create_api_key(
            user=request.user,
            name=form.cleaned_data["name"],
            quota=form.quota,
            expires_at=form.expires_at,
            allowed_models=form.cleaned_data["allowed_models"],
            allowed_ips=form.cleaned_data["allowed_ips"],
        )
        messages.success(request, _("Key created. Copy it now or any time from this page."))
        return redirect(f"{request.path}?new={key.id}")
    revealed = None
    if request.GET.get("new", "").isdigit():
        revealed = ApiKey.objects.filter(id=request.GET["new"], user=request.user).first()
    return _keys_page(request, revealed=revealed)


@login_required
@require_POST
def key_reveal(request, key_id: int):
    response = _keys_page(request, revealed=_own_key(request, key_id))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def key_toggle(request, key_id: int):
    key = _own_key(request, key_id)
    if key.revoked_at is not None:
        messages.error(request, _("A revoked sub-key stays disabled."))
        return redirect("keys")
    enabled = key.status == ApiKey.Status.ENABLED
    key.status = ApiKey.Status.DISABLED if enabled else ApiKey.Status.ENABLED
    key.save(update_fields=["status"])
    return redirect("keys")


@login_required
def key_edit(request, key_id: int):
    key = _own_key(request, key_id)
    models = _key_models(request, key)
    if request.method != "POST":
        form = KeyForm(initial=KeyForm.initial_for(key), models=models)
        return render(request, "site/key_edit.html", {"key": key, "form": form})
    form = KeyForm(request.POST, models=models)
    if not form.is_valid():
        return render(request, "site/key_edit.html", {"key": key, "form": form}, status=400)
    key.name = form.cleaned_data["name"]
    key.expires_at = form.expires_at
    key.allowed_models = form.cleaned_data["allowed_models"]
    key.allowed_ips = form.cleaned_data["allowed_ips"]
    key.save(update_fields=["name", "expires_at", "allowed_models", "allowed_ips"])
    quota = form.quota
    if key.carved:  # a sub-key's balance moves by top-up or revocation only
        pass
    elif quota is None and not key.unlimited_quota:
        billing.set_key_limit(api_key=key, remaining=None, by=request.user, note="site")
    elif quota is not None and (key.unlimited_quota or quota != key.remaining_quota):
        billing.set_key_limit(api_key=key, remaining=quota, by=request.user, note="site")
    messages.success(request, _("Key saved."))
    return redirect("keys")


@login_required
@require_POST
def key_delete(request, key_id: int):
    key = _own_key(request, key_id)
    if key.carved:
        messages.error(request, _("A sub-key is revoked (its balance returned), not deleted."))
        return redirect("keys")
    key.delete()
    messages.success(request, _("Key deleted. Calls made with it stop at once."))
    return redirect("keys")


@login_required
def key_chat(request, key_id: int):
    """To the operator's chat client with this key and the base URL filled in."""
    link = site.chat_link(request, _own_key(request, key_id))
    if not link:
        return redirect("keys")
    response = HttpResponseRedirect(link)
    response["Cache-Control"] = "no-store"
    return response


# --- The other pages --------------------------------------------------------------------------


def _refusal_message(reason: str) -> str:
    """What a refused code tells the person, in their language."""
    return {
        "unknown": _("This code does not exist. Check it and try again."),
        "used": _("This code has already been redeemed."),
        "expired": _("This code has expired."),
        "disabled": _("This code has been disabled."),
        "too_many_attempts": _("Too many wrong codes. Wait an hour before trying again."),
    }.get(reason, _("This code cannot be redeemed."))


@login_required
def topup(request):
    if request.method == "POST":
        code = request.POST.get("code", "").strip()
        if not code:
            messages.error(request, _("Enter a redemption code."))
            return redirect("topup")
        try:
            quota = redeem_code(user=request.user, code=code, ip=site.client_ip(request))
        except RedemptionRefused as refused:
            messages.error(request, _refusal_message(refused.reason))
        else:
            messages.success(
                request, _("Redeemed: +%(amount)s added to your balance.") % {"amount": usd(quota)}
            )
        return redirect("topup")
    return render(request, "site/topup.html")


@login_required
def invite(request):
    return render(
        request,
        "site/invite.html",
        {
            "link": site.invite_link(request, request.user),
            **site.invite_summary(request.user),
        },
    )


def _settings_page(request, *, form=None, new_token: str = "", status=200, threshold_form=None):
    tokens = AccessToken.objects.filter(user=request.user).order_by("revoked_at", "-id")
    return render(
        request,
        "site/settings.html",
        {
            "tokens": tokens,
            "token_form": form or AccessTokenForm(),
            "new_token": new_token,
            "threshold_form": threshold_form or LowBalanceForm.for_user(request.user),
        },
        status=status,
    )


class LowBalanceForm(forms.Form):
    """The low-balance notice's threshold, in dollars (empty: no notice)."""

    threshold_usd = forms.DecimalField(
        required=False, min_value=Decimal(0), max_digits=12, decimal_places=2
    )

    @classmethod
    def for_user(cls, user) -> "LowBalanceForm":
        quota = user.low_balance_threshold
        dollars = None if quota is None else Decimal(quota) / QUOTA_PER_USD
        return cls(initial={"threshold_usd": dollars})

    def threshold(self) -> int | None:
        dollars = self.cleaned_data["threshold_usd"]
        return None if dollars is None else int(dollars * QUOTA_PER_USD)


@login_required
@require_POST
def low_balance_threshold(request):
    form = LowBalanceForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, threshold_form=form, status=400)
    notices.set_low_balance_threshold(user=request.user, threshold=form.threshold())
    messages.success(request, _("Low-balance notice saved."))
    return redirect("settings")


@login_required
def settings_page(request):
    return _settings_page(request)


@login_required
@require_POST
def token_create(request):
    form = AccessTokenForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, form=form, status=400)
    # Shown in this answer only (never in a message: those may travel in a cookie).
    _row, token = create_access_token(user=request.user, name=form.cleaned_data["name"])
    response = _settings_page(request, new_token=token)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request, token_id: int):
    get_object_or_404(AccessToken, id=token_id, user=request.user)
    if revoke_access_token(user=request.user, token_id=token_id):
        messages.success(request, _("Token revoked."))
    return redirect("settings")


def pricing(request):
    group_ratio = None
    if request.user.is_authenticated:
        group_ratio = group_ratio_for(request.user.group)
    lines = price_list(group_ratio=group_ratio) if group_ratio is not None else price_list()
    return render(request, "site/pricing.html", {"lines": lines, "group_ratio": group_ratio})


# Names that do not answer /v1/chat/completions (the built-in chat leaves the same out).
NOT_CHAT = re.compile(
    r"embedding|instruct|whisper|tts|dall-e|image|moderation|rerank|davinci|babbage|"
    r"transcribe|realtime",
    re.IGNORECASE,
)


def docs(request):
    models = [model for model in site.models_on_offer("default") if not NOT_CHAT.search(model)]
    claude = [model for model in models if model.startswith("claude")] or models
    return render(
        request,
        "site/docs.html",
        {
            "example_model": models[0] if models else "gpt-4o-mini",
            "example_claude": claude[0]
            if claude
            else (models[0] if models else "claude-sonnet-4-5"),
        },
    )
