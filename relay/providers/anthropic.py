"""Anthropic's Messages API."""

from billing.pricing import TokenUsage
from relay.formats.anthropic_messages import normalize_anthropic_usage
from relay.providers.base import MESSAGES, Provider, join_url

API_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    format = "anthropic"
    native = frozenset({MESSAGES})

    def url(self, base_url: str, operation: str) -> str:
        return join_url(base_url, "/v1/messages", convention="anthropic")

    def headers(self, api_key: str, client_headers: dict[str, str]) -> dict[str, str]:
        headers = {
            "x-api-key": api_key,
            "anthropic-version": client_headers.get("anthropic-version", API_VERSION),
            "Content-Type": "application/json",
        }
        if "anthropic-beta" in client_headers:
            headers["anthropic-beta"] = client_headers["anthropic-beta"]
        return headers

    def prepare(self, body: dict, *, operation: str, upstream_model: str) -> dict:
        return dict(body, model=upstream_model)

    def normalize_usage(self, usage: dict | None) -> TokenUsage | None:
        return normalize_anthropic_usage(usage)
