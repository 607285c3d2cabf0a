"""Channels: the upstream accounts Sluice relays to."""

from django.core.exceptions import ValidationError
from django.db import models

from accounts import secrets as key_secrets

BASE_URL_HELP = (
    "OpenAI-compatible: the base URL the vendor gives for OpenAI's SDK, e.g. "
    "https://api.openai.com/v1, https://open.bigmodel.cn/api/paas/v4 or "
    "https://generativelanguage.googleapis.com/v1beta/openai: a URL with a path is used as "
    "given and /chat/completions (etc.) follows it; a bare host gets /v1 first. "
    "Anthropic: the base URL for Anthropic's SDK, e.g. https://api.anthropic.com or "
    "https://api.deepseek.com/anthropic: /v1/messages follows it (/messages if it ends in /v1). "
    "Gemini: https://generativelanguage.googleapis.com (or .../v1beta): "
    "/v1beta/models/{model}:generateContent follows it. "
    "Demo: not used."
)
# Paths that end an endpoint's URL, never a base URL's: a URL ending so was pasted whole.
ENDPOINT_PATHS = ("/chat/completions", "/completions", "/embeddings", "/messages")


class Channel(models.Model):
    """An upstream account: where to send calls, with which key, for which models and groups."""

    class Type(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        GEMINI = "gemini", "Google Gemini (generateContent)"
        DEMO = "demo", "Demo (answers locally, no upstream)"

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    type = models.CharField(max_length=16, choices=Type.choices, default=Type.OPENAI)
    name = models.CharField(max_length=100)
    base_url = models.URLField(help_text=BASE_URL_HELP)
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

    def clean(self):
        path = self.base_url.split("?", 1)[0].rstrip("/")
        if self.type != self.Type.DEMO and path.endswith(ENDPOINT_PATHS):
            raise ValidationError(
                {"base_url": "Give the base URL, without the endpoint's path (e.g. .../v1)."}
            )

    @property
    def is_demo(self) -> bool:
        """Answered by Sluice's built-in demo models, not by an upstream."""
        return self.type == self.Type.DEMO

    def set_key(self, key: str) -> None:
        self.encrypted_key = key_secrets.encrypt(key)

    def api_key(self) -> str:
        return key_secrets.decrypt(self.encrypted_key)
