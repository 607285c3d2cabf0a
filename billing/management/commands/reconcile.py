import sys

from django.core.management.base import BaseCommand

from billing.reconcile import reconcile


class Command(BaseCommand):
    help = "Check balance + open holds == ledger - consumption for every user and key."

    def handle(self, *args, **options):
        problems = reconcile()
        for problem in problems:
            self.stdout.write(str(problem))
        if problems:
            self.stderr.write(f"{len(problems)} account(s) do not reconcile")
            sys.exit(1)
        self.stdout.write("all accounts reconcile")
