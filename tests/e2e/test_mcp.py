"""MCP tools through a real mitmdump: a real MCP server (tests/mcp_server.py, the official SDK
over Streamable HTTP on loopback), the fake provider scripted to call an injected tool, and the
official SDK clients (streaming and not, all three APIs) and Claude Code, which get the final
answer and never see a `bmcp_` call."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.harness import ALICE_TOKEN, ANTHROPIC_KEY, BOB_TOKEN, provider_config
from tests.e2e.test_agents import AGENTS, run
from tests.fakeprovider import TEXT, FakeProvider, tool_call_reply
from tests.mcp_server import McpTestServer

SEARCH = "bmcp_docs_search_docs"
RESULT = "Docs for build: the build uses make."
MESSAGES = [{"role": "user", "content": "How do I build?"}]
OWN_TOOL_ANTHROPIC = {"name": "get_weather", "description": "Weather in a city.",
                      "input_schema": {"type": "object", "properties": {
                          "city": {"type": "string"}}},
                      "cache_control": {"type": "ephemeral"}}
OWN_TOOL_OPENAI = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_mcp(request: pytest.FixtureRequest) -> None:
    if "mcp_server" in request.fixturenames:
        request.getfixturevalue("mcp_server").calls.clear()


def mcp_config(url: str, **extra: str) -> str:
    lines = "\n".join(f"{k} = {v}" for k, v in extra.items())
    return f"""
