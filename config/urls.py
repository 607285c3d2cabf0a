"""Site URLs; /v1 is routed here too but served by config.asgi.RelayHandler (no middleware)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("v1/", include("relay.urls")),
    path("", include("accounts.urls")),
]
