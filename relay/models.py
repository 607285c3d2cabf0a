"""Channels: the upstream accounts Sluice relays to."""

from django.db import models

from accounts import secrets as key_secrets


class Channel(models.Model):
    """An upstream account: where to send calls, with which key, for which models and groups."""

    class Type(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    type = models.CharField(max_length=16, choices=Type.choices, default=Type.OPENAI)
    name = models.CharField(max_length=100)
    base_url = models.URLField(help_text="e.g. https://api.openai.com (without /v1).")
    encrypted_key = models.TextField(editable=False)
    served_models = models.JSONField(default=list, help_text="Model names this channel serves.")
    model_mapping = models.JSONField(
        default=dict, blank=True, help_text='Asked name -> upstream name, e.g. {"gpt-4o": "x"}.'
    )
    groups = models.JSONField(default=list, help_text="User groups it serves.")
    priority = models.IntegerField(default=0, help_text="Higher is tried first.")
    weight = models.PositiveIntegerField(default=1, help_text="Share among equal priority.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.name} ({self.type})"

    def set_key(self, key: str) -> None:
        self.encrypted_key = key_secrets.encrypt(key)

    def api_key(self) -> str:
        return key_secrets.decrypt(self.encrypted_key)
