"""/api/: the REST API, its OpenAPI 3 schema and its docs page (served from this site, no
CDN)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import views

urlpatterns = [
    path("profile", views.ProfileView.as_view(), name="api-profile"),
    path("balance", views.BalanceView.as_view(), name="api-balance"),
    path("redeem", views.RedeemView.as_view(), name="api-redeem"),
    path("pricing", views.PricingView.as_view(), name="api-pricing"),
    path("tiers", views.TiersView.as_view(), name="api-tiers"),
    path("tiers/<int:tier_id>/buy", views.BuyTierView.as_view(), name="api-tier-buy"),
    path("keys", views.KeysView.as_view(), name="api-keys"),
    path("keys/<int:key_id>", views.KeyView.as_view(), name="api-key"),
    path("keys/<int:key_id>/top-up", views.KeyTopUpView.as_view(), name="api-key-top-up"),
    path("keys/<int:key_id>/revoke", views.KeyRevokeView.as_view(), name="api-key-revoke"),
    path("logs", views.LogsView.as_view(), name="api-logs"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
