from django.core.management.base import BaseCommand

from config import shared_secrets


class Command(BaseCommand):
    help = (
        "Print fresh SECRET_KEY, KEY_LOOKUP_SECRET and KEY_ENCRYPTION_KEYS as NAME=value lines, "
        "to put into the environment of every node (runs even before they are set)."
    )
    requires_system_checks = []

    def handle(self, *args, **options):
        for name in shared_secrets.NAMES:
            self.stdout.write(f"{name}={shared_secrets.fresh(name)}")
        # Apart from the lines, so that they can be redirected into an environment file.
        self.stderr.write(
            "Set these once per site, the same on every node. Replacing them later: a new "
            "KEY_LOOKUP_SECRET invalidates every API key; prepend a new encryption key to "
            "KEY_ENCRYPTION_KEYS (comma-separated) instead of replacing the old one."
        )
