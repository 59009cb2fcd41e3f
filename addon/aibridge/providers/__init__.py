"""Provider APIs (one module per wire format, behind `base.WireApi` / `base.ProviderApi`) and the
registry of configured providers."""

from aibridge.providers.registry import (
    BRIDGED,
    DENIED,
    INVALID,
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
    "BRIDGED",
    "DENIED",
    "INVALID",
    "PASSTHROUGH",
    "UNKNOWN",
    "UNTOUCHED",
    "Provider",
    "ProviderRegistry",
    "RouteMatch",
    "Upstream",
    "build_registry",
]
