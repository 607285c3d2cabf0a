"""Provider adapters, one file per upstream API family, all on the ``Provider`` interface.

A new family (Azure, Gemini, an OpenAI-compatible vendor with quirks) is one new module with
one ``Provider`` subclass, registered in ``PROVIDERS`` under its channel type.
"""

from collections.abc import Iterable

from relay.providers.anthropic import AnthropicProvider
from relay.providers.base import Provider
from relay.providers.demo import DemoProvider
from relay.providers.gemini import GeminiProvider
from relay.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "demo": DemoProvider(),
    "gemini": GeminiProvider(),
}


def provider_for(channel_type: str) -> Provider:
    return PROVIDERS[channel_type]


def channel_types_for(formats: Iterable[str]) -> frozenset[str]:
    """The channel types whose provider speaks one of ``formats`` (a demo channel speaks
    OpenAI's): the channels that can serve an operation those formats serve."""
    wanted = frozenset(formats)
    return frozenset(kind for kind, provider in PROVIDERS.items() if provider.format in wanted)


__all__ = ["PROVIDERS", "Provider", "channel_types_for", "provider_for"]
