"""Provider hosts: wildcard patterns, which provider a host belongs to, and where its requests go
(`Provider.upstream_for`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibridge.config import BridgeConfig, ConfigError
from aibridge.providers import ProviderRegistry, Upstream, build_registry


def registry(providers: dict, environ: dict | None = None) -> ProviderRegistry:
    config = BridgeConfig.model_validate({"providers": providers})
    return build_registry(config, Path("/nonexistent"), environ=environ or {})


AZURE = {"azure": {"enabled": True}}


@pytest.mark.parametrize("host", ["myres.openai.azure.com", "MyRes.OpenAI.Azure.com.",
                                  "other-1.cognitiveservices.azure.com"])
def test_a_wildcard_matches_one_label(host):
    assert registry(AZURE).for_host(host).name == "azure"


@pytest.mark.parametrize("host", ["openai.azure.com", "a.b.openai.azure.com",
                                  "myres.openai.azure.com.evil.example", "myres-openai.azure.com",
                                  "", None])
def test_a_wildcard_matches_nothing_else(host):
    assert registry(AZURE).for_host(host) is None


def test_a_wildcard_label_may_sit_in_the_middle():
    reg = registry({"regional": {"type": "openai", "hosts": ["api.*.example.com"]}})
    assert reg.for_host("api.eu.example.com").name == "regional"
    assert reg.for_host("api.example.com") is None
    assert reg.for_host("web.eu.example.com") is None


def test_an_exact_host_wins_over_another_providers_wildcard():
    reg = registry({**AZURE, "prod": {"type": "azure", "hosts": ["prod.openai.azure.com"]}})
    assert reg.for_host("prod.openai.azure.com").name == "prod"
    assert reg.for_host("dev.openai.azure.com").name == "azure"


def test_the_most_specific_wildcard_of_one_provider_wins():
    reg = registry({"a": {"type": "openai", "hosts": ["*.x.example.com", "*.*.example.com"]}})
    assert reg.for_host("y.x.example.com").name == "a"
    assert reg._wildcards[4][0][0] == ("*", "x", "example", "com")


@pytest.mark.parametrize("other", ["*.openai.azure.com", "prod.*.azure.com", "*.*.azure.com"])
def test_two_providers_whose_wildcards_overlap_are_refused(other):
    with pytest.raises(ConfigError) as info:
        registry({**AZURE, "second": {"type": "azure", "hosts": [other]}})
    assert "can match the same host" in str(info.value) or "claimed" in str(info.value)


def test_wildcards_that_cannot_share_a_host_coexist():
    reg = registry({**AZURE, "other": {"type": "azure", "hosts": ["*.services.ai.azure.com"]}})
    assert reg.for_host("x.services.ai.azure.com").name == "other"


def test_a_registry_rebuilt_from_its_parts_keeps_its_wildcards():
    # settings.py rebuilds registries as ProviderRegistry(providers, by_host) on reloads.
    reg = registry(AZURE)
    again = ProviderRegistry(reg.providers, dict(reg.by_host))
    assert again.for_host("myres.openai.azure.com").name == "azure"


# -- upstreams -----------------------------------------------------------------------------------


def test_without_upstream_a_request_goes_to_the_host_it_was_decrypted_for():
    reg = registry(AZURE)
    azure = reg.for_host("myres.openai.azure.com")
    assert azure.follows_host
    assert azure.upstream_for("MyRes.openai.azure.com.") == Upstream(
        "https", "myres.openai.azure.com", 443, "")
    copilot = registry({"copilot": {"enabled": True}})
    business = copilot.for_host("api.business.githubcopilot.com")
    assert business.upstream_for("api.business.githubcopilot.com").host == \
        "api.business.githubcopilot.com"


def test_a_configured_upstream_takes_every_host():
    reg = registry({"azure": {"enabled": True, "upstream": "http://127.0.0.1:8080/base"}})
    azure = reg.for_host("x.openai.azure.com")
    assert not azure.follows_host
    assert azure.upstream_for("x.openai.azure.com") == Upstream("http", "127.0.0.1", 8080,
                                                                 "/base")


def test_a_single_host_provider_goes_where_it_always_went():
    openai = registry({}).for_host("api.openai.com")
    assert openai.upstream_for("api.openai.com") == openai.upstream == Upstream(
        "https", "api.openai.com", 443, "")
    assert openai.upstream_for(None) is openai.upstream


def test_deployments_are_read_as_their_models():
    from aibridge.providers.azure import AZURE as AZURE_API

    reg = registry({"azure": {"enabled": True, "deployments": {"chat-prod": "gpt-4o"}}})
    azure = reg.for_host("x.openai.azure.com")
    match = azure.match("POST", "/openai/deployments/chat-prod/chat/completions?api-version=1")
    assert match.api in AZURE_API.apis
    assert azure.request_info(match.api, {"messages": []}, match.params).model == "gpt-4o"
    other = azure.match("POST", "/openai/deployments/unmapped/chat/completions")
    assert azure.request_info(other.api, {}, other.params).model == "unmapped"


def test_copilot_takes_no_central_keys():
    with pytest.raises(ConfigError) as info:
        registry({"copilot": {"enabled": True}}, {"AIBRIDGE_COPILOT_KEYS": "ghu_central_key_0"})
    assert "own credentials" in str(info.value)
    with pytest.raises(ConfigError):
        registry({"copilot": {"enabled": True, "credentials": "auto"}})
    assert registry({"copilot": {"enabled": True}}).for_host(
        "api.githubcopilot.com").credentials == "byok"


def test_a_route_is_classified_once_per_target_and_method(monkeypatch):
    """Provider.match keeps what it found per (method, target): the same answer as
    classifying afresh, a different one for another method or target, and a bounded table."""
    from aibridge.providers import registry as registry_module
    from aibridge.providers.registry import BRIDGED, INVALID, PASSTHROUGH

    openai = registry({"openai": {"enabled": True}}).for_host("api.openai.com")
    first = openai.match("POST", "/v1/chat/completions")
    assert first.kind == BRIDGED
    assert openai.match("POST", "/v1/chat/completions") is first
    assert openai.match("POST", "/v1/chat/completions") == openai._match(
        "POST", "/v1/chat/completions")
    assert openai.match("GET", "/v1/chat/completions").kind != BRIDGED
    assert openai.match("POST", "/v1/files").kind == PASSTHROUGH
    assert openai.match("POST", "/v1/\x00").kind == INVALID
    monkeypatch.setattr(registry_module, "ROUTE_CACHE_SIZE", 8)
    for n in range(50):
        assert openai.match("POST", f"/v1/chat/completions?n={n}").kind == BRIDGED
    assert len(openai._routes) <= 8
