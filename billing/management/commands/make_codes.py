import os
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing import redemption


def moment(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not an ISO 8601 date and time") from None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


class Command(BaseCommand):
    help = (
        "Make a batch of redemption codes and print them once as CSV (or write them to --out). "
        "Only their hashes are kept: save the output."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--quota", type=int, required=True, help="Per code: 500000 = $1.")
        parser.add_argument("--name", default="")
        parser.add_argument("--expires", type=moment, help="ISO 8601; the codes' expiry.")
        parser.add_argument("--out", help="A CSV file to create (readable by its owner only).")

    def handle(self, *args, count, quota, name, expires, out, **options):
        if out and os.path.exists(out):
            raise CommandError(f"{out} exists: the codes are written to a new file only")
        try:
            batch, codes = redemption.make_batch(
                name=name or f"codes {timezone.now():%Y-%m-%d %H:%M}",
                quota=quota,
                count=count,
                expires_at=expires,
            )
        except ValueError as problem:
            raise CommandError(str(problem)) from None
        text = redemption.codes_csv(batch, codes)
        if not out:
            self.stdout.write(text, ending="")
            return
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", newline="") as file:
            file.write(text)
        self.stderr.write(f"{count} codes of batch {batch.id} ({batch.name}) written to {out}")
