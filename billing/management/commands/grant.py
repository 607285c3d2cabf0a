from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from billing import services


class Command(BaseCommand):
    help = "Add quota to a user's balance (negative to take), with its ledger row."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("quota", type=int, help="Quota units: 500000 = $1.")
        parser.add_argument("--note", default="")

    def handle(self, *args, username, quota, note, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        services.grant(user=user, amount=quota, note=note or "granted by command")
        self.stdout.write(f"{username}: balance {user.quota}")
