"""GitHub Copilot through a real mitmdump, driven by the `openai` SDK the way Copilot clients call
it: the user's own Copilot token goes on (there are no central keys), chat completions and
responses are recorded with the user and the usage, everything else passes through."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import openai
import pytest

from tests.e2e.harness import ALICE_TOKEN, BridgeProcess, provider_config
from tests.fakeprovider import TEXT, FakeProvider

COPILOT_TOKEN = "tid=0123abcd;exp=1900000000;sku=copilot_for_business_seat;8kp=1:f00dcafe0123"
HEADERS = {"Copilot-Integration-Id": "vscode-chat", "Editor-Version": "vscode/1.99.0",
           "Openai-Intent": "conversation-panel"}
MESSAGES = [{"role": "user", "content": "say hi"}]


@pytest.fixture(scope="module")
def bridge(fake: FakeProvider, make_bridge: Callable[..., BridgeProcess]) -> BridgeProcess:
    extra = f'[providers.copilot]\nenabled = true\nupstream = "{fake.url}"\n'
    return make_bridge(provider_config(fake.url, extra=extra))


def copilot(bridge: BridgeProcess, host: str = "api.githubcopilot.com",
            token: str = COPILOT_TOKEN) -> openai.OpenAI:
    http_client = openai.DefaultHttpxClient(proxy=bridge.proxy_url(), verify=bridge.ssl_context())
    return openai.OpenAI(base_url=f"https://{host}", api_key=token, default_headers=HEADERS,
                         http_client=http_client, max_retries=0)


def test_copilot_chat_and_responses_with_the_users_token(bridge, fake):
    client = copilot(bridge)
    stream = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
    business = copilot(bridge, "api.business.githubcopilot.com")
    assert business.responses.create(model="gpt-5-mini", input="say hi").output_text == TEXT
    models = [m.id for m in client.models.list()]
    assert "gpt-4.1" in models
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/chat/completions"), ("POST", "/responses"), ("GET", "/models")]
    for seen in fake.requests:
        assert seen.header("authorization") == f"Bearer {COPILOT_TOKEN}"
        assert seen.header("Copilot-Integration-Id") == "vscode-chat"
        assert seen.header("X-AI-Bridge-Actor-ID") == "alice"
    bridge.wait_for_log(r"provider=copilot model=gpt-5-mini stream=False status=200 "
                        r"credential=byok:tid=\.\.\.0123 in 11 out 7 outcome=completed")


def test_without_a_copilot_token_the_bridge_says_so(bridge, fake):
    # The proxy token is never a provider credential, and Copilot has no central keys.
    with pytest.raises(openai.AuthenticationError) as info:
        copilot(bridge, token=ALICE_TOKEN).chat.completions.create(model="gpt-4.1",
                                                                   messages=MESSAGES)
    assert "needs your own API key" in info.value.message
    assert fake.requests == []


def test_records_name_the_user_and_the_usage(fake, make_bridge):
    extra = f'[providers.copilot]\nenabled = true\nupstream = "{fake.url}"\n'
    bridge = make_bridge(provider_config(fake.url, extra=extra))
    copilot(bridge).chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    copilot(bridge).models.list()
    bridge.stop()
    db = sqlite3.connect(bridge.workdir / "data" / "aibridge.db")
    try:
        got = db.execute(
            "SELECT i.provider_type, i.actor_id, i.model, i.credential_kind, e.outcome, "
            "t.input_tokens, t.output_tokens, e.price_source FROM interceptions i "
            "JOIN interception_ends e ON e.id = i.id "
            "JOIN token_usages t ON t.interception_id = i.id").fetchall()
        passthrough = db.execute("SELECT provider, actor_id, method, path, credential_kind "
                                 "FROM passthroughs").fetchall()
    finally:
        db.close()
    assert [row[:7] for row in got] == [("copilot", "alice", "gpt-4.1", "byok", "completed", 11,
                                         7)]
    assert got[0][7].startswith("genai-prices:github-copilot/")
    assert passthrough == [("copilot", "alice", "GET", "/models", "byok")]
