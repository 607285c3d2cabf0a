"""OpenAI and every OpenAI-compatible upstream (DeepSeek, Qwen, vLLM, other relays…).

An OpenAI channel serves the Responses API natively: ``/v1/responses`` calls go to the
channel's own ``/v1/responses``, unconverted. A vendor that only has Chat Completions should
not be given the models clients call through the Responses API (it would answer 404); the
demo channel, which answers chat only, is served Responses calls converted to chat.

Moderations and rerank go to the channel's ``/v1/moderations`` and ``/v1/rerank``: a channel
serves them when it lists the model (``omni-moderation-latest``, ``jina-reranker-v2-...``).
"""

from billing.pricing import TokenUsage
from relay.formats.openai_chat import normalize_openai_usage
from relay.operations import (
    AUDIO_SPEECH,
    AUDIO_TRANSCRIPTIONS,
    AUDIO_TRANSLATIONS,
    IMAGES_EDITS,
    IMAGES_GENERATIONS,
    IMAGES_VARIATIONS,
    MODERATIONS,
    RERANK,
)
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, Provider, join_url

PATHS = {
    CHAT: "/v1/chat/completions",
    COMPLETIONS: "/v1/completions",
    EMBEDDINGS: "/v1/embeddings",
    RESPONSES: "/v1/responses",
    MODERATIONS: "/v1/moderations",
    # Jina's and the OpenAI-compatible servers' (SiliconFlow, vLLM, Xinference) rerank.
    RERANK: "/v1/rerank",
    # Images and audio (relay.media), as OpenAI serves them.
    IMAGES_GENERATIONS: "/v1/images/generations",
    IMAGES_EDITS: "/v1/images/edits",
    IMAGES_VARIATIONS: "/v1/images/variations",
    AUDIO_SPEECH: "/v1/audio/speech",
    AUDIO_TRANSCRIPTIONS: "/v1/audio/transcriptions",
    AUDIO_TRANSLATIONS: "/v1/audio/translations",
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
            # it asked itself (relay.formats.openai_chat drops it otherwise).
            options = dict(prepared.get("stream_options") or {})
            options["include_usage"] = True
            prepared["stream_options"] = options
        return prepared

    def normalize_usage(self, usage: dict | None) -> TokenUsage | None:
        return normalize_openai_usage(usage)
