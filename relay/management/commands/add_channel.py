import json

from django.core.management.base import BaseCommand, CommandError

from relay.models import Channel


def split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


class Command(BaseCommand):
    help = "Add an upstream channel (its key is stored encrypted)."

    def add_arguments(self, parser):
        parser.add_argument("--type", choices=Channel.Type.values, default=Channel.Type.OPENAI)
        parser.add_argument("--name", required=True)
        parser.add_argument("--base-url", required=True)
        parser.add_argument("--key", required=True)
        parser.add_argument("--models", required=True, help="Comma-separated.")
        parser.add_argument("--priority", type=int, default=0)
        parser.add_argument("--weight", type=int, default=1)
        parser.add_argument("--groups", default="default", help="Comma-separated.")
        parser.add_argument("--mapping", default="{}", help='JSON, e.g. {"gpt-4o": "gpt-4o-x"}.')

    def handle(self, *args, **options):
        try:
            mapping = json.loads(options["mapping"])
        except ValueError:
            raise CommandError("--mapping must be a JSON object") from None
        if not isinstance(mapping, dict):
            raise CommandError("--mapping must be a JSON object")
        channel = Channel(
            type=options["type"],
            name=options["name"],
            base_url=options["base_url"],
            served_models=split(options["models"]),
            model_mapping=mapping,
            groups=split(options["groups"]),
            priority=options["priority"],
            weight=options["weight"],
        )
        channel.set_key(options["key"])
        channel.full_clean()
        channel.save()
        self.stdout.write(f"added channel {channel.name} (id {channel.id})")
