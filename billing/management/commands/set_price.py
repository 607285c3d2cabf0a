from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from billing.models import ModelPrice


def ratio(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"{value!r} is not a number") from None
    if number < 0:
        raise CommandError("ratios cannot be negative")
    return number


class Command(BaseCommand):
    help = "Set a model's price (ratio 1 = $0.002 per 1K tokens = 1 quota per token)."

    def add_arguments(self, parser):
        parser.add_argument("model")
        parser.add_argument("--ratio", type=ratio, required=True)
        parser.add_argument("--completion-ratio", type=ratio)
        parser.add_argument("--cache-read-ratio", type=ratio)
        parser.add_argument("--cache-write-ratio", type=ratio)
        parser.add_argument("--per-call", type=int, help="Fixed quota per call.")
        parser.add_argument("--free", action="store_true", help="Serve without charge.")

    def handle(self, *args, model, **options):
        values = {
            "model_ratio": options["ratio"],
            "per_call_quota": options["per_call"],
            "is_free": options["free"],
        }
        for field in ("completion_ratio", "cache_read_ratio", "cache_write_ratio"):
            if options[field] is not None:
                values[field] = options[field]
        price, created = ModelPrice.objects.update_or_create(model=model, defaults=values)
        self.stdout.write(f"{'created' if created else 'updated'} price of {model}")
