"""OpenAI and every OpenAI-compatible upstream (DeepSeek, Qwen, vLLM, other relays…)."""

from billing.pricing import TokenUsage
from relay.providers.base import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    Provider,
    UsageProblem,
    join_url,
    token_count,
    usage_part,
)

PATHS = {
    CHAT: "/v1/chat/completions",
    COMPLETIONS: "/v1/completions",
    EMBEDDINGS: "/v1/embeddings",
}


class OpenAIProvider(Provider):
    format = "openai"
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
    """OpenAI counts cached and audio input inside prompt_tokens, and reasoning and audio
    output inside completion_tokens: the parts are taken out of their whole to be priced apart.

    Reads the Chat Completions spelling and the Responses API one (input_tokens, ...). None
    when there is no usage; ``UsageProblem`` when a figure is not a token count or the parts
    exceed their whole.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise UsageProblem("usage is not an object", usage)
    prompt_field = "prompt_tokens" if usage.get("prompt_tokens") is not None else "input_tokens"
    output_field = (
        "completion_tokens" if usage.get("completion_tokens") is not None else "output_tokens"
    )
    prompt = token_count(usage, prompt_field, usage=usage)
    completion = token_count(usage, output_field, usage=usage)
    token_count(usage, "total_tokens", usage=usage)  # not used, but must be a count too
    prompt_details = usage_part(usage, "prompt_tokens_details", "input_tokens_details")
    output_details = usage_part(usage, "completion_tokens_details", "output_tokens_details")
    cached = token_count(prompt_details, "cached_tokens", usage=usage)
    audio_in = token_count(prompt_details, "audio_tokens", usage=usage)
    reasoning = token_count(output_details, "reasoning_tokens", usage=usage)
    audio_out = token_count(output_details, "audio_tokens", usage=usage)
    if cached + audio_in > prompt:
        raise UsageProblem("cached and audio input exceed the prompt", usage)
    if reasoning + audio_out > completion:
        raise UsageProblem("reasoning and audio output exceed the completion", usage)
    return TokenUsage(
        input_tokens=prompt - cached - audio_in,
        cached_input_tokens=cached,
        output_tokens=completion - audio_out,
        reasoning_tokens=reasoning,
        audio_input_tokens=audio_in,
        audio_output_tokens=audio_out,
    )
