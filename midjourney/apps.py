from django.apps import AppConfig


class MidjourneyConfig(AppConfig):
    """The midjourney-proxy API; its models and views arrive with their own issue."""

    name = "midjourney"
    default_auto_field = "django.db.models.BigAutoField"
