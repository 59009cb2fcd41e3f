"""Responses over WebSocket through the bridge, with the real openai SDK's WebSocket client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from mitmproxy import io
from websockets.exceptions import InvalidStatus

from tests.e2e.harness import ALICE_TOKEN, OPENAI_KEY, provider_config
from tests.fakeprovider import WsReply, ws_error

pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

KEYS = "sk-ws-pool-key-0-aaaaaaaaaa,sk-ws-pool-key-1-bbbbbbbbbb"


def connect(bridge, **kw):
    client = bridge.openai(**kw)
    return client.responses.connect(websocket_connection_options={
        "ssl": bridge.ssl_context(), "proxy": bridge.proxy_url(), "open_timeout": 10})


def until_done(conn) -> list:
    events = []
    for event in conn:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "error"):
            break
    return events


def test_two_responses_on_one_socket_are_two_interceptions(bridge, fake):
    gate = threading.Event()
    fake.enqueue_ws(WsReply(gate=gate))
    with connect(bridge) as conn:
        conn.response.create(model="gpt-5-codex", input="first")
        first = next(iter(conn))  # arrives while the provider still holds the rest back
        gate.set()
        events = [first, *until_done(conn)]
        conn.response.create(model="gpt-5-codex", input="second",
                             previous_response_id=events[-1].response.id)
        second = until_done(conn)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from fake"
    assert second[-1].type == "response.completed"
    assert second[-1].response.usage.output_tokens == 7
    assert not fake.gate_timed_out
    upgrade = fake.requests[-1]
    assert upgrade.path == "/v1/responses"
    assert upgrade.header("Authorization") == f"Bearer {OPENAI_KEY}"
    assert upgrade.header("X-AI-Bridge-Actor-ID") == "alice"
    assert [f["input"] for f in fake.ws_frames] == ["first", "second"]  # relayed unchanged
    bridge.wait_for_log(r"model=gpt-5-codex stream=True status=ws .* in 11 out 7 "
                        r"outcome=completed(.|\n)*model=gpt-5-codex stream=True status=ws")


def test_error_frame_ends_the_interception_as_failed(bridge, fake):
    fake.enqueue_ws(WsReply(events=[ws_error("model not found", code="model_not_found")]))
    with connect(bridge) as conn:
        conn.response.create(model="gpt-missing", input="x")
        events = until_done(conn)
    assert events[-1].type == "error"
    bridge.wait_for_log(r"model=gpt-missing stream=True status=ws .* outcome=failed "
                        r"reason='model not found'")


def test_rejected_upgrade_gets_a_json_error_and_keys_stay_masked(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url), env={"AIBRIDGE_OPENAI_KEYS": KEYS})
    fake.enqueue_ws(WsReply(reject_status=429, reject_body={"error": {
        "message": "Rate limit reached", "type": "rate_limit_error", "param": None,
        "code": "rate_limit_exceeded"}}, reject_headers=[("retry-after", "20")]))
    with pytest.raises(InvalidStatus) as info, connect(bridge):
        pass
    response = info.value.response
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "true"
    assert b"was rate-limited; a retry uses the next key" in response.body
    # The retry (Codex retries its socket) gets the second key.
    with connect(bridge) as conn:
        conn.response.create(model="gpt-5-codex", input="x")
        assert until_done(conn)[-1].type == "response.completed"
    assert fake.requests[-1].header("Authorization") == f"Bearer {KEYS.split(',')[1]}"
    bridge.stop()
    saved = bridge.flows_path.read_bytes()
    for secret in [*KEYS.split(","), ALICE_TOKEN]:
        assert secret.encode() not in saved
    with open(bridge.flows_path, "rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if fl.websocket is not None]
    meta = flows[-1].metadata["aibridge"]
    assert meta["outcome"] == "completed"
    assert [i["model"] for i in meta["interceptions"]] == ["gpt-5-codex"]
    assert meta["interceptions"][0]["credential"]["hint"] == "sk-w...bbbb"


def test_codex_with_chatgpt_sign_in_is_byok_and_the_rest_of_chatgpt_untouched(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url,
                                         extra=f'[providers.chatgpt]\nupstream = "{fake.url}"\n'))
    chatgpt_token = "eyJhbGciOi.chatgpt-access-token.sig"
    client = bridge.openai(api_key=chatgpt_token, base_url="https://chatgpt.com/backend-api/codex",
                           default_headers={"chatgpt-account-id": "acct-1"})
    with client.responses.connect(websocket_connection_options={
            "ssl": bridge.ssl_context(), "proxy": bridge.proxy_url(), "open_timeout": 10}) as conn:
        conn.response.create(model="gpt-5-codex", input="hi")
        assert until_done(conn)[-1].type == "response.completed"
    upgrade = fake.requests[-1]
    assert upgrade.path == "/backend-api/codex/responses"
    assert upgrade.header("Authorization") == f"Bearer {chatgpt_token}"  # BYOK: the user's own
    assert upgrade.header("chatgpt-account-id") == "acct-1"
    assert upgrade.header("X-AI-Bridge-Actor-ID") == "alice"
    # Elsewhere on chatgpt.com the bridge changes nothing: no actor headers, no key handling.
    result = bridge.curl("-s", "-o", "/dev/null", "-w", "%{http_code}",
                         "https://chatgpt.com/backend-api/conversations",
                         "-H", "Authorization: Bearer web-session", "-H", "X-Custom: 1")
    assert result.stdout == "404"  # the fake's own answer for an unknown path
    seen = fake.requests[-1]
    assert seen.path == "/backend-api/conversations"
    assert seen.header("Authorization") == "Bearer web-session"
    assert seen.header("X-AI-Bridge-Actor-ID") is None
    bridge.wait_for_log(r"provider=chatgpt model=gpt-5-codex stream=True status=ws "
                        r"credential=byok:eyJh\.\.\.\.sig")
    bridge.stop()


def interception_rows(bridge) -> list[dict]:
    engine = sa.create_engine(f"sqlite:///{bridge.workdir}/data/aibridge.db")
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT i.model, i.transport, i.route, e.outcome, e.status FROM interceptions i "
            "JOIN interception_ends e ON e.id = i.id ORDER BY i.started_at"))]


def test_codex_warm_ups_are_recorded_as_warm_ups_and_not_counted(fake, make_bridge):
    """Codex sends `response.create` with `generate: false` before each turn: it produces
    nothing and must not count as a request in the usage report."""
    bridge = make_bridge(provider_config(fake.url))
    with connect(bridge) as conn:
        conn.response.create(model="gpt-5-codex", input="x", generate=False)
        assert until_done(conn)[-1].type == "response.completed"
        conn.response.create(model="gpt-5-codex", input="say hi")
        assert until_done(conn)[-1].type == "response.completed"
    assert [f.get("generate") for f in fake.ws_frames
            if f.get("type") == "response.create"] == [False, None]
    bridge.wait_for_log(r"outcome=warmup")
    bridge.stop()
    assert [r["outcome"] for r in interception_rows(bridge)] == ["warmup", "completed"]
    report = subprocess.run(
        [str(Path(sys.executable).with_name("aibridge")), "usage", "--format", "json",
         "--config", str(bridge.config_path)], capture_output=True, text=True, check=True,
        timeout=60, cwd=bridge.workdir, env={**os.environ,
                                             "AIBRIDGE_DATA_DIR": str(bridge.workdir / "data")})
    (row,) = json.loads(report.stdout)
    assert (row["requests"], row["warmups"]) == (1, 1)


def test_a_websocket_upgrade_the_provider_refuses_is_logged_and_recorded(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url))
    fake.enqueue_ws(WsReply(reject_status=429, reject_body={"error": {
        "message": "Rate limit reached", "type": "rate_limit_error", "param": None,
        "code": "rate_limit_exceeded"}}))
    with pytest.raises(InvalidStatus), connect(bridge):
        pass
    bridge.wait_for_log(r"actor=alice provider=openai .*status=429 .*outcome=failed")
    bridge.stop()
    (row,) = interception_rows(bridge)
    assert (row["transport"], row["route"], row["outcome"], row["status"]) == (
        "websocket", "/v1/responses", "failed", 429)
