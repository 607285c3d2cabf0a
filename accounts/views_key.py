"""The key-holder's page, ``/key``: a reseller's customer (or anyone holding a key) enters the
key and sees its balance, expiry, allowed models, usage by day and recent calls, and nothing
of the account behind it nor of the site's navigation (white-label: the operator sets its
title in SiteSettings).

The key travels only in a POST body (CSRF-protected), never in a URL; the answer is not cached.
Wrong keys are counted per client IP in the default cache (Redis in production, this
process's memory in embedded mode): past ``KEY_PAGE_FAILURES_PER_IP`` in
``KEY_PAGE_FAILURE_WINDOW_SECONDS`` the page refuses every key from that IP until the window
ends, so it cannot be used to guess keys.
"""

from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from django.views.decorators.cache import never_cache

from accounts.logs import STATUS_LABELS
from accounts.models import ApiKey, SiteSettings
from accounts.site import client_ip
from billing import reports

USAGE_DAYS = 30


def _limits() -> tuple[int, int]:
    return (
        getattr(settings, "KEY_PAGE_FAILURES_PER_IP", 20),
        getattr(settings, "KEY_PAGE_FAILURE_WINDOW_SECONDS", 3600),
    )


def _guess_key(ip: str | None) -> str:
    return f"keypage:wrong:{ip or 'unknown'}"


def _guessing(ip: str | None) -> bool:
    most, _ = _limits()
    try:
        return (caches["guards"].get(_guess_key(ip)) or 0) >= most
    except Exception:  # noqa: BLE001 - a cache that fails closes the page, never opens it
        return True


def _count_wrong_key(ip: str | None) -> None:
    _, window = _limits()
    try:
        caches["guards"].add(_guess_key(ip), 0, window)  # the window starts at the first wrong key
        caches["guards"].incr(_guess_key(ip))
    except Exception:  # noqa: BLE001, S110 - the next check refuses while the cache is down
        pass


@never_cache
def key_page(request):
    site = SiteSettings.current()
    context: dict = {"title": site.key_page_title or _("API key balance")}
    status = 200
    if request.method == "POST":
        ip = client_ip(request)
        presented = request.POST.get("key", "").strip()
        if _guessing(ip):
            context["error"] = _("Too many wrong keys from your address. Try again later.")
            status = 429
        elif not presented:
            context["error"] = _("Enter your API key.")
            status = 400
        else:
            key = ApiKey.objects.find(presented).first()
            if key is None:
                _count_wrong_key(ip)
                context["error"] = _("No such key.")
                status = 404
            else:
                context.update(_key_report(key))
    elif request.method != "GET":
        status = 405
        context["error"] = _("Use the form.")
    return render(request, "key/page.html", context, status=status)


def _key_report(key: ApiKey) -> dict:
    standing = reports.key_standing(api_key_id=key.id)
    now = timezone.now()
    start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(days=USAGE_DAYS - 1)
    days: dict = {}
    for row in reports.key_usage_by_day(api_key_id=key.id, start=start, end=now):
        day = days.setdefault(row.day, {"day": row.day, "quota": 0, "calls": 0})
        day["quota"] += row.quota
        day["calls"] += row.calls
    if key.revoked_at is not None:
        state = "revoked"
    elif key.status != ApiKey.Status.ENABLED:
        state = "disabled"
    elif key.expires_at is not None and key.expires_at <= now:
        state = "expired"
    else:
        state = "active"
    return {
        "report": True,
        "hint": key.hint,
        "state": state,
        "state_label": {
            "revoked": pgettext("key state", "revoked"),
            "disabled": pgettext("key state", "disabled"),
            "expired": pgettext("key state", "expired"),
            "active": pgettext("key state", "active"),
        }[state],
        "standing": standing,
        "usage_days": sorted(days.values(), key=lambda d: d["day"], reverse=True),
        "usage_total": sum(d["quota"] for d in days.values()),
        "recent_calls": [
            {**call, "status_label": STATUS_LABELS.get(call["status"], call["status"])}
            for call in reports.key_recent_calls(api_key_id=key.id)
        ],
    }
