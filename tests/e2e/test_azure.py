"""Azure OpenAI through a real mitmdump, driven by the `openai` SDK's `AzureOpenAI` client: any
resource host under the wildcards is decrypted (with a certificate for that host), deployments
are recorded and priced as their models, the central key goes in `api-key`, an Entra token
passes as the caller's own; plus OpenAI-compatible gateways configured by hand."""

from __future__ import annotations

import sqlite3
import ssl
from collections.abc import Callable

import openai
import pytest

from tests.e2e.harness import ALICE_TOKEN, BridgeProcess, provider_config
from tests.fakeprovider import AZURE_MODEL, TEXT, FakeProvider, Reply, azure_error

AZURE_KEY = "azure-central-key-0123456789abcdef"
API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "say hi"}]


@pytest.fixture(scope="module")
def bridge(fake: FakeProvider, make_bridge: Callable[..., BridgeProcess]) -> BridgeProcess:
    extra = f"""
[providers.azure]
enabled = true
upstream = "{fake.url}"
credentials = "auto"
deployments = {{ chat-prod = "gpt-4o", "embed-small" = "text-embedding-3-small" }}
"""
    return make_bridge(provider_config(fake.url, extra=extra),
                       env={"AIBRIDGE_AZURE_KEYS": AZURE_KEY})


def azure(bridge: BridgeProcess, resource: str = "https://contoso-eu.openai.azure.com",
          **kw) -> openai.AzureOpenAI:
    http_client = openai.DefaultHttpxClient(proxy=bridge.proxy_url(), verify=bridge.ssl_context())
    kw.setdefault("api_key", ALICE_TOKEN)  # the proxy token: the central key, in auto mode
    return openai.AzureOpenAI(azure_endpoint=resource, api_version=API_VERSION,
                              http_client=http_client, max_retries=0, **kw)


def records(bridge: BridgeProcess) -> list[dict]:
    db = sqlite3.connect(bridge.workdir / "data" / "aibridge.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(
            "SELECT i.model, i.route, i.streaming, i.credential_kind, e.outcome, "
            "e.response_model, e.cost_usd, e.price_source, t.input_tokens, t.output_tokens "
            "FROM interceptions i JOIN interception_ends e ON e.id = i.id "
            "LEFT JOIN token_usages t ON t.interception_id = i.id "
            "WHERE i.provider = 'azure' ORDER BY i.started_at")]
    finally:
        db.close()


def test_the_azure_sdk_through_the_bridge(bridge, fake):
    client = azure(bridge)
    completion = client.chat.completions.create(model="chat-prod", messages=MESSAGES)
    assert completion.choices[0].message.content == TEXT and completion.model == AZURE_MODEL
    stream = client.chat.completions.create(model="chat-prod", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
    assert client.responses.create(model="chat-prod", input="say hi").output_text == TEXT
    embedding = client.embeddings.create(model="embed-small", input="hello")
    assert len(embedding.data[0].embedding) == 3
    paths = [r.path for r in fake.requests]
    assert paths == [
        f"/openai/deployments/chat-prod/chat/completions?api-version={API_VERSION}",
        f"/openai/deployments/chat-prod/chat/completions?api-version={API_VERSION}",
        f"/openai/responses?api-version={API_VERSION}",
        f"/openai/deployments/embed-small/embeddings?api-version={API_VERSION}"]
    for seen in fake.requests:
        assert seen.header("api-key") == AZURE_KEY
        assert seen.header("authorization") is None
        assert seen.header("X-AI-Bridge-Actor-ID") == "alice"
    bridge.wait_for_log(r"provider=azure model=text-embedding-3-small .*outcome=completed")


def test_an_entra_token_is_the_callers_own(bridge, fake):
    client = azure(bridge, api_key=None, azure_ad_token="eyJ0eXAiOiJKV1Qi.entra.signature")
    client.chat.completions.create(model="chat-prod", messages=MESSAGES)
    seen = fake.requests[-1]
    assert seen.header("authorization") == "Bearer eyJ0eXAiOiJKV1Qi.entra.signature"
    assert seen.header("api-key") is None
    bridge.wait_for_log(r"provider=azure model=gpt-4o .*credential=byok:")


def test_the_v1_api_with_the_plain_openai_client(bridge, fake):
    client = openai.OpenAI(base_url="https://contoso-eu.openai.azure.com/openai/v1/",
                           api_key=ALICE_TOKEN, max_retries=0,
                           http_client=openai.DefaultHttpxClient(proxy=bridge.proxy_url(),
                                                                 verify=bridge.ssl_context()))
    assert client.chat.completions.create(model="chat-prod", messages=MESSAGES).choices[
        0].message.content == TEXT
    assert fake.requests[-1].path == "/openai/v1/chat/completions"
    assert fake.requests[-1].header("api-key") == AZURE_KEY


@pytest.mark.parametrize("host", ["contoso-eu.openai.azure.com",
                                  "fabrikam.cognitiveservices.azure.com"])
def test_each_resource_host_gets_a_certificate_of_its_own(bridge, host):
    sock, head = bridge.connect(host, 443)
    assert head.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=bridge.ca)  # checks the name, too
    with context.wrap_socket(sock, server_hostname=host) as tls:
        names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
    assert host in names


