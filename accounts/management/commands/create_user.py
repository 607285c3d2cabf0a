from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import create_user


class Command(BaseCommand):
    help = "Create a user (no credit: use `grant` for that)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password")
        parser.add_argument("--email", default="")
        parser.add_argument("--group", default="default")
        parser.add_argument("--staff", action="store_true", help="An operator (superuser).")

    def handle(self, *args, username, password, email, group, staff, **options):
        if User.objects.filter(username=username).exists():
            raise CommandError(f"user {username!r} already exists")
        user = create_user(
            username=username, password=password, email=email, group=group, is_staff=staff
        )
        self.stdout.write(f"created user {user.username} (id {user.id}, group {user.group})")
