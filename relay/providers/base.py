"""The interface every provider adapter implements, and the checks their usage readers share."""

import math
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from billing.pricing import TokenUsage
from relay import upstream
from relay.operations import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, Format

__all__ = ["CHAT", "COMPLETIONS", "EMBEDDINGS", "MESSAGES", "Provider", "UsageProblem"]


class Provider:
    """An upstream API family: where calls go, how they authenticate, how usage is counted.

    ``format`` is the wire format of its chat-like calls ("openai" or "anthropic"): when a
    client speaks another format, the relay converts (relay.conversions) before and after.
    ``native`` lists the operations the provider serves in its own format.
    """

    format: Format = "openai"
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


# No call comes near a trillion tokens: a figure this large is a broken or hostile upstream.
MAX_TOKEN_COUNT = 10**12

# Bounds of the copy of a rejected usage object kept on its usage row.
RAW_STRING_CHARS = 64
RAW_DEPTH = 3
RAW_ENTRIES = 40


class UsageProblem(ValueError):
    """The upstream's usage cannot be trusted: a figure that is not a token count, or parts
    that add up to more than their whole.

    ``raw`` is the usage as received, made JSON-safe and small, for the usage row's flag.
    """

    def __init__(self, reason: str, usage: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw: dict = raw_usage(usage)


def token_count(container: dict, field: str, *, usage: object) -> int:
    """``container[field]`` as a token count: absent or null is 0, an integral float is
    accepted, anything else (a bool, a string, a negative or absurd number) is a problem."""
    value = container.get(field)
    if value is None:
        return 0
    if type(value) is int:  # type(), not isinstance(): True is an int to Python
        count = value
    elif type(value) is float and value.is_integer():
        count = int(value)
    else:
        raise UsageProblem(f"{field} is not a token count", usage)
    if not 0 <= count < MAX_TOKEN_COUNT:
        raise UsageProblem(f"{field} is out of range", usage)
    return count


def usage_part(usage: dict, *fields: str) -> dict:
    """The first of ``fields`` that ``usage`` holds (a nested details object), or {}."""
    for field in fields:
        value = usage.get(field)
        if value is not None:
            if not isinstance(value, dict):
                raise UsageProblem(f"{field} is not an object", usage)
            return value
    return {}


def raw_usage(usage: object) -> dict:
    """A JSON-safe, bounded copy of what the upstream sent as usage: strings cut to 64
    characters, nothing deeper than 3 levels, at most 40 entries in all."""
    budget = [RAW_ENTRIES]
    if isinstance(usage, dict):
        return _small_object(usage, 1, budget)
    return {"usage": _small_value(usage, 1, budget)}


def _small_object(value: dict, depth: int, budget: list[int]) -> dict:
    small = {}
    for key, item in value.items():
        if budget[0] <= 0:
            break
        if isinstance(item, dict | list) and depth >= RAW_DEPTH:
            continue  # nesting deeper than the kept levels is dropped
        budget[0] -= 1
        small[str(key)[:RAW_STRING_CHARS]] = _small_value(item, depth + 1, budget)
    return small


def _small_value(value: object, depth: int, budget: list[int]) -> object:
    if isinstance(value, dict):
        return _small_object(value, depth, budget)
    if isinstance(value, list):
        items = []
        for item in value:
            if budget[0] <= 0:
                break
            if isinstance(item, dict | list) and depth >= RAW_DEPTH:
                continue
            budget[0] -= 1
            items.append(_small_value(item, depth + 1, budget))
        return items
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Beyond 64 bits some JSON columns refuse the number (and str() of a huge one raises).
        return value if abs(value) < 2**63 else f"{value.bit_length()}-bit integer"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN and Infinity are not JSON
    return _cut(str(value))


def _cut(text: str) -> str:
    return text[:RAW_STRING_CHARS]
