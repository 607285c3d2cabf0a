"""The interface every provider adapter implements."""

from billing.pricing import TokenUsage

# Operations a client can ask for, named for the API shape they arrive in.
CHAT = "chat"  # OpenAI chat completions
COMPLETIONS = "completions"  # OpenAI legacy completions
EMBEDDINGS = "embeddings"
MESSAGES = "messages"  # Anthropic messages


class Provider:
    """An upstream API family: where calls go, how they authenticate, how usage is counted.

    ``dialect`` is the wire format of its chat-like calls ("openai" or "anthropic"): when a
    client speaks another dialect, the relay converts (relay.conversions) before and after.
    ``native`` lists the operations the provider serves in its own format.
    """

    dialect: str = ""
    native: frozenset[str] = frozenset()

    def url(self, base_url: str, operation: str) -> str:
        raise NotImplementedError

    def headers(self, api_key: str, client_headers: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def prepare(self, body: dict, *, operation: str, upstream_model: str) -> dict:
        """The request body to send: the client's (or converted) body with the upstream
        model name and whatever the relay needs (e.g. usage in streams)."""
        raise NotImplementedError

    def normalize_usage(self, usage: dict | None) -> TokenUsage | None:
        """The provider's usage object in Sluice's normalized form (None if absent)."""
        raise NotImplementedError


def join_url(base_url: str, path: str) -> str:
    """Base URL plus an API path; a base given with a trailing /v1 is accepted as well."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and path.startswith("/v1/"):
        base = base[: -len("/v1")]
    return base + path
