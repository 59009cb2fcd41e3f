"""The fake provider's Gemini, Azure OpenAI, Copilot and OpenAI-compatible routes, driven directly
(no proxy): the shapes the e2e tests rely on."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import openai
import pytest

from tests.fakeprovider import (
    AZURE_MODEL,
    TEXT,
    FakeProvider,
    gemini_error,
    gemini_rate_limited,
)

pytestmark = pytest.mark.timeout(30)
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
KEY = {"x-goog-api-key": "AIza-fake"}


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as f:
        yield f


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=fake.url, timeout=5.0) as c:
        yield c


def test_gemini_generate_content(client):
    body = client.post(GENERATE, headers=KEY, json={"contents": []}).json()
    assert body["candidates"][0]["content"]["parts"] == [{"text": TEXT}]
    assert body["candidates"][0]["finishReason"] == "STOP"
    assert body["usageMetadata"]["thoughtsTokenCount"] == 2
    assert body["modelVersion"] == "gemini-2.5-flash"


def test_gemini_streams_sse_with_alt_sse_and_a_json_array_without(client):
    sse = client.post(STREAM + "?alt=sse", headers=KEY, json={})
    assert sse.headers["content-type"] == "text/event-stream"
    events = [json.loads(line[6:]) for line in sse.text.split("\r\n\r\n") if line]
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == TEXT
    array = client.post(STREAM, params={"key": "AIza-fake"}, json={})
    assert array.headers["content-type"].startswith("application/json")
    chunks = json.loads(array.text)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == TEXT
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_side_routes_and_a_missing_key(client):
    assert client.post("/v1beta/models/m:countTokens", headers=KEY, json={}).json()[
        "totalTokens"] == 11
    assert client.get("/v1beta/models", headers=KEY).json()["models"][0]["name"] == \
        "models/gemini-2.5-flash"
    refused = client.post(GENERATE, json={})
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == "PERMISSION_DENIED"


def test_gemini_errors_are_googles_envelope(fake, client):
    fake.enqueue(gemini_rate_limited("37s"))
    fake.enqueue(gemini_error(400, "API key not valid.", reason="API_KEY_INVALID"))
    limited = client.post(GENERATE, headers=KEY, json={})
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"} in \
        error["details"]
    invalid = client.post(GENERATE, headers=KEY, json={}).json()["error"]
    assert invalid["details"][0]["reason"] == "API_KEY_INVALID"


def test_azure_answers_the_azure_sdk(fake):
    client = openai.AzureOpenAI(azure_endpoint=fake.url, api_key="azure-key-0",
                                api_version="2024-10-21", max_retries=0)
    completion = client.chat.completions.create(model="chat-prod", messages=[
        {"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == TEXT
    assert completion.model == AZURE_MODEL
    seen = fake.requests[-1]
    assert seen.path == "/openai/deployments/chat-prod/chat/completions?api-version=2024-10-21"
    assert seen.header("api-key") == "azure-key-0"
    assert client.responses.create(model="chat-prod", input="hi").output_text == TEXT
    assert fake.requests[-1].path.startswith("/openai/responses?api-version=")


def test_azure_needs_an_api_version_and_a_key(client):
    assert client.post("/openai/deployments/d/chat/completions", json={},
                       headers={"api-key": "k"}).status_code == 404
    missing = client.post("/openai/deployments/d/chat/completions?api-version=1", json={})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "401"
    v1 = openai.OpenAI(base_url=fake_url(client) + "/openai/v1/", api_key="k", max_retries=0)
    assert v1.chat.completions.create(model="d", messages=[]).choices[0].message.content == TEXT


def fake_url(client: httpx2.Client) -> str:
    return str(client.base_url).rstrip("/")


def test_copilot_and_compatible_gateways_are_openai_shaped(client):
    url = fake_url(client)
    copilot = openai.OpenAI(base_url=url, api_key="tid=1;exp=2:abc", max_retries=0)
    assert copilot.chat.completions.create(model="gpt-4o", messages=[]).choices[
        0].message.content == TEXT
    assert client.post("/chat/completions", json={}).status_code == 401  # no token
    for prefix in ("/openai/v1", "/api/v1"):  # Groq, OpenRouter
        gateway = openai.OpenAI(base_url=url + prefix, api_key="k", max_retries=0)
        assert gateway.chat.completions.create(model="m", messages=[]).choices[
            0].message.content == TEXT
