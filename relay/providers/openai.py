"""OpenAI and every OpenAI-compatible upstream (DeepSeek, Qwen, vLLM, other relays…)."""

from billing.pricing import TokenUsage
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, Provider, join_url

PATHS = {
    CHAT: "/v1/chat/completions",
    COMPLETIONS: "/v1/completions",
    EMBEDDINGS: "/v1/embeddings",
}


class OpenAIProvider(Provider):
    dialect = "openai"
    native = frozenset(PATHS)

    def url(self, base_url: str, operation: str) -> str:
        return join_url(base_url, PATHS[operation])

    def headers(self, api_key: str, client_headers: dict[str, str]) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        if "openai-beta" in client_headers:
            headers["OpenAI-Beta"] = client_headers["openai-beta"]
        return headers

    def prepare(self, body: dict, *, operation: str, upstream_model: str) -> dict:
        prepared = dict(body, model=upstream_model)
        if operation in (CHAT, COMPLETIONS) and prepared.get("stream"):
            # Usage arrives only if asked for; the client still sees the usage chunk only if
            # it asked itself (relay.streams drops it otherwise).
            options = dict(prepared.get("stream_options") or {})
            options["include_usage"] = True
            prepared["stream_options"] = options
        return prepared

    def normalize_usage(self, usage: dict | None) -> TokenUsage | None:
        return normalize_openai_usage(usage)


def normalize_openai_usage(usage: dict | None) -> TokenUsage | None:
    """OpenAI counts cached input inside prompt_tokens and reasoning inside completion_tokens."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    output = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    output_details = (
        usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    )
    cached = int(prompt_details.get("cached_tokens") or 0)
    return TokenUsage(
        input_tokens=max(prompt - cached, 0),
        cached_input_tokens=cached,
        output_tokens=output,
        reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
    )
