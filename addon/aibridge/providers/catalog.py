"""Every provider API the bridge speaks. Adding one is a module and a line here."""

from __future__ import annotations

from aibridge.providers.anthropic_messages import ANTHROPIC
from aibridge.providers.base import ProviderApi, WireApi
from aibridge.providers.openai import OPENAI

PROVIDER_APIS: dict[str, ProviderApi] = {api.type: api for api in (OPENAI, ANTHROPIC)}
WIRE_APIS: dict[str, WireApi] = {w.name: w for p in PROVIDER_APIS.values() for w in p.apis}


def wire_api(name: object) -> WireApi | None:
    """The wire format recorded under `name` (flow metadata, records), if there is one."""
    return WIRE_APIS.get(name) if isinstance(name, str) else None
