"""Template helpers of the user site: its options and its base URL."""

from django import template

from accounts import site

register = template.Library()


@register.simple_tag(takes_context=True)
def site_settings(context):
    """``{% site_settings as site %}``: the operator's options (one query per request)."""
    return site.site_settings(context.get("request"))


@register.simple_tag(takes_context=True)
def site_root(context) -> str:
    """``https://host`` of this site (``SITE_URL`` or the request's host)."""
    return site.site_root(context["request"])


@register.simple_tag(takes_context=True)
def api_base_url(context) -> str:
    """``https://host/v1``."""
    return site.api_base_url(context["request"])
