"""``manage.py demo``: try Sluice with no upstream account."""

from django.core.management.base import BaseCommand
from django.db import transaction

from billing.models import ModelPrice
from relay.models import Channel
from relay.providers.demo import BASE_URL, MODELS


def split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@transaction.atomic
def set_up_demo(*, groups: list[str]) -> tuple[Channel, bool]:
    """The demo channel, enabled and serving the demo models to ``groups`` (as well as any it
    already served), and those models priced free; True when the channel is new."""
    channel = Channel.objects.filter(type=Channel.Type.DEMO).order_by("id").first()
    created = channel is None
    if channel is None:
        channel = Channel(type=Channel.Type.DEMO, name="demo", base_url=BASE_URL)
        channel.set_key("")  # nothing to authenticate to
    channel.served_models = sorted(set(channel.served_models or ()) | set(MODELS))
    channel.groups = sorted(set(channel.groups or ()) | set(groups))
    channel.status = Channel.Status.ENABLED
    channel.full_clean()
    channel.save()
    for model in MODELS:
        ModelPrice.objects.update_or_create(model=model, defaults={"is_free": True})
    return channel, created


class Command(BaseCommand):
    help = (
        "Add (or re-enable) the demo channel: models demo-echo (repeats the last user message) "
        "and demo-lorem, answered by Sluice itself, free of charge."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--groups", default="default", help="Comma-separated user groups it serves."
        )

    def handle(self, *args, groups, **options):
        channel, created = set_up_demo(groups=split(groups))
        self.stdout.write(
            f"{'added' if created else 'refreshed'} demo channel {channel.name} (id {channel.id}):"
            f" {', '.join(MODELS)}, free, for groups {', '.join(channel.groups)}\n"
            "A first call:\n"
            "  manage.py create_user NAME --password PASSWORD\n"
            "  manage.py grant NAME 1        # a free call still needs a balance above zero\n"
            "  manage.py create_key NAME     # prints the key once\n"
            "then any OpenAI client at http://127.0.0.1:8000/v1 with that key, model demo-echo."
        )
