"""Provider families, the registry of configured providers, and request/response parsing."""

from aibridge.providers.families import ANTHROPIC, OPENAI, Family
from aibridge.providers.registry import (
    BRIDGED,
    PASSTHROUGH,
    UNKNOWN,
    UNTOUCHED,
    Provider,
    ProviderRegistry,
    RouteMatch,
    Upstream,
    build_registry,
)

__all__ = [
    "ANTHROPIC",
    "BRIDGED",
    "OPENAI",
    "PASSTHROUGH",
    "UNKNOWN",
    "UNTOUCHED",
    "Family",
    "Provider",
    "ProviderRegistry",
    "RouteMatch",
    "Upstream",
    "build_registry",
]
