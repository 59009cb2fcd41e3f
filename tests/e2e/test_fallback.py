"""`[[fallbacks]]` from the Anthropic API to Amazon Bedrock through a real mitmdump: when the
Anthropic API cannot serve (every key rate-limited, a 5xx, unreachable), the Anthropic SDK and
Claude Code still get their answer, from the fake Bedrock (which verifies the bridge's SigV4
signature and refuses fields Bedrock does not take), as an ordinary Anthropic answer; the
interception is recorded once, naming both providers, priced as the Bedrock model."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import pytest
import sqlalchemy as sa

from tests.e2e.harness import ALICE_TOKEN, ANTHROPIC_KEY, BridgeProcess, provider_config
from tests.e2e.test_agents import AGENTS, run
from tests.e2e.test_bedrock import ACCESS_KEY, AWS_ENV, SECRET_KEY, SESSION_TOKEN
from tests.fakeprovider import FakeBedrock, FakeProvider, Reply

BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
FALLBACK = f"""
[[fallbacks]]
from = "anthropic"
to = "bedrock"
models = {{ "claude-sonnet-4-5" = "{BEDROCK_MODEL}" }}
"""
HI = [{"role": "user", "content": "hi"}]
RATE_LIMITED = Reply(status=429, headers=[("retry-after", "600")], body={
    "type": "error", "error": {"type": "rate_limit_error", "message": "rate limited (fake)"}})


def config(fake: FakeProvider, anthropic_upstream: str | None = None, extra: str = "") -> str:
    base = provider_config(fake.url, extra=f"""