[mcp.servers.docs]
url = "{url}"
headers_env = {{ Authorization = "DOCS_MCP_TOKEN" }}
deny = ["delete_.*"]
{lines}
"""


@pytest.fixture(scope="module")
def bridge(fake: FakeProvider, make_bridge: Callable, mcp_server: McpTestServer):
    bridge = make_bridge(provider_config(fake.url, extra=mcp_config(mcp_server.url)),
                         env={"DOCS_MCP_TOKEN": "Bearer docs-token-0123456789"})
    bridge.wait_for_log(r"mcp server docs at .*: \d+ tool\(s\) offered")
    return bridge


def tools_of(seen) -> list[str]:
    body = seen.json()
    return [t.get("name") or t.get("function", {}).get("name") for t in body.get("tools", [])]


def model_calls(fake: FakeProvider, path: str) -> list:
    return [r for r in fake.requests if r.path == path]


def no_bridge_calls(obj: object) -> None:
    assert "bmcp_" not in json.dumps(obj), obj


# -- Anthropic Messages ---------------------------------------------------------------------


def test_messages_whole_answer_runs_the_tool_and_hides_the_call(bridge, fake, mcp_server):
    fake.enqueue(tool_call_reply("/v1/messages", SEARCH, {"query": "build"}, stream=False,
                                 call_id="toolu_b1", text="Let me look."), "/v1/messages")
    message = bridge.anthropic().messages.create(
        model="claude-sonnet-5", max_tokens=64, messages=MESSAGES, tools=[OWN_TOOL_ANTHROPIC])
    no_bridge_calls(message.model_dump())
    assert [b.text for b in message.content] == ["Let me look.", TEXT]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (22, 12)
    first, second = model_calls(fake, "/v1/messages")[-2:]
    # Appended after the client's tool, whose cache breakpoint stays where it was; deny hides.
    assert tools_of(first)[0] == "get_weather" and SEARCH in tools_of(first)
    assert first.json()["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert "bmcp_docs_delete_page" not in tools_of(first)
    assert not any("cache_control" in t for t in first.json()["tools"][1:])
    turn, results = second.json()["messages"][-2:]
    assert turn["content"][-1] == {"type": "tool_use", "id": "toolu_b1", "name": SEARCH,
                                   "input": {"query": "build"}}
    assert results == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_b1", "content": RESULT}]}
    assert second.header("x-api-key") == ANTHROPIC_KEY
    assert second.header("X-AI-Bridge-Actor-ID") == "alice"
    assert mcp_server.calls == [("search_docs", {"query": "build"})]
    assert any(h.get("authorization") == "Bearer docs-token-0123456789"
               for h in mcp_server.headers)


def test_messages_stream_is_one_well_formed_stream(bridge, fake, mcp_server):
    fake.enqueue(tool_call_reply("/v1/messages", SEARCH, {"query": "build"}, stream=True,
                                 call_id="toolu_s1", text="Let me look."), "/v1/messages")
    with bridge.anthropic().messages.stream(model="claude-sonnet-5", max_tokens=64,
                                            messages=MESSAGES) as stream:
        events = list(stream)
        final = stream.get_final_message()
    no_bridge_calls([e.model_dump() for e in events])
    assert [b.text for b in final.content] == ["Let me look.", TEXT]
    assert [e.type for e in events].count("message_start") == 1
    assert [e.type for e in events].count("message_stop") == 1
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 22 and final.usage.output_tokens == 12
    second = model_calls(fake, "/v1/messages")[-1]
    assert second.json()["messages"][-1]["content"][0]["content"] == RESULT
    assert second.json()["stream"] is True
    assert mcp_server.calls == [("search_docs", {"query": "build"})]
    bridge.wait_for_log(r"model=claude-sonnet-5 stream=True status=200 .* in 22 out 12 "
                        r"outcome=completed")


def test_the_clients_own_tool_in_the_same_turn_ends_the_loop(bridge, fake, mcp_server):
    mixed = tool_call_reply("/v1/messages", SEARCH, {"query": "x"}, stream=False)
    mixed.body["content"].append({"type": "tool_use", "id": "toolu_own", "name": "get_weather",
                                  "input": {"city": "Paris"}})
    fake.enqueue(mixed, "/v1/messages")
    message = bridge.anthropic().messages.create(
        model="claude-sonnet-5", max_tokens=64, messages=MESSAGES, tools=[OWN_TOOL_ANTHROPIC])
    assert [(b.type, b.name) for b in message.content] == [("tool_use", "get_weather")]
    assert message.stop_reason == "tool_use"
    assert mcp_server.calls == []
    assert len(model_calls(fake, "/v1/messages")) == 1


def test_a_named_tool_choice_is_left_alone(bridge, fake):
    bridge.anthropic().messages.create(
        model="claude-sonnet-5", max_tokens=64, messages=MESSAGES, tools=[OWN_TOOL_ANTHROPIC],
        tool_choice={"type": "tool", "name": "get_weather"})
    assert tools_of(fake.requests[-1]) == ["get_weather"]


def test_match_offers_the_tools_to_some_callers_only(fake, make_bridge, mcp_server):
    bridge = make_bridge(provider_config(
        fake.url, extra=mcp_config(mcp_server.url, match='{ team = "ml" }')),
        env={"DOCS_MCP_TOKEN": "Bearer t"})
    bridge.wait_for_log(r"mcp server docs at .*: \d+ tool\(s\) offered")
    bridge.anthropic().messages.create(model="claude-sonnet-5", max_tokens=8,
                                       messages=MESSAGES)  # alice: team ml
    assert SEARCH in tools_of(fake.requests[-1])
    bridge.anthropic(token=BOB_TOKEN, api_key=BOB_TOKEN).messages.create(
        model="claude-sonnet-5", max_tokens=8, messages=MESSAGES)
    assert "tools" not in fake.requests[-1].json()


# -- OpenAI Chat Completions and Responses -------------------------------------------------------


def test_chat_whole_and_stream(bridge, fake, mcp_server):
    client = bridge.openai()
    fake.enqueue(tool_call_reply("/v1/chat/completions", SEARCH, {"query": "build"},
                                 stream=False), "/v1/chat/completions")
    result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                            tools=[OWN_TOOL_OPENAI])
    no_bridge_calls(result.model_dump())
    assert result.choices[0].message.content == TEXT
    assert result.choices[0].finish_reason == "stop"
    assert result.usage.prompt_tokens == 22 and result.usage.completion_tokens == 12
    second = model_calls(fake, "/v1/chat/completions")[-1].json()
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_fake1",
                                      "content": RESULT}
    fake.enqueue(tool_call_reply("/v1/chat/completions", SEARCH, {"query": "build"},
                                 stream=True), "/v1/chat/completions")
    chunks = list(client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    no_bridge_calls([c.model_dump() for c in chunks])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and
            c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.prompt_tokens == 22 and chunks[-1].usage.completion_tokens == 12
    assert mcp_server.calls == [("search_docs", {"query": "build"})] * 2


def test_responses_whole_and_stream(bridge, fake, mcp_server):
    client = bridge.openai()
    fake.enqueue(tool_call_reply("/v1/responses", SEARCH, {"query": "build"}, stream=False),
                 "/v1/responses")
    result = client.responses.create(model="gpt-5", input="How do I build?")
    no_bridge_calls(result.model_dump())
    assert result.output_text == TEXT
    assert result.usage.input_tokens == 22 and result.usage.output_tokens == 12
    second = model_calls(fake, "/v1/responses")[-1].json()
    assert second["input"][0] == {"role": "user", "content": "How do I build?"}
    assert second["input"][-1] == {"type": "function_call_output", "call_id": "call_fake1",
                                   "output": RESULT}
    fake.enqueue(tool_call_reply("/v1/responses", SEARCH, {"query": "build"}, stream=True,
                                 text="Let me look."), "/v1/responses")
    with client.responses.stream(model="gpt-5", input="How do I build?") as stream:
        events = list(stream)
        final = stream.get_final_response()
    no_bridge_calls([e.model_dump(warnings=False) for e in events])
    assert final.output_text == "Let me look." + TEXT
    assert final.usage.input_tokens == 22 and final.usage.output_tokens == 12
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(numbers)))
    assert mcp_server.calls == [("search_docs", {"query": "build"})] * 2
    # The stream kept round one's id (the SDK insists); continuing from it continues from the
    # last round, which the provider stored with the whole exchange.
    assert final.id == "resp_tool1"
    client.responses.create(model="gpt-5", input="And then?", previous_response_id=final.id)
    previous = model_calls(fake, "/v1/responses")[-1].json()["previous_response_id"]
    assert previous.startswith("resp_fake") and previous != final.id


async def test_async_clients_stream_too(bridge, fake):
    client = bridge.async_anthropic()
    fake.enqueue(tool_call_reply("/v1/messages", SEARCH, {"query": "build"}, stream=True),
                 "/v1/messages")
    async with client.messages.stream(model="claude-sonnet-5", max_tokens=64,
                                      messages=MESSAGES) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == TEXT
    await client.close()


# -- records ------------------------------------------------------------------------------------


def test_every_round_is_recorded_and_counted(fake, make_bridge, mcp_server):
    bridge = make_bridge(provider_config(fake.url, extra=mcp_config(mcp_server.url)),
                         env={"DOCS_MCP_TOKEN": "Bearer t"})
    bridge.wait_for_log(r"mcp server docs at .*: \d+ tool\(s\) offered")
    fake.enqueue(tool_call_reply("/v1/messages", SEARCH, {"query": "build"}, stream=True,
                                 call_id="toolu_r1"), "/v1/messages")
    with bridge.anthropic().messages.stream(model="claude-sonnet-5", max_tokens=64,
                                            messages=MESSAGES) as stream:
        stream.get_final_message()
    assert bridge.stop() == 0
    with sqlite3.connect(bridge.workdir / "data" / "aibridge.db") as db:
        rounds = db.execute("SELECT interception_id, round, server, tool, injected_name, "
                            "tool_call_id, arguments, result_bytes, duration, error "
                            "FROM mcp_rounds").fetchall()
        interceptions = db.execute("SELECT id FROM interceptions").fetchall()
        tokens = db.execute("SELECT input_tokens, output_tokens FROM token_usages").fetchall()
        tools = db.execute("SELECT tool FROM tool_usages").fetchall()
    assert len(rounds) == 1 and len(interceptions) == 1
    (iid, round_, server, tool, name, call_id, args, size, duration, error), = rounds
    assert (iid, round_, server, tool, name, call_id) == (
        interceptions[0][0], 1, "docs", "search_docs", SEARCH, "toolu_r1")
    assert json.loads(args) == {"query": "build"} and size == len(RESULT) and error is None
    assert duration >= 0
    assert tokens == [(22, 12)]  # both rounds: the cost is of both
    assert tools == []  # no call reached the client


# -- failures ---------------------------------------------------------------------------------


def test_a_down_mcp_server_does_not_break_requests(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url, extra=mcp_config("http://127.0.0.1:9/mcp")),
                         env={"DOCS_MCP_TOKEN": "Bearer t"})
    bridge.wait_for_log(r"mcp server docs at .*retrying")
    message = bridge.anthropic().messages.create(model="claude-sonnet-5", max_tokens=8,
                                                 messages=MESSAGES)
    assert message.content[0].text == TEXT
    assert "tools" not in fake.requests[-1].json()
    assert "docs-token" not in bridge.log()


# -- Claude Code --------------------------------------------------------------------------------


def test_claude_code_gets_the_answer_and_never_sees_the_call(bridge, fake, mcp_server,
                                                             tmp_path):
    assert (AGENTS / "claude").exists(), "claude missing: run scripts/setup (install-agents)"

    def main_turn(body: dict) -> bool:  # Claude Code's own request: its tools and ours
        names = [t.get("name") for t in body.get("tools", [])]
        return SEARCH in names and len(names) > 5

    fake.enqueue(tool_call_reply("/v1/messages", SEARCH, {"query": "build"}, stream=True,
                                 call_id="toolu_cc1"), "/v1/messages", when=main_turn)
    home = tmp_path / "home"
    home.mkdir()
    result = run([str(AGENTS / "claude"), "-p", "How do I build?", "--output-format", "json",
                  "--max-turns", "2", "--model", "claude-sonnet-5"], {
        "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "HTTPS_PROXY": bridge.proxy_url(), "NODE_EXTRA_CA_CERTS": bridge.ca,
        "ANTHROPIC_API_KEY": ALICE_TOKEN,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["result"] == TEXT
    assert "bmcp_" not in result.stdout + result.stderr
    assert mcp_server.calls == [("search_docs", {"query": "build"})]
    follow_up = [r for r in model_calls(fake, "/v1/messages?beta=true") + model_calls(
        fake, "/v1/messages") if "toolu_cc1" in r.body.decode()]
    assert follow_up, [r.path for r in fake.requests]
    # Claude Code's next turn would carry what it saw: the final text, no bridge call.


# -- secrets in a bridge tool's result --------------------------------------------------------


def _config_round(bridge, fake) -> tuple[dict, str]:
    fake.enqueue(tool_call_reply("/v1/messages", "bmcp_docs_read_config", {}, stream=False,
                                 call_id="toolu_s1"), "/v1/messages")
    bridge.anthropic().messages.create(model="claude-sonnet-5", max_tokens=64,
                                       messages=MESSAGES)
    follow_up = model_calls(fake, "/v1/messages")[-1].json()
    result = follow_up["messages"][-1]["content"][0]
    assert result["tool_use_id"] == "toolu_s1"
    return result, follow_up["messages"][-1]["content"][0]["content"]


def test_a_secret_in_a_tool_result_is_redacted_before_the_next_round(fake, make_bridge,
                                                                      mcp_server):
    bridge = make_bridge(provider_config(fake.url, extra=mcp_config(mcp_server.url)),
                         env={"DOCS_MCP_TOKEN": "Bearer t"})
    bridge.wait_for_log(r"mcp server docs at .*: \d+ tool\(s\) offered")
    _, sent = _config_round(bridge, fake)
    assert "AKIAZ7Q3XWERTYUIOPLK" not in sent
    assert "region = eu-west-1" in sent and "[REDACTED aws-access-key #" in sent
    assert mcp_server.calls[-1] == ("read_config", {})
    assert bridge.stop() == 0
    with sqlite3.connect(bridge.workdir / "data" / "aibridge.db") as db:
        findings = db.execute("SELECT rule, location, action FROM findings").fetchall()
    assert findings == [("aws-access-key", "result of bridge tool bmcp_docs_read_config "
                         "(call toolu_s1)", "redact")]
    assert "AKIAZ7Q3XWERTYUIOPLK" not in bridge.log()


def test_a_secret_to_block_withholds_the_tool_result(fake, make_bridge, mcp_server):
    bridge = make_bridge(provider_config(fake.url, extra=mcp_config(mcp_server.url)
                                         + '\n[secrets]\naction = "block"\n'),
                         env={"DOCS_MCP_TOKEN": "Bearer t"})
    bridge.wait_for_log(r"mcp server docs at .*: \d+ tool\(s\) offered")
    _, sent = _config_round(bridge, fake)
    assert "AKIAZ7Q3XWERTYUIOPLK" not in sent and "eu-west-1" not in sent
    assert sent.startswith("[AI Bridge withheld this tool result: it holds a secret "
                           "(aws-access-key, [REDACTED aws-access-key #")
