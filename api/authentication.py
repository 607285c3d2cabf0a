"""Who calls the REST API: a personal access token, or the site's own session.

``Authorization: Bearer slt-...`` is found by its HMAC (``accounts.tokens``, the one lookup
path), refused once revoked or when its user is inactive. Its ``last_used_at`` is written at
most once a minute per token, so a script polling the API does not turn every read into a
write. A session (the site's own JavaScript) goes through DRF's SessionAuthentication, which
enforces CSRF on unsafe methods; a token needs no CSRF token (a browser never sends it by
itself).
"""

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts.models import AccessToken
from accounts.tokens import TOKEN_PREFIX, find_access_token

TOUCH_EVERY = timedelta(minutes=1)


class AccessTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer slt-...``: a personal access token from the settings page."""

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None  # not ours: the session may still authenticate
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send one token: Authorization: Bearer slt-...")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid access token.") from None
        if not token.startswith(TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed(
                "The REST API takes a personal access token (slt-...) from the settings page, "
                "not an API key."
            )
        row = find_access_token(token)
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked access token.")
        now = timezone.now()
        if row.last_used_at is None or row.last_used_at < now - TOUCH_EVERY:
            AccessToken.objects.filter(id=row.id).filter(
                Q(last_used_at=None) | Q(last_used_at__lt=now - TOUCH_EVERY)
            ).update(last_used_at=now)
        return row.user, row

    def authenticate_header(self, request):
        # A 401 (not a 403) when no credentials came, with the scheme to use.
        return 'Bearer realm="api"'


class AccessTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.AccessTokenAuthentication"
    name = "accessToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal access token (slt-...) from the site's settings page.",
        }
