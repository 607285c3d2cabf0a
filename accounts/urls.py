"""The user site's URLs (the pages arrive with the user-site issue)."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.home, name="home"),
]
