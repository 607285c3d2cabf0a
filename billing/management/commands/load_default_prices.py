from django.core.management.base import BaseCommand

from billing.default_prices import load_default_prices
from billing.models import ModelPrice


class Command(BaseCommand):
    help = "Add the shipped list prices for models that have no price yet."

    def handle(self, *args, **options):
        created = load_default_prices(ModelPrice)
        self.stdout.write(f"added {created} price(s)")
