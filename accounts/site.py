"""What the user site's pages read: site options, the base URL, a user's figures.

Reads only; writes go through ``accounts.services`` and ``billing.services``.
"""

from django.conf import settings

from accounts.models import SiteSettings


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
