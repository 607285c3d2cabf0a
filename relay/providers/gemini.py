"""Google's Gemini API (generateContent), with an API key from Google AI Studio.

The model is in the URL, and so is streaming: ``{base}/v1beta/models/{model}:generateContent``,
or ``:streamGenerateContent?alt=sse`` for a stream (the relay always asks for SSE, whatever
framing its own client wants). The key travels in the ``x-goog-api-key`` header, never in the
URL, so no URL that may reach a log carries it. A channel's base URL is the host
(``https://generativelanguage.googleapis.com``) or the host with its version
(``.../v1beta``).
"""

from urllib.parse import quote, urlsplit, urlunsplit

from billing.pricing import TokenUsage
from relay.formats.gemini import normalize_gemini_usage, without_url_fields
from relay.operations import GENERATE_CONTENT, STREAM_GENERATE_CONTENT
from relay.providers.base import Provider

API_VERSION = "/v1beta"
METHODS = {
    GENERATE_CONTENT: ":generateContent",
    STREAM_GENERATE_CONTENT: ":streamGenerateContent?alt=sse",
}


class GeminiProvider(Provider):
    format = "gemini"
    native = frozenset(METHODS)
    usage_field = "usageMetadata"

    def url(self, base_url: str, operation: str) -> str:
        raise TypeError("a Gemini URL names its model: use url_for")

    def url_for(self, base_url: str, operation: str, *, model: str) -> str:
        parts = urlsplit(base_url)
        prefix = parts.path.rstrip("/")
        if not prefix.endswith(("/v1beta", "/v1", "/v1alpha")):
            prefix += API_VERSION
        method, _, query = METHODS[operation].partition("?")
        path = f"{prefix}/models/{quote(model.removeprefix('models/'), safe='')}{method}"
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))

    def upstream_operation(self, operation: str, *, stream: bool) -> str:
        if operation in self.native:
            return operation
        return STREAM_GENERATE_CONTENT if stream else GENERATE_CONTENT

    def headers(self, api_key: str, client_headers: dict[str, str]) -> dict[str, str]:
        return {"x-goog-api-key": api_key, "Content-Type": "application/json"}

    def prepare(self, body: dict, *, operation: str, upstream_model: str) -> dict:
        # The model and the stream are in the URL; Google refuses fields it does not know.
        return without_url_fields(body)

    def normalize_usage(self, usage: dict | None) -> TokenUsage | None:
        return normalize_gemini_usage(usage)
