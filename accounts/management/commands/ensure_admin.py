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
        chosen = os.environ.get("SLUICE_ADMIN_PASSWORD")
        password = chosen or secrets.token_urlsafe(12)
        create_user(username=username, password=password, is_staff=True)
        if chosen:
            # The operator knows it; a log of the start-up must not.
            self.stdout.write(f"admin login: {username} (password from SLUICE_ADMIN_PASSWORD)")
        else:
            self.stdout.write(f"admin login: {username} / {password} (shown once)")
