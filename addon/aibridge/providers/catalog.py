"""Every provider API the bridge speaks. Adding one is a module and a line here."""

from __future__ import annotations

from aibridge.providers.anthropic_messages import ANTHROPIC
from aibridge.providers.azure import AZURE
from aibridge.providers.base import ProviderApi, WireApi
from aibridge.providers.bedrock import BEDROCK
from aibridge.providers.copilot import COPILOT
from aibridge.providers.gemini import GEMINI
from aibridge.providers.openai import OPENAI

PROVIDER_APIS: dict[str, ProviderApi] = {
    api.type: api for api in (OPENAI, ANTHROPIC, BEDROCK, GEMINI, AZURE, COPILOT)}
# By route kind. Azure's and Copilot's variants of OpenAI's formats share their names ("chat",
# "responses"): the first registered, OpenAI's own, stands for the format.
WIRE_APIS: dict[str, WireApi] = {}
for _provider in PROVIDER_APIS.values():
    for _wire in _provider.apis:
        WIRE_APIS.setdefault(_wire.name, _wire)


def wire_api(name: object) -> WireApi | None:
    """The wire format recorded under `name` (flow metadata, records), if there is one."""
    return WIRE_APIS.get(name) if isinstance(name, str) else None
