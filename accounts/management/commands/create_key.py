from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from accounts.models import User
from accounts.services import create_api_key


def split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


class Command(BaseCommand):
    help = "Create an API key for a user and print it (the only time it is shown in full)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="")
        limit = parser.add_mutually_exclusive_group()
        limit.add_argument("--quota", type=int, help="The key's own allowance, quota units.")
        limit.add_argument("--unlimited", action="store_true", help="No allowance (default).")
        parser.add_argument("--expires", help="ISO 8601 date-time; default: never.")
        parser.add_argument("--models", help="Comma-separated allow-list; default: all.")
        parser.add_argument("--ips", help="Comma-separated IPs/CIDRs; default: any.")

    def handle(self, *args, username, name, quota, unlimited, expires, models, ips, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        expires_at = None
        if expires:
            expires_at = parse_datetime(expires)
            if expires_at is None:
                raise CommandError(f"--expires {expires!r} is not an ISO 8601 date-time")
        _, key = create_api_key(
            user=user,
            name=name,
            quota=quota,
            expires_at=expires_at,
            allowed_models=split(models),
            allowed_ips=split(ips),
        )
        self.stdout.write(key)
