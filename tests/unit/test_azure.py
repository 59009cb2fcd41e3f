"""Azure OpenAI and GitHub Copilot: routes, models, credentials (their wire formats are OpenAI's,
tested in test_parsing.py and test_tap.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy.http import Headers

from aibridge.access.actors import token_digest
from aibridge.admission.credential import resolve_credential
from aibridge.config import BridgeConfig
from aibridge.errors.envelope import ResponseError
from aibridge.pricing import PriceBook
from aibridge.providers import BRIDGED, PASSTHROUGH, build_registry

AZURE_HOST = "myres.openai.azure.com"
COPILOT_HOST = "api.individual.githubcopilot.com"


def provider(name: str, table: dict, host: str, environ: dict | None = None):
    config = BridgeConfig.model_validate({"providers": {name: {"enabled": True, **table}}})
    return build_registry(config, Path("/nonexistent"), environ=environ or {}).for_host(host)


def azure(environ: dict | None = None, **table):
    return provider("azure", {"deployments": {"chat-prod": "gpt-4o"}, **table}, AZURE_HOST,
                    environ)


@pytest.mark.parametrize(("target", "route", "model"), [
    ("/openai/deployments/chat-prod/chat/completions?api-version=2024-10-21", "chat", "gpt-4o"),
    ("/openai/deployments/chat-prod/responses?api-version=2025-03-01-preview", "responses",
     "gpt-4o"),
    ("/openai/deployments/emb/embeddings?api-version=2024-10-21", "embeddings", "emb"),
    ("/openai/responses?api-version=2025-03-01-preview", "responses", "chat-prod"),
    ("/openai/v1/chat/completions", "chat", "chat-prod"),
    ("/openai/v1/responses", "responses", "chat-prod"),
    ("/openai/v1/embeddings", "embeddings", "chat-prod"),
])
def test_azure_routes_and_the_model_they_record(target, route, model):
    p = azure()
    match = p.match("POST", target)
    assert match.kind == BRIDGED and match.route == route
    body = {"model": "chat-prod", "messages": [], "input": "x", "stream": True}
    info = p.request_info(match.api, body, match.params)
    # The body's model names the deployment on the v1 and Responses routes; the path's wins on
    # deployment routes. Either is read through the deployments map.
    expected = "gpt-4o" if model == "chat-prod" else model
    assert info.model == expected
    assert info.streaming is (route != "embeddings")


@pytest.mark.parametrize(("method", "target"), [
    ("GET", "/openai/models?api-version=2024-10-21"),
    ("GET", "/openai/v1/models"),
    ("POST", "/openai/deployments/chat-prod/completions?api-version=2024-10-21"),
    ("POST", "/openai/v1/files"),
])
def test_other_azure_paths_pass_through(method, target):
    assert azure().match(method, target).kind == PASSTHROUGH


def test_azure_keys_go_in_api_key_and_an_entra_token_passes_as_byok():
    p = azure(credentials="auto", environ={"AIBRIDGE_AZURE_KEYS": "azure-central-key-0123456"})
    central = resolve_credential(p, Headers([(b"api-key", b"alice-token")]),
                                 token_digest("alice-token"))
    assert (central.header, central.value, str(central.info.kind)) == (
        "api-key", "azure-central-key-0123456", "centralized")
    entra = resolve_credential(p, Headers([(b"Authorization", b"Bearer eyJ0eXAi.entra.token")]),
                               token_digest("alice-token"))
    assert (entra.header, entra.value, str(entra.info.kind)) == (
        "Authorization", "Bearer eyJ0eXAi.entra.token", "byok")
    own = resolve_credential(p, Headers([(b"api-key", b"users-own-azure-key-1")]), None)
    assert (own.header, own.value) == ("api-key", "users-own-azure-key-1")


def test_azure_models_are_priced():
    p = azure()
    book = PriceBook({}, [p])
    rates = book.rates("azure", "azure", "gpt-4o")
    assert rates is not None and rates.source.startswith("genai-prices:azure/")


# -- Copilot ---------------------------------------------------------------------------------------


def copilot():
    return provider("copilot", {}, COPILOT_HOST)


@pytest.mark.parametrize(("target", "route"), [("/chat/completions", "chat"),
                                               ("/responses", "responses")])
def test_copilot_bridges_chat_and_responses_at_the_root(target, route):
    match = copilot().match("POST", target)
    assert match.kind == BRIDGED and match.route == route


@pytest.mark.parametrize(("method", "target"), [("GET", "/models"), ("POST", "/agents/x"),
                                                ("GET", "/_ping"), ("POST", "/v1/engines/x")])
def test_copilot_passes_the_rest_through(method, target):
    assert copilot().match(method, target).kind == PASSTHROUGH


def test_copilot_forwards_the_users_own_token_and_refuses_without_one():
    p = copilot()
    token = "tid=abc;exp=1700000000;sku=copilot_for_business;8kp=1:0123456789abcdef"
    cred = resolve_credential(p, Headers([(b"Authorization", f"Bearer {token}".encode())]),
                              token_digest("alice-token"))
    assert (cred.value, str(cred.info.kind)) == (f"Bearer {token}", "byok")
    with pytest.raises(ResponseError) as info:
        resolve_credential(p, Headers([(b"Authorization", b"Bearer alice-token")]),
                           token_digest("alice-token"))
    assert info.value.status == 401


def test_copilot_models_are_priced_as_copilot_lists_them():
    rates = PriceBook({}, [copilot()]).rates("copilot", "copilot", "gpt-4o")
    assert rates is not None and rates.source.startswith("genai-prices:github-copilot/")
