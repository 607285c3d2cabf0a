"""The user site's URLs. Pages behind login answer anonymous visitors with the login page."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard", views.dashboard, name="dashboard"),
    path("keys", views.keys, name="keys"),
    path("topup", views.topup, name="topup"),
    path("invite", views.invite, name="invite"),
    path("settings", views.settings_page, name="settings"),
    path("pricing", views.pricing, name="pricing"),
    path("docs", views.docs, name="docs"),
]
