"""What the user site's pages read: site options, the base URL, a user's figures.

Reads only; writes go through ``accounts.services`` and ``billing.services``.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import ApiKey, SiteSettings, ip_in
from billing.models import LedgerEntry, UsageLog
from billing.pricing import priced_models


def site_settings(request=None) -> SiteSettings:
    """The operator's options, read once per request."""
    if request is None:
        return SiteSettings.current()
    cached = getattr(request, "_site_settings", None)
    if cached is None:
        cached = request._site_settings = SiteSettings.current()
    return cached


def site_root(request) -> str:
    """The site's address without a trailing slash: ``SITE_URL``, else the request's host."""
    if settings.SITE_URL:
        return settings.SITE_URL
    return f"{request.scheme}://{request.get_host()}"


def api_base_url(request) -> str:
    """The OpenAI-style base URL clients are given (``…/v1``)."""
    return site_root(request) + "/v1"


# --- Models on offer -------------------------------------------------------------------------


def models_on_offer(group: str | None = None) -> list[str]:
    """Models a live channel serves (to ``group``, or to anyone) that have a price: what a call
    may name. The channel table is read by name, so the site does not import the relay."""
    channel_model = apps.get_model("relay", "Channel")
    offered: set[str] = set()
    for served, groups in channel_model.objects.filter(status="enabled").values_list(
        "served_models", "groups"
    ):
        if group is None or group in (groups or []):
            offered.update(served or [])
    return sorted(priced_models(offered))


# --- Dashboard --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    day: date
    quota: int
    calls: int


def usage_by_day(user, *, days: int) -> list[Day]:
    """Quota spent and calls made on each of the last ``days`` days (today included), from
    the call journal; days without calls are zero."""
    today = timezone.localdate()
    first = today - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    rows = (
        UsageLog.objects.filter(user=user, created_at__gte=start)
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(quota=Sum("quota"), calls=Count("id"))
    )
    found = {row["day"]: row for row in rows}
    return [
        Day(
            day=first + timedelta(days=offset),
            quota=(found.get(first + timedelta(days=offset)) or {}).get("quota") or 0,
            calls=(found.get(first + timedelta(days=offset)) or {}).get("calls") or 0,
        )
        for offset in range(days)
    ]


def usage_by_model(user, *, days: int) -> list[dict]:
    """Calls, tokens and quota per model over the last ``days`` days, dearest first."""
    start = timezone.now() - timedelta(days=days)
    return list(
        UsageLog.objects.filter(user=user, created_at__gte=start)
        .values("model")
        .annotate(
            calls=Count("id"),
            input_tokens=Sum("input_tokens"),
            cached_input_tokens=Sum("cached_input_tokens"),
            output_tokens=Sum("output_tokens"),
            quota=Sum("quota"),
        )
        .order_by("-quota", "model")
    )


def last_calls(user, *, count: int = 10) -> list[UsageLog]:
    """The user's latest calls, with their key's name."""
    return list(
        UsageLog.objects.filter(user=user).select_related("api_key").order_by("-id")[:count]
    )


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: Day
    label: str


CHART_WIDTH, CHART_HEIGHT, CHART_BOTTOM = 600, 160, 20


def chart_bars(days: list[Day]) -> list[Bar]:
    """Bar positions for the usage chart (inline SVG, viewBox 600 × 180)."""
    top = max((day.quota for day in days), default=0) or 1
    slot = CHART_WIDTH / max(len(days), 1)
    every = 1 if len(days) <= 10 else 5
    bars = []
    for index, day in enumerate(days):
        height = CHART_HEIGHT * day.quota / top
        bars.append(
            Bar(
                x=round(index * slot + slot * 0.15, 2),
                y=round(CHART_HEIGHT - height, 2),
                width=round(slot * 0.7, 2),
                height=round(height, 2),
                day=day,
                label=day.day.strftime("%m-%d") if index % every == 0 else "",
            )
        )
    return bars


# --- Invites ----------------------------------------------------------------------------------


def invite_summary(user) -> dict:
    """How many people signed up through ``user``'s link and what it earned them."""
    rewards = LedgerEntry.objects.filter(user=user, kind=LedgerEntry.Kind.INVITE_REWARD).aggregate(
        total=Sum("amount"), count=Count("id")
    )
    return {
        "invitees": user.invitees.count(),
        "reward_quota": rewards["total"] or 0,
        "reward_count": rewards["count"],
    }


def invite_link(request, user) -> str:
    return f"{site_root(request)}/register?aff={user.invite_code}"


# --- Keys -------------------------------------------------------------------------------------


def user_keys(user) -> list[ApiKey]:
    """The user's keys, newest first."""
    return list(ApiKey.objects.filter(user=user).order_by("-id"))


def chat_link(request, key: ApiKey) -> str:
    """The operator's chat-client link for ``key``, its base URL and the key filled in."""
    template = site_settings(request).chat_link_template
    try:
        return template.format(key=key.reveal(), base_url=site_root(request))
    except (KeyError, IndexError, ValueError):  # a template with a stray brace: no link
        return ""


def client_ip(request) -> str | None:
    """The visitor's IP: the socket peer, or the nearest X-Forwarded-For hop beyond the
    proxies named in ``TRUSTED_PROXIES`` (the relay's rule, so nobody can spoof it)."""
    peer = request.META.get("REMOTE_ADDR")
    if not settings.TRUSTED_PROXIES or not ip_in(peer, settings.TRUSTED_PROXIES):
        return peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        hop = hop.strip()
        if hop and not ip_in(hop, settings.TRUSTED_PROXIES):
            return hop if ip_in(hop, ["0.0.0.0/0", "::/0"]) else peer
    return peer