def test_a_host_outside_the_wildcards_is_not_decrypted(bridge):
    sock, head = bridge.connect("contoso.openai.azure.com.example.org", 443)
    sock.close()
    # Not a provider host: resolved and checked like any other (it does not resolve here).
    assert not head.startswith(b"HTTP/1.1 200")


def test_azure_errors_and_rate_limits_reach_the_sdk(bridge, fake):
    fake.enqueue(azure_error(400, "The response was filtered due to the prompt triggering "
                             "Azure OpenAI's content management policy.", code="content_filter"))
    with pytest.raises(openai.BadRequestError) as info:
        azure(bridge).chat.completions.create(model="chat-prod", messages=MESSAGES)
    assert info.value.code == "content_filter"


def test_records_and_prices_use_the_model_not_the_deployment(fake, make_bridge):
    extra = f"""
[providers.azure]
enabled = true
upstream = "{fake.url}"
deployments = {{ chat-prod = "gpt-4o" }}
"""
    bridge = make_bridge(provider_config(fake.url, extra=extra),
                         env={"AIBRIDGE_AZURE_KEYS": AZURE_KEY})
    azure(bridge).chat.completions.create(model="chat-prod", messages=MESSAGES)
    fake.enqueue(Reply(body={"id": "x", "object": "chat.completion", "model": "mystery",
                             "choices": [], "usage": {"prompt_tokens": 3,
                                                      "completion_tokens": 1}}))
    azure(bridge).chat.completions.create(model="no-such-deployment", messages=MESSAGES)
    bridge.stop()
    mapped, unmapped = records(bridge)
    assert mapped["model"] == "gpt-4o" and mapped["response_model"] == AZURE_MODEL
    assert mapped["route"] == "/openai/deployments/chat-prod/chat/completions"
    assert mapped["price_source"].startswith("genai-prices:azure/")
    assert float(mapped["cost_usd"]) > 0
    assert (mapped["input_tokens"], mapped["output_tokens"]) == (11, 7)
    assert unmapped["model"] == "no-such-deployment" and unmapped["cost_usd"] is None


# -- OpenAI-compatible gateways: configuration only ------------------------------------------------


def test_openai_compatible_gateways_by_configuration_alone(fake, make_bridge):
    extra = f"""
[providers.groq]
type = "openai"
hosts = ["api.groq.com"]
base_path = "/openai/v1"
upstream = "{fake.url}"

[providers.openrouter]
type = "openai"
hosts = ["openrouter.ai"]
base_path = "/api/v1"
upstream = "{fake.url}"
"""
    bridge = make_bridge(provider_config(fake.url, extra=extra),
                         env={"AIBRIDGE_GROQ_KEYS": "gsk_central_groq_0123456789",
                              "AIBRIDGE_OPENROUTER_KEYS": "sk-or-v1-central-0123456789"})
    http_client = openai.DefaultHttpxClient(proxy=bridge.proxy_url(), verify=bridge.ssl_context())
    for base_url, model in (("https://api.groq.com/openai/v1", "llama-3.3-70b-versatile"),
                            ("https://openrouter.ai/api/v1", "openai/gpt-4o")):
        client = openai.OpenAI(base_url=base_url, api_key=ALICE_TOKEN, http_client=http_client,
                               max_retries=0)
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
    assert [(r.path, r.header("authorization")) for r in fake.requests] == [
        ("/openai/v1/chat/completions", "Bearer gsk_central_groq_0123456789"),
        ("/api/v1/chat/completions", "Bearer sk-or-v1-central-0123456789")]
    bridge.stop()
    db = sqlite3.connect(bridge.workdir / "data" / "aibridge.db")
    got = db.execute("SELECT i.provider, i.model, e.outcome, e.price_source FROM interceptions i "
                     "JOIN interception_ends e ON e.id = i.id ORDER BY i.started_at").fetchall()
    db.close()
    assert [(p, m, o) for p, m, o, _ in got] == [
        ("groq", "llama-3.3-70b-versatile", "completed"),
        ("openrouter", "openai/gpt-4o", "completed")]
    assert got[0][3].startswith("genai-prices:groq/")
    assert got[1][3].startswith("genai-prices:openrouter/")
