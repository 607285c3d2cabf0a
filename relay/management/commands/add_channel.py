import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from relay.models import Channel
from relay.providers.demo import BASE_URL as DEMO_BASE_URL


def split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


class Command(BaseCommand):
    help = "Add an upstream channel (its key is stored encrypted)."

    def add_arguments(self, parser):
        parser.add_argument("--type", choices=Channel.Type.values, default=Channel.Type.OPENAI)
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--base-url",
            help="As the vendor gives it for its SDK: https://api.openai.com/v1, "
            "https://open.bigmodel.cn/api/paas/v4, https://api.anthropic.com "
            "(not for --type demo).",
        )
        parser.add_argument("--key", help="The upstream key (not for --type demo).")
        parser.add_argument("--models", required=True, help="Comma-separated.")
        parser.add_argument("--priority", type=int, default=0)
        parser.add_argument("--weight", type=int, default=1)
        parser.add_argument("--groups", default="default", help="Comma-separated.")
        parser.add_argument("--mapping", default="{}", help='JSON, e.g. {"gpt-4o": "gpt-4o-x"}.')

    def handle(self, *args, **options):
        if options["type"] == Channel.Type.DEMO:
            options["base_url"] = options["base_url"] or DEMO_BASE_URL
            options["key"] = options["key"] or ""
        for option in ("base_url", "key"):
            if options[option] is None:
                raise CommandError(f"--{option.replace('_', '-')} is required")
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
        try:
            channel.full_clean()
        except ValidationError as problem:
            raise CommandError(" ".join(problem.messages)) from None
        channel.save()
        self.stdout.write(f"added channel {channel.name} (id {channel.id})")
