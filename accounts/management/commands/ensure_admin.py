import os
import secrets

from django.core.management.base import BaseCommand

from accounts.models import User
from accounts.services import create_user


class Command(BaseCommand):
    help = "Make sure an operator account exists (SLUICE_ADMIN_USER / SLUICE_ADMIN_PASSWORD)."

    def handle(self, *args, **options):
        username = os.environ.get("SLUICE_ADMIN_USER", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"admin login: {username} (password unchanged)")
            return
        password = os.environ.get("SLUICE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        create_user(username=username, password=password, is_staff=True)
        self.stdout.write(f"admin login: {username} / {password}")
