"""Site URLs. The relay's /v1 paths are not here: config.asgi hands them to relay.http."""

from allauth.account.views import signup
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("api/", include("api.urls")),  # the REST API (api/urls.py)
    # The sign-up page under the address invite links use: /register?aff=CODE.
    path("register", signup, name="register"),
    path("i18n/", include("django.conf.urls.i18n")),  # set_language: the language switch
    path("", include("accounts.urls")),
]

# allauth answers a login or sign-up over its rate limit with this page (a 429 that says so).
handler429 = "accounts.adapters.too_many_attempts"
