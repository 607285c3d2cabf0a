"""The user site's pages: thin views that read through accounts.site and write through services."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


def home(request):
    return render(request, "home.html")


@login_required
def dashboard(request):
    return render(request, "site/dashboard.html")


@login_required
def keys(request):
    return render(request, "site/keys.html")


@login_required
def topup(request):
    return render(request, "site/topup.html")


@login_required
def invite(request):
    return render(request, "site/invite.html")


@login_required
def settings_page(request):
    return render(request, "site/settings.html")


def pricing(request):
    return render(request, "site/pricing.html")


def docs(request):
    return render(request, "site/docs.html")
