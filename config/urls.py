"""Site URLs. The relay's /v1 paths are not here: config.asgi hands them to relay.http."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),  # set_language: the language switch
    path("", include("accounts.urls")),
]
