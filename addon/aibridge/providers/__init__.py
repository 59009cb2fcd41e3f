"""Provider APIs (one module per wire format, behind `base.WireApi` / `base.ProviderApi`) and the
registry of configured providers."""

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
    "BRIDGED",
    "PASSTHROUGH",
    "UNKNOWN",
    "UNTOUCHED",
    "Provider",
    "ProviderRegistry",
    "RouteMatch",
    "Upstream",
    "build_registry",
]
