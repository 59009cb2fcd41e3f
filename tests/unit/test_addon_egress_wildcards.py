"""Egress for providers without `upstream`: a request goes to the host it was decrypted for. A
host the provider names exactly is trusted like a configured upstream; one its wildcard matched
is resolved and checked like any other (nobody vouched for the names under a wildcard)."""

from __future__ import annotations

import pytest

from aibridge.access import egress
from tests.unit.conftest import BASE_CONFIG
from tests.unit.test_addon_egress import server_hook

RESOLVES = {"contoso.openai.azure.com": "20.42.0.1", "sneaky.openai.azure.com": "10.0.0.9",
            "api.business.githubcopilot.com": "140.82.112.21"}
CONFIG = BASE_CONFIG + """
[providers.azure]
enabled = true
[providers.copilot]
enabled = true
"""


@pytest.fixture
def lookups(monkeypatch):
    seen: list[str] = []
    real = egress.resolve_allowed

    async def resolve(host, port, allowed):
        seen.append(host)
        return await real(RESOLVES.get(host, host), port, allowed)

    monkeypatch.setattr(egress, "resolve_allowed", resolve)
    return seen


async def test_a_host_the_provider_names_is_trusted_like_an_upstream(make_bridge, lookups):
    bridge = make_bridge(CONFIG)
    client = await bridge.tunnel("api.business.githubcopilot.com")
    data = server_hook(client, "api.business.githubcopilot.com", 443)
    await bridge.hook("server_connect", data)
    assert data.server.error is None and lookups == []


async def test_a_wildcard_host_is_resolved_and_checked(make_bridge, lookups):
    bridge = make_bridge(CONFIG)
    client = await bridge.tunnel("contoso.openai.azure.com")
    data = server_hook(client, "contoso.openai.azure.com", 443)
    await bridge.hook("server_connect", data)
    assert data.server.error is None
    assert data.server.address == ("20.42.0.1", 443)  # pinned to the checked address
    assert lookups == ["contoso.openai.azure.com"]


async def test_a_wildcard_host_that_resolves_inside_is_refused(make_bridge, lookups):
    bridge = make_bridge(CONFIG)
    client = await bridge.tunnel("sneaky.openai.azure.com")
    data = server_hook(client, "sneaky.openai.azure.com", 443)
    await bridge.hook("server_connect", data)
    assert data.server.error is not None and "egress" in data.server.error
