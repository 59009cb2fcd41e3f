"""Every interception in the database, through a real mitmdump: SQLite by default, PostgreSQL
when configured; the usage report; OpenTelemetry from the running proxy."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import anthropic
import openai
import pytest
import sqlalchemy as sa

from tests.e2e.harness import ANTHROPIC_KEY, OPENAI_KEY, ROOT, provider_config
from tests.fakeprovider import Reply

MESSAGES = [{"role": "user", "content": "What is the weather in Paris? " + "x" * 3000}]
TOOL_CALL = {"id": "msg_tool", "type": "message", "role": "assistant", "model": "claude-sonnet-5",
             "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                          "input": {"city": "Paris"}}],
             "stop_reason": "tool_use", "stop_sequence": None,
             "usage": {"input_tokens": 20, "output_tokens": 5}}


def drive(bridge, fake) -> None:
    """A mix of outcomes: completed (both APIs, streaming and not, a tool call), an upstream
    error, and a request the bridge refuses (all keys cooling)."""
    oai, ant = bridge.openai(), bridge.anthropic()
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                     stream_options={"include_usage": True}))
    with ant.messages.stream(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES) as s:
        s.get_final_message()
    fake.enqueue(Reply(body=TOOL_CALL))
    ant.messages.create(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES)
    fake.enqueue(Reply(status=500, body=b"<html>oops</html>", headers=[("content-type",
                                                                          "text/html")]))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-broken", messages=MESSAGES)
    fake.enqueue(Reply(status=429, headers=[("retry-after", "30")], body={"error": {
        "message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}))
    with pytest.raises(anthropic.RateLimitError):
        ant.messages.create(model="claude-limited", max_tokens=8, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError):  # the only key is cooling: refused locally
        ant.messages.create(model="claude-limited", max_tokens=8, messages=MESSAGES)


def rows(engine: sa.Engine, sql: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql))]


def check_records(engine: sa.Engine) -> None:
    got = rows(engine, """
        SELECT i.id, i.actor_id, i.model, i.streaming, i.provider, i.client, i.credential_kind,
               i.credential_hint, e.outcome, e.status, e.error_type, e.error_message,
               e.credential_hint AS end_hint, e.time_to_first_token
        FROM interceptions i LEFT JOIN interception_ends e ON e.id = i.id
        ORDER BY i.started_at""")
    assert [(r["model"], r["outcome"]) for r in got] == [
        ("gpt-4o", "completed"), ("gpt-4o", "completed"), ("claude-sonnet-5", "completed"),
        ("claude-sonnet-5", "completed"), ("gpt-broken", "failed"),
        ("claude-limited", "failed"), ("claude-limited", "rejected")]
    assert {r["actor_id"] for r in got} == {"alice"}
    assert got[0]["client"] == "OpenAI SDK" and got[2]["client"] == "Anthropic SDK"
    assert got[1]["streaming"] and got[1]["time_to_first_token"] is not None
    assert got[0]["credential_hint"] == "sk-c...cdef" and got[0]["credential_kind"] == "centralized"
    assert got[4]["status"] == 500 and got[4]["error_type"] == "server_error"
    assert got[5]["error_type"] == "rate_limited"
    assert got[6]["status"] == 429 and got[6]["error_type"] == "rate_limited"
    assert "all configured keys are rate-limited" in got[6]["error_message"]
    tokens = rows(engine, "SELECT interception_id, input_tokens, output_tokens, "
                          "cache_read_tokens, cache_write_tokens FROM token_usages")
    by_id = {t["interception_id"]: t for t in tokens}
    assert by_id[got[0]["id"]]["input_tokens"] == 11
    assert by_id[got[1]["id"]]["output_tokens"] == 7  # streaming usage, from the tap
    anthropic_stream = by_id[got[2]["id"]]
    # Anthropic counts as the API defines it: input excludes cache, output not double counted.
    assert (anthropic_stream["input_tokens"], anthropic_stream["output_tokens"],
            anthropic_stream["cache_read_tokens"], anthropic_stream["cache_write_tokens"]) == (
        11, 7, 3, 2)
    tools = rows(engine, "SELECT interception_id, tool, tool_call_id, arguments FROM tool_usages")
    assert [(t["tool"], t["tool_call_id"], json.loads(t["arguments"])) for t in tools] == [
        ("get_weather", "toolu_1", {"city": "Paris"})]
    prompts = rows(engine, "SELECT prompt, truncated FROM prompt_usages")
    assert len(prompts) == 7
    assert all(p["truncated"] and len(p["prompt"]) == 2000 for p in prompts)  # default privacy
    dump = json.dumps(rows(engine, "SELECT * FROM interceptions"), default=str)
    dump += json.dumps(rows(engine, "SELECT * FROM interception_ends"), default=str)
    assert OPENAI_KEY not in dump and ANTHROPIC_KEY not in dump


def test_default_sqlite_file_in_wal_mode(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url))
    assert f"records to {bridge.workdir}/data/aibridge.db" in bridge.log()
    drive(bridge, fake)
    assert bridge.stop() == 0
    db = bridge.workdir / "data" / "aibridge.db"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check_records(sa.create_engine(f"sqlite:///{db}"))


def test_postgresql_with_the_same_schema(fake, make_bridge, postgres_url):
    bridge = make_bridge(provider_config(fake.url, extra=f'[recording]\nurl = "{postgres_url}"\n'))
    drive(bridge, fake)
    assert bridge.stop() == 0
    check_records(sa.create_engine(postgres_url.replace("postgresql://",
                                                        "postgresql+psycopg://")))


def test_usage_report_reads_the_configured_database(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url))
    drive(bridge, fake)
    bridge.stop()
    config = bridge.workdir / "report.toml"
    config.write_text(f'[recording]\nurl = "sqlite:///{bridge.workdir}/data/aibridge.db"\n')
    aibridge = str(ROOT / ".venv" / "bin" / "aibridge")
    table = subprocess.run([aibridge, "usage", "--config", str(config)], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert "alice" in table and "gpt-4o" in table and "claude-sonnet-5" in table
    report = json.loads(subprocess.run(
        [aibridge, "usage", "--config", str(config), "--format", "json", "--actor", "alice",
         "--since", "1d"], capture_output=True, text=True, timeout=60, check=True).stdout)
    gpt = next(r for r in report if r["model"] == "gpt-4o")
    # OpenAI's 11 input tokens include 3 cached ones: the report's input is what was not cached.
    assert (gpt["requests"], gpt["input"], gpt["cache_read"], gpt["output"]) == (2, 16, 6, 14)
    nobody = subprocess.run([aibridge, "usage", "--config", str(config), "--format", "csv",
                             "--actor", "nobody"], capture_output=True, text=True, timeout=60,
                            check=True).stdout
    assert nobody.strip().count("\n") == 0  # header only


def test_console_telemetry_from_the_running_proxy(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url, extra='[telemetry]\nexporter = "console"\n'),
                         args=["--set", "bridge_access_log=off"])
    bridge.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    bridge.stop()
    log = bridge.log()
    assert '"name": "chat gpt-4o"' in log
    for attribute in ('"gen_ai.operation.name": "chat"', '"gen_ai.provider.name": "openai"',
                      '"gen_ai.usage.input_tokens": 11', '"gen_ai.usage.output_tokens": 7',
                      '"aibridge.actor.id": "alice"', '"aibridge.credential.hint": "sk-c...cdef"'):
        assert attribute in log, attribute
    assert OPENAI_KEY not in log


def test_postgres_outage_loses_nothing_and_slows_nothing(fake, make_bridge, postgres,
                                                         postgres_url):
    bridge = make_bridge(provider_config(fake.url, extra=f'[recording]\nurl = "{postgres_url}"\n'))
    client = bridge.openai()
    client.chat.completions.create(model="gpt-before", messages=MESSAGES)
    postgres.stop()
    try:
        for _ in range(5):  # served normally while the database is down
            reply = client.chat.completions.create(model="gpt-during", messages=MESSAGES)
            assert reply.choices[0].message.content == "Hello from fake"
        # The writer runs apart from the request path: wait until it has met the outage, so
        # the records above really go through the spool rather than racing the restart.
        bridge.wait_for_log(r"unavailable .*spooling records", timeout=30)
    finally:
        postgres.start()
    client.chat.completions.create(model="gpt-after", messages=MESSAGES)
    assert bridge.stop() == 0
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    got = rows(engine, "SELECT i.model, e.outcome FROM interceptions i "
                       "JOIN interception_ends e ON e.id = i.id ORDER BY i.started_at")
    assert [r["model"] for r in got] == ["gpt-before", *["gpt-during"] * 5, "gpt-after"]
    assert {r["outcome"] for r in got} == {"completed"}
    assert len(rows(engine, "SELECT id FROM token_usages")) == 7
    log = bridge.log()  # the outage really happened, and was ridden out through the spool
    assert "unavailable" in log and "spooling records" in log and "is back" in log


def test_privacy_option_keeps_client_identity_from_the_provider_but_records_it(fake,
                                                                               make_bridge):
    bridge = make_bridge(provider_config(fake.url).replace(
        'credentials = "auto"', 'credentials = "auto"\nstrip_client_identity = true'))
    user_id = json.dumps({"device_id": "d1", "session_id": "sess-42"})
    bridge.anthropic().messages.create(
        model="claude-sonnet-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
        metadata={"user_id": user_id},
        extra_headers={"X-Claude-Code-Session-Id": "sess-42", "session_id": "s2",
                       "User-Agent": "claude-cli/2.1.331 (external, cli)"})
    seen = fake.requests[-1]
    assert seen.header("X-Claude-Code-Session-Id") is None and seen.header("session_id") is None
    assert "metadata" not in seen.json()
    assert seen.json()["messages"] == [{"role": "user", "content": "hi"}]
    bridge.stop()
    engine = sa.create_engine(f"sqlite:///{bridge.workdir}/data/aibridge.db")
    got = rows(engine, "SELECT client, client_session_id FROM interceptions")
    assert got == [{"client": "Claude Code", "client_session_id": "sess-42"}]


def test_sigterm_lets_an_inflight_stream_finish_and_flushes_its_record(fake, make_bridge):
    import threading

    from tests.e2e.test_streaming_and_input import CHAT_EVENTS

    bridge = make_bridge(provider_config(fake.url))
    gate = threading.Event()
    fake.enqueue(Reply(events=CHAT_EVENTS, gate=gate, gate_timeout=20))
    stream = iter(bridge.openai().chat.completions.create(
        model="gpt-inflight", messages=MESSAGES, stream=True))
    assert next(stream).choices[0].delta.content == "first"
    bridge.proc.terminate()  # SIGTERM while the provider still holds the rest of the stream
    bridge.wait_for_log(r"waiting up to 20s for 1 in-flight request")
    gate.set()
    assert [c.choices[0].delta.content for c in stream if c.choices] == [" rest"]
    assert bridge.proc.wait(30) == 0
    engine = sa.create_engine(f"sqlite:///{bridge.workdir}/data/aibridge.db")
    got = rows(engine, "SELECT i.model, e.outcome FROM interceptions i "
                       "JOIN interception_ends e ON e.id = i.id")
    assert got == [{"model": "gpt-inflight", "outcome": "completed"}]
