"""The user site's URLs. Pages behind login send anonymous visitors to the login page."""

from django.urls import path

from accounts import views, views_key, views_logs
from relay import dashboard_billing

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard", views.dashboard, name="dashboard"),
    path("keys", views.keys, name="keys"),
    path("keys/<int:key_id>/reveal", views.key_reveal, name="key_reveal"),
    path("keys/<int:key_id>/toggle", views.key_toggle, name="key_toggle"),
    path("keys/<int:key_id>/edit", views.key_edit, name="key_edit"),
    path("keys/<int:key_id>/delete", views.key_delete, name="key_delete"),
    path("keys/<int:key_id>/chat", views.key_chat, name="key_chat"),
    path("keys/carve", views.sub_keys_create, name="sub_keys_create"),
    path("keys/<int:key_id>/top-up", views.sub_key_top_up, name="sub_key_top_up"),
    path("keys/<int:key_id>/revoke", views.sub_key_revoke, name="sub_key_revoke"),
    path("topup", views.topup, name="topup"),
    path("invite", views.invite, name="invite"),
    path("settings", views.settings_page, name="settings"),
    path("settings/tokens", views.token_create, name="token_create"),
    path("settings/low-balance", views.low_balance_threshold, name="low_balance_threshold"),
    path("settings/tokens/<int:token_id>/revoke", views.token_revoke, name="token_revoke"),
    path("pricing", views.pricing, name="pricing"),
    path("docs", views.docs, name="docs"),
    # Logs and the built-in chat (accounts/views_logs.py)
    path("logs", views_logs.logs_page, name="logs"),
    path("logs/totals", views_logs.logs_totals, name="logs_totals"),
    path("logs/export.csv", views_logs.logs_csv, name="logs_csv"),
    path("chat", views_logs.chat_page, name="chat"),
    path("chat/keys/<int:key_id>/reveal", views_logs.reveal_key, name="reveal_key"),
    # The key-holder's page: a key's balance and usage with the key alone (white-label).
    path("key", views_key.key_page, name="key_page"),
    # OpenAI's old billing endpoints without /v1, for clients whose base URL lacks it; the
    # /v1 paths are the relay's (relay.dashboard_billing serves both).
    path("dashboard/billing/subscription", dashboard_billing.django_view),
    path("dashboard/billing/usage", dashboard_billing.django_view),
]
