"""Provider adapters, one file per upstream API family, all on the ``Provider`` interface.

A new family (Azure, Gemini, an OpenAI-compatible vendor with quirks) is one new module with
one ``Provider`` subclass, registered in ``PROVIDERS`` under its channel type.
"""

from relay.providers.anthropic import AnthropicProvider
from relay.providers.base import Provider
from relay.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
}


def provider_for(channel_type: str) -> Provider:
    return PROVIDERS[channel_type]


__all__ = ["PROVIDERS", "Provider", "provider_for"]
