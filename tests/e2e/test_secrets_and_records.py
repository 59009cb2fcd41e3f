"""No key in logs or saved flows; each bridged request carries its interception record."""

from __future__ import annotations

import uuid

from mitmproxy import io

from tests.e2e.harness import ALICE_TOKEN, ANTHROPIC_KEY, OPENAI_KEY, provider_config

USER_KEY = "sk-ant-api03-personal-key-abcdefgh"
OAUTH_TOKEN = "sk-ant-oat01-subscription-token-xyz987"


def read_flows(path):
    with open(path, "rb") as f:
        return [fl for fl in io.FlowReader(f).stream() if fl.type == "http"]


def test_keys_never_reach_logs_or_saved_flows(fake, make_bridge):
    # flow_detail=4 makes mitmdump print full request headers of every flow.
    bridge = make_bridge(provider_config(fake.url), args=["--set", "flow_detail=4"])
    messages = [{"role": "user", "content": "hi"}]
    bridge.openai().chat.completions.create(model="gpt-4o", messages=messages)
    list(bridge.openai().chat.completions.create(model="gpt-4o", messages=messages, stream=True))
    # A personal key in X-Api-Key wins over the bearer token (here the proxy token).
    bridge.anthropic().messages.create(model="claude-sonnet-5", max_tokens=8,
                                       messages=messages, extra_headers={"X-Api-Key": USER_KEY})
    bridge.anthropic(api_key=None, auth_token=OAUTH_TOKEN).messages.create(
        model="claude-sonnet-5", max_tokens=8, messages=messages,
        extra_headers={"anthropic-beta": "oauth-2025-04-20"})
    bridge.anthropic().messages.create(model="claude-sonnet-5", max_tokens=8,
                                       messages=messages)
    # The provider did get the real keys: the test would be vacuous otherwise.
    seen = [r.header("x-api-key") or r.header("authorization") for r in fake.requests]
    assert seen == [f"Bearer {OPENAI_KEY}", f"Bearer {OPENAI_KEY}", USER_KEY,
                    f"Bearer {OAUTH_TOKEN}", ANTHROPIC_KEY]
    assert fake.requests[2].header("authorization") is None
    assert fake.requests[3].header("anthropic-beta") == "oauth-2025-04-20"
    bridge.stop()

    log = bridge.log()
    saved = bridge.flows_path.read_bytes()
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, USER_KEY, OAUTH_TOKEN, ALICE_TOKEN):
        assert secret not in log, secret
        assert secret.encode() not in saved, secret
    assert "sk-c...cdef" in log  # the masked hint is what people see
    flows = read_flows(bridge.flows_path)
    hints = [f.metadata["aibridge"]["credential"]["hint"] for f in flows]
    assert hints == ["sk-c...cdef", "sk-c...cdef", "sk-a...efgh", "sk-a...z987", "sk-a...efgh"]
    kinds = [f.metadata["aibridge"]["credential"]["kind"] for f in flows]
    assert kinds == ["centralized", "centralized", "byok", "byok", "centralized"]
    assert flows[0].request.headers["Authorization"] == "Bearer sk-c...cdef"


def test_each_bridged_request_has_an_interception(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url))
    client = bridge.anthropic()
    tool_turn = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "w",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                      "content": "sunny"}]},
    ]
    client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=tool_turn)
    with client.messages.stream(model="claude-opus-5", max_tokens=8,
                                messages=[{"role": "user", "content": "x"}]) as s:
        s.get_final_message()
    bridge.openai().models.list()
    bridge.stop()

    flows = read_flows(bridge.flows_path)
    first, second, passthrough = (f.metadata["aibridge"] for f in flows)
    assert uuid.UUID(first["interception"]["id"]).version == 7
    assert first["interception"]["id"] != second["interception"]["id"]
    assert first["interception"]["model"] == "claude-sonnet-5"
    assert first["interception"]["streaming"] is False
    assert first["interception"]["correlating_tool_call_id"] == "toolu_01"
    assert first["actor"] == {"id": "alice", "metadata": {"Username": "alice", "Team": "ml"}}
    assert second["interception"]["streaming"] is True
    assert second["usage"]["input_tokens"] == 11 and second["usage"]["output_tokens"] == 7
    assert second["usage"]["cache_read_tokens"] == 3
    assert second["outcome"] == "completed"
    assert first["usage"]["output_tokens"] == 7
    assert passthrough["kind"] == "passthrough" and "interception" not in passthrough
    assert flows[1].comment.startswith("alice · claude-opus-5 · ok · ")
    assert flows[1].comment.endswith(" · anthropic · key sk-a...efgh")