[providers.bedrock]
type = "bedrock"
hosts = ["bedrock-runtime.*.amazonaws.com"]
upstream = "{fake.url}"
{FALLBACK}
{extra}
""")
    if anthropic_upstream:
        base = base.replace(f'[providers.anthropic]\nupstream = "{fake.url}"',
                            f'[providers.anthropic]\nupstream = "{anthropic_upstream}"')
    return base


@pytest.fixture(autouse=True)
def _verifying(fake: FakeProvider) -> Iterator[None]:
    fake.bedrock = FakeBedrock(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    yield
    fake.bedrock = None


def bedrock_requests(fake: FakeProvider) -> list:
    return [r for r in fake.requests if r.path.startswith("/model/")]


def test_every_anthropic_key_rate_limited(fake: FakeProvider,
                                          make_bridge: Callable[..., BridgeProcess],
                                          tmp_path: Path):
    bridge = make_bridge(config(fake), env=AWS_ENV)
    client = bridge.anthropic()
    # The only central key is rate-limited by the Anthropic API: the answer comes from Bedrock
    # (the bridge asks it itself, after the provider's 429).
    fake.enqueue(RATE_LIMITED, path="/v1/messages")
    message = client.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=32,
                                     messages=HI, metadata={"user_id": "u-1"})
    assert message.content[0].text == "Hello from fake"
    assert message.usage.output_tokens == 7
    # Now the key is cooling: the next requests go to Bedrock from the start, a stream as one
    # (event-stream re-emitted as SSE while it arrives).
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=32, messages=HI,
                                service_tier="auto",
                                extra_headers={"anthropic-beta": "claude-code-20250219,"
                                               "interleaved-thinking-2025-05-14"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from fake" and final.usage.output_tokens == 7
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=32, messages=HI)
    assert message.content[0].text == "Hello from fake"

    home = tmp_path / "home"
    home.mkdir()
    result = run([str(AGENTS / "claude"), "-p", "say hi", "--output-format", "json",
                  "--max-turns", "1", "--model", "claude-sonnet-4-5"], {
        "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "HTTPS_PROXY": bridge.proxy_url(), "NODE_EXTRA_CA_CERTS": bridge.ca,
        "ANTHROPIC_API_KEY": ALICE_TOKEN, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["result"] == "Hello from fake"

    # Only the first request reached the Anthropic API; every answer came from Bedrock, signed
    # with the central AWS credentials, translated (model in the path, no metadata, the betas
    # Bedrock knows in the body).
    messages = [r for r in fake.requests if r.path.startswith("/v1/messages")
                and not r.path.startswith("/v1/messages/count_tokens")]
    assert len(messages) == 1 and messages[0].header("x-api-key") == ANTHROPIC_KEY
    seen = bedrock_requests(fake)
    assert len(seen) >= 4
    assert fake.bedrock is not None and set(fake.bedrock.verdicts) == {"ok"}
    assert seen[0].path == f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/invoke"
    assert seen[1].path.endswith("/invoke-with-response-stream")
    assert not {"model", "stream"} & set(seen[1].json())
    assert seen[0].json()["metadata"] == {"user_id": "u-1"}  # Bedrock takes it
    assert seen[1].json()["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert all(r.header("X-AI-Bridge-Actor-ID") == "alice" for r in seen)
    line = (r"provider=anthropic model=claude-sonnet-4-5\S* stream={} status=200 "
            r"fallback=bedrock:us\.anthropic\.claude-sonnet-4-5-20250929-v1:0 "
            r"credential=centralized:AKIA\.\.\.MPLE in 11 out 7 outcome=completed cost=\$0\.000")
    bridge.wait_for_log(line.format("False"))
    bridge.wait_for_log(line.format("True"))

    assert bridge.stop() == 0
    engine = sa.create_engine(f"sqlite:///{bridge.workdir / 'data' / 'aibridge.db'}")
    with engine.connect() as db:
        rows = [dict(r._mapping) for r in db.execute(sa.text(
            "SELECT i.provider, i.model, i.route, e.outcome, e.fallback_provider, "
            "e.fallback_model, e.price_source, e.cost_usd FROM interceptions i "
            "JOIN interception_ends e ON e.id = i.id WHERE i.route = '/v1/messages' "
            "ORDER BY i.started_at"))]
    engine.dispose()
    assert len(rows) >= 4
    for row in rows:
        assert (row["provider"], row["route"], row["outcome"]) == (
            "anthropic", "/v1/messages", "completed")
        assert (row["fallback_provider"], row["fallback_model"]) == ("bedrock", BEDROCK_MODEL)
        assert row["price_source"].startswith("genai-prices:aws/") and row["cost_usd"]


def test_a_5xx_falls_back_and_a_stream_arrives_whole(fake: FakeProvider,
                                                     make_bridge: Callable[..., BridgeProcess]):
    bridge = make_bridge(config(fake), env=AWS_ENV)
    client = bridge.anthropic()
    fake.enqueue(Reply(status=529, body={"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}), path="/v1/messages")
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=32, messages=HI) as s:
        assert "".join(s.text_stream) == "Hello from fake"
    # A model without a fallback keeps the provider's answer.
    fake.enqueue(Reply(status=529, body={"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}), path="/v1/messages")
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=HI)
    assert e.value.status_code == 529
    bridge.wait_for_log(r"provider=anthropic model=claude-sonnet-4-5 stream=True status=200 "
                        r"fallback=bedrock:\S+ .* outcome=completed")


def test_bedrock_errors_reach_the_client_in_anthropic_shape(
        fake: FakeProvider, make_bridge: Callable[..., BridgeProcess]):
    bridge = make_bridge(config(fake), env=AWS_ENV)
    fake.enqueue(Reply(status=500, body={"type": "error", "error": {
        "type": "api_error", "message": "boom"}}), path="/v1/messages")
    fake.bedrock = FakeBedrock(ACCESS_KEY, "not-the-bridge-secret", SESSION_TOKEN)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        bridge.anthropic().messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HI)
    assert e.value.body["error"]["type"] == "permission_error"
    assert "signature" in e.value.body["error"]["message"]


def test_unreachable_anthropic_api(fake: FakeProvider,
                                   make_bridge: Callable[..., BridgeProcess]):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    bridge = make_bridge(config(fake, anthropic_upstream=closed,
                                extra="[resilience]\nconnect_retry_window = 0\n"), env=AWS_ENV)
    message = bridge.anthropic().messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                                 messages=HI)
    assert message.content[0].text == "Hello from fake"
    bridge.wait_for_log(r"provider=anthropic model=claude-sonnet-4-5 stream=False status=200 "
                        r"fallback=bedrock:\S+ .* outcome=completed")
