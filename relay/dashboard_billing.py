"""OpenAI's old billing endpoints, which clients (NextChat, ChatBox, balance checkers) still call
to show a key's balance: ``GET /v1/dashboard/billing/subscription`` and
``GET /v1/dashboard/billing/usage?start_date=YYYY-MM-DD&end_date=YYYY-MM-DD``, also served
without ``/v1`` (``django_view``, routed in accounts.urls).

Authenticated by the key alone, answered in OpenAI's shapes, about that key: its spendable
balance (a carved sub-key's own balance, a limited key's allowance capped by its owner's
balance, or the owner's balance for an unlimited key) and its charged calls. Reads go through
billing.reports.
"""

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

from django.http import HttpResponse
from django.utils import timezone

from billing import reports
from billing.pricing import QUOTA_PER_USD
from relay import database, errors
from relay.auth import authenticate
from relay.errors import RelayError
from relay.responses import Request, Response

SUBSCRIPTION_PATH = "/v1/dashboard/billing/subscription"
USAGE_PATH = "/v1/dashboard/billing/usage"
# The widest range one usage request may sum (OpenAI allowed 100 days).
MOST_DAYS = 100


def _usd(quota: int) -> float:
    """Dollars as the shape wants them (a JSON number), from exact quota."""
    return float(Decimal(quota) / QUOTA_PER_USD)


def _cents(quota: int) -> float:
    return float(Decimal(quota) * 100 / QUOTA_PER_USD)


def _bad_request(message: str) -> RelayError:
    return RelayError(400, message, code="invalid_request_error", retry=False)


async def subscription(request: Request) -> Response:
    try:
        key, _ = await authenticate(request)
        standing = await database.run(reports.key_standing, api_key_id=key.id)
    except RelayError as error:
        return errors.render(error, api=errors.OPENAI)
    limit = _usd(standing.spendable)
    access_until = int(standing.expires_at.timestamp()) if standing.expires_at else 0
    return Response.json(
        {
            "object": "billing_subscription",
            "has_payment_method": True,
            "soft_limit_usd": limit,
            "hard_limit_usd": limit,
            "system_hard_limit_usd": limit,
            "access_until": access_until,
        }
    )


def _dates(query: str) -> tuple[date, date]:
    """The requested [start, end) days; this month so far when none are given."""
    params = parse_qs(query)
    today = timezone.localdate()
    try:
        start = date.fromisoformat(params["start_date"][0]) if "start_date" in params else None
        end = date.fromisoformat(params["end_date"][0]) if "end_date" in params else None
    except ValueError:
        raise _bad_request("start_date and end_date must be dates: YYYY-MM-DD.") from None
    end = end or today + timedelta(days=1)
    start = start or min(today.replace(day=1), end - timedelta(days=1))
    if end <= start:
        raise _bad_request("end_date must be after start_date.")
    if (end - start).days > MOST_DAYS:
        raise _bad_request(f"The range may span at most {MOST_DAYS} days.")
    return start, end


def _moment(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


async def usage(request: Request) -> Response:
    try:
        start, end = _dates(request.query)
        key, _ = await authenticate(request)
        days = await database.run(
            reports.key_usage_by_day,
            api_key_id=key.id,
            start=_moment(start),
            end=_moment(end),
        )
    except RelayError as error:
        return errors.render(error, api=errors.OPENAI)
    by_day: dict[date, list[dict]] = {}
    for row in days:
        by_day.setdefault(row.day, []).append({"name": row.model, "cost": _cents(row.quota)})
    daily_costs = [
        {"timestamp": _moment(day).timestamp(), "line_items": items}
        for day, items in sorted(by_day.items())
    ]
    return Response.json(
        {
            "object": "list",
            "daily_costs": daily_costs,
            "total_usage": _cents(sum(row.quota for row in days)),
        }
    )


ENDPOINTS = {SUBSCRIPTION_PATH: subscription, USAGE_PATH: usage}


async def django_view(request) -> HttpResponse:
    """The same endpoints under ``/dashboard/billing/...`` (the path some clients call, with
    the base URL lacking ``/v1``), served through the site's URLs."""
    path = "/v1" + request.path.rstrip("/")
    endpoint = ENDPOINTS[path]
    if request.method != "GET":
        error = RelayError(405, f"{request.method} is not allowed here; use GET.", retry=False)
        answer = errors.render(error, api=errors.OPENAI)
    else:
        relayed = Request(
            method="GET",
            path=path,
            headers={name.lower(): value for name, value in request.headers.items()},
            peer=request.META.get("REMOTE_ADDR"),
            query=request.META.get("QUERY_STRING", ""),
        )
        answer = await endpoint(relayed)
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response
