"""Anthropic's Messages API."""

from billing.pricing import TokenUsage
from relay.providers.base import MESSAGES, Provider, UsageProblem, join_url, token_count, usage_part

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


def normalize_anthropic_usage(usage: dict | None) -> TokenUsage | None:
    """Anthropic counts cache reads and writes apart from input_tokens: each is billed.

    Cache writes are split into 5-minute and 1-hour ones when ``cache_creation`` gives the
    breakdown (which is then trusted), otherwise all of them are 5-minute writes. None when
    there is no usage; ``UsageProblem`` when a figure is not a token count.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise UsageProblem("usage is not an object", usage)
    cache_writes = token_count(usage, "cache_creation_input_tokens", usage=usage)
    breakdown = usage_part(usage, "cache_creation")
    if breakdown:
        cache_writes = token_count(breakdown, "ephemeral_5m_input_tokens", usage=usage)
        cache_writes_1h = token_count(breakdown, "ephemeral_1h_input_tokens", usage=usage)
    else:
        cache_writes_1h = 0
    server_tools = usage_part(usage, "server_tool_use")
    return TokenUsage(
        input_tokens=token_count(usage, "input_tokens", usage=usage),
        cached_input_tokens=token_count(usage, "cache_read_input_tokens", usage=usage),
        cache_write_tokens=cache_writes,
        cache_write_1h_tokens=cache_writes_1h,
        output_tokens=token_count(usage, "output_tokens", usage=usage),
        web_search_calls=token_count(server_tools, "web_search_requests", usage=usage),
    )
