"""The interface every provider adapter implements."""

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from billing.pricing import TokenUsage
from relay import upstream
from relay.formats.common import UsageProblem
from relay.operations import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, RESPONSES, Format, Operation

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "MESSAGES",
    "RESPONSES",
    "Provider",
    "UsageProblem",
]


class Provider:
    """An upstream API family: where calls go, how they authenticate, how usage is counted.

    ``format`` is the wire format of its chat-like calls ("openai" or "anthropic"): when a
    client speaks another format, the relay converts (relay.formats) before and after.
    ``native`` lists the operations the provider serves in its own format.
    """

    format: Format = "openai"
    native: frozenset[str] = frozenset()

    def format_for(self, operation: Operation) -> Format:
        """The format the upstream speaks for ``operation``: the client's own when it serves
        the operation natively (an OpenAI channel and the Responses API), else ``format``."""
        return operation.client_format if operation.name in self.native else self.format

    def url(self, base_url: str, operation: str) -> str:
        raise NotImplementedError

    def url_for(self, base_url: str, operation: str, *, model: str) -> str:
        """The URL of one call: ``url``, for the families whose URL does not name the model
        (Gemini's does: relay.providers.gemini)."""
        return self.url(base_url, operation)

    def upstream_operation(self, operation: str, *, stream: bool) -> str:
        """The operation the upstream performs for a client's ``operation``: the same one
        when the provider serves it natively, else its own chat-like counterpart."""
        if operation in self.native:
            return operation
        return MESSAGES if self.format == "anthropic" else CHAT

    # Where a whole answer keeps its usage ("usageMetadata" for Gemini).
    usage_field = "usage"

    def headers(self, api_key: str, client_headers: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def prepare(self, body: dict, *, operation: str, upstream_model: str) -> dict:
        """The request body to send: the client's (or converted) body with the upstream
        model name and whatever the relay needs (e.g. usage in streams)."""
        raise NotImplementedError

    def normalize_usage(self, usage: dict | None) -> TokenUsage | None:
        """The provider's usage object in Sluice's normalized form (None if absent).

        Raises ``UsageProblem`` when the upstream's figures cannot be trusted.
        """
        raise NotImplementedError

    def client(self) -> httpx.AsyncClient:
        """The HTTP client its calls are sent through: the shared upstream client
        (relay.upstream), unless the provider answers in this process (relay.providers.demo)."""
        return upstream.client()


# How a family's official SDK reads a base URL, which is what operators copy from a vendor's
# page: OpenAI's SDK appends the operation to a base that carries the API version, Anthropic's
# appends /v1 and then the operation.
Convention = Literal["openai", "anthropic"]
API_VERSION_PATH = "/v1"


def join_url(base_url: str, path: str, *, convention: Convention = "openai") -> str:
    """The URL of an operation on a channel's base URL, read the way the family's own SDK
    reads a base URL. ``path`` is the operation's path on the family's own host, version
    included (``/v1/chat/completions``, ``/v1/messages``).

    A base URL without a path gets ``path`` as it is (``https://api.openai.com`` ->
    ``https://api.openai.com/v1/chat/completions``), in either convention.

    OpenAI convention: a base URL with a path is the API's prefix, version included, and the
    operation follows it (``https://open.bigmodel.cn/api/paas/v4`` ->
    ``.../api/paas/v4/chat/completions``; likewise ``https://api.openai.com/v1``, Doubao's
    ``/api/v3``, Gemini's ``/v1beta/openai``).

    Anthropic convention: the whole ``path`` follows the base URL (a vendor's
    ``https://api.deepseek.com/anthropic`` -> ``.../anthropic/v1/messages``), except that a
    base already ending in ``/v1`` is not given a second one (``https://api.anthropic.com/v1``
    -> ``.../v1/messages``).

    A trailing slash on the base is ignored; a query string on it is kept.
    """
    parts = urlsplit(base_url)
    prefix = parts.path.rstrip("/")
    carries_version = prefix and (convention == "openai" or prefix.endswith(API_VERSION_PATH))
    if carries_version and path.startswith(API_VERSION_PATH + "/"):
        path = path[len(API_VERSION_PATH) :]
    return urlunsplit((parts.scheme, parts.netloc, prefix + path, parts.query, ""))
