"""Google Gemini through a real mitmdump: generateContent and both stream framings, keys in the
header or the URL (never anywhere after the bridge), Google's error envelope and RetryInfo,
failover, records and costs, and Gemini CLI itself."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from mitmproxy import io

from tests.e2e.harness import ALICE_TOKEN, ROOT, BridgeProcess, provider_config
from tests.fakeprovider import (
    TEXT,
    FakeProvider,
    Reply,
    gemini_chunk,
    gemini_error,
    gemini_rate_limited,
    gemini_stream,
)

HOST = "https://generativelanguage.googleapis.com"
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
KEY_1 = "AIzaSy-central-gemini-key-one-0001"
KEY_2 = "AIzaSy-central-gemini-key-two-0002"
USER_KEY = "AIzaSy-users-own-personal-key-9876"
BODY = {"contents": [{"role": "user", "parts": [{"text": "say hi"}]}]}
AGENTS = ROOT / "tools" / "agents" / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def bridge(fake: FakeProvider, make_bridge: Callable[..., BridgeProcess]) -> BridgeProcess:
    extra = f'[providers.gemini]\nupstream = "{fake.url}"\ncredentials = "auto"\n'
    # flow_detail=4: mitmdump prints every request in full (URL and headers) to its log.
    return make_bridge(provider_config(fake.url, extra=extra), args=["--set", "flow_detail=4"],
                       env={"AIBRIDGE_GEMINI_KEYS": f"{KEY_1},{KEY_2}"})


def client(bridge: BridgeProcess) -> httpx2.Client:
    return httpx2.Client(base_url=HOST, proxy=bridge.proxy_url(), verify=bridge.ssl_context(),
                         timeout=30)


def sse_chunks(text: str) -> list[dict]:
    return [json.loads(event[len("data: "):]) for event in text.split("\r\n\r\n") if event]


def answer_text(chunks: list[dict]) -> str:
    return "".join(part.get("text", "") for c in chunks for cand in c.get("candidates", [])
                   for part in cand["content"]["parts"])


def records(bridge: BridgeProcess) -> list[dict]:
    db = sqlite3.connect(bridge.workdir / "data" / "aibridge.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(
            "SELECT i.model, i.streaming, i.provider, i.provider_type, i.route, i.actor_id, "
            "i.credential_kind, i.credential_hint, i.correlating_tool_call_id, e.outcome, "
            "e.status, e.response_model, e.cost_usd, e.price_source, e.error_type, "
            "t.input_tokens, t.output_tokens, t.cache_read_tokens, t.extra "
            "FROM interceptions i JOIN interception_ends e ON e.id = i.id "
            "LEFT JOIN token_usages t ON t.interception_id = i.id "
            "WHERE i.provider = 'gemini' ORDER BY i.started_at")]
    finally:
        db.close()


def test_the_three_ways_to_generate_with_the_central_key(bridge, fake):
    with client(bridge) as c:
        # The proxy token as the API key (header) means "the central key" in auto mode.
        whole = c.post(GENERATE, json=BODY, headers={"x-goog-api-key": ALICE_TOKEN})
        # In the URL, as curl users and older clients send it.
        sse = c.post(STREAM, params={"alt": "sse", "key": ALICE_TOKEN}, json=BODY)
        array = c.post(STREAM, params={"key": ALICE_TOKEN}, json=BODY)
    assert whole.status_code == 200, whole.text
    assert whole.json()["candidates"][0]["content"]["parts"][0]["text"] == TEXT
    assert sse.headers["content-type"] == "text/event-stream"
    assert answer_text(sse_chunks(sse.text)) == TEXT
    assert array.headers["content-type"].startswith("application/json")
    assert answer_text(json.loads(array.text)) == TEXT
    seen = fake.requests
    assert [r.path for r in seen] == [GENERATE, STREAM + "?alt=sse", STREAM]  # no key= left
    for request in seen:
        assert request.header("x-goog-api-key") == KEY_1
        assert request.header("X-AI-Bridge-Actor-ID") == "alice"
    bridge.wait_for_log(r"provider=gemini model=gemini-2\.5-flash stream=True status=200 "
                        r".*in 11 out 9 outcome=completed")


def test_a_users_own_key_in_the_url_goes_in_the_header_and_nowhere_else(fake, make_bridge):
    extra = f'[providers.gemini]\nupstream = "{fake.url}"\ncredentials = "auto"\n'
    bridge = make_bridge(provider_config(fake.url, extra=extra), args=["--set", "flow_detail=4"],
                         env={"AIBRIDGE_GEMINI_KEYS": KEY_1})
    with client(bridge) as c:
        answer = c.post(STREAM, params={"alt": "sse", "key": USER_KEY}, json=BODY)
        passthrough = c.post("/v1beta/models/gemini-2.5-flash:countTokens",
                             params={"key": USER_KEY}, json=BODY)
        central = c.post(GENERATE, params={"key": ALICE_TOKEN, "x": "1"}, json=BODY)
    assert answer.status_code == passthrough.status_code == central.status_code == 200
    seen = fake.requests
    assert [(r.path, r.header("x-goog-api-key")) for r in seen] == [
        (STREAM + "?alt=sse", USER_KEY),
        ("/v1beta/models/gemini-2.5-flash:countTokens", USER_KEY),
        (GENERATE + "?x=1", KEY_1)]
    bridge.stop()
    log = bridge.log()
    saved = bridge.flows_path.read_bytes()
    for secret in (USER_KEY, KEY_1, ALICE_TOKEN):
        assert secret not in log, secret
        assert secret.encode() not in saved, secret
    assert "AIza...9876" in log  # the user's key is seen as its hint
    db = (bridge.workdir / "data" / "aibridge.db").read_bytes()
    for secret in (USER_KEY, KEY_1, ALICE_TOKEN):
        assert secret.encode() not in db, secret
    with open(bridge.flows_path, "rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if fl.type == "http"]
    assert [fl.metadata["aibridge"]["credential"]["kind"] for fl in flows] == [
        "byok", "byok", "centralized"]
    assert all("key=" not in fl.request.path for fl in flows)


def test_records_usage_and_cost_from_the_path_model(fake, make_bridge):
    extra = f'[providers.gemini]\nupstream = "{fake.url}"\n'
    bridge = make_bridge(provider_config(fake.url, extra=extra),
                         env={"AIBRIDGE_GEMINI_KEYS": KEY_1})
    tool_turn = {"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"id": "call-7", "name": "w", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"id": "call-7", "name": "w",
                                                         "response": {"t": 20}}}]}]}
    fake.enqueue(Reply(body=gemini_chunk(
        [{"functionCall": {"id": "call-8", "name": "get_time", "args": {"tz": "UTC"}}}],
        model="gemini-2.5-pro-002", n=1, finish="STOP",
        usage={"promptTokenCount": 40, "candidatesTokenCount": 5, "totalTokenCount": 45})))
    with client(bridge) as c:
        c.post("/v1beta/models/gemini-2.5-pro:generateContent", json=tool_turn,
               headers={"x-goog-api-key": ALICE_TOKEN}).raise_for_status()
        c.post(STREAM, params={"alt": "sse"}, json=BODY,
               headers={"x-goog-api-key": ALICE_TOKEN}).raise_for_status()
    bridge.stop()
    first, second = records(bridge)
    assert first["model"] == "gemini-2.5-pro" and first["response_model"] == "gemini-2.5-pro-002"
    assert first["correlating_tool_call_id"] == "call-7"
    assert (first["input_tokens"], first["output_tokens"]) == (40, 5)
    assert first["provider_type"] == "gemini" and first["streaming"] == 0
    assert second["streaming"] == 1 and second["outcome"] == "completed"
    assert (second["input_tokens"], second["output_tokens"], second["cache_read_tokens"]) == (
        11, 9, 3)
    assert json.loads(second["extra"]) == {"output_reasoning": 2}
    for row in (first, second):
        assert row["price_source"].startswith("genai-prices:google/"), row
        assert row["cost_usd"] is not None and float(row["cost_usd"]) > 0
    tools = sqlite3.connect(bridge.workdir / "data" / "aibridge.db").execute(
        "SELECT tool, tool_call_id, arguments FROM tool_usages").fetchall()
    assert tools == [("get_time", "call-8", '{"tz":"UTC"}')]


def test_rate_limited_keys_fail_over_then_get_googles_envelope_with_retry_info(fake,
                                                                                make_bridge):
    extra = f'[providers.gemini]\nupstream = "{fake.url}"\n'
    bridge = make_bridge(provider_config(fake.url, extra=extra),
                         env={"AIBRIDGE_GEMINI_KEYS": f"{KEY_1},{KEY_2}"})
    fake.enqueue(gemini_rate_limited("30s"))
    with client(bridge) as c:
        first = c.post(GENERATE, json=BODY, headers={"x-goog-api-key": ALICE_TOKEN})
        assert first.status_code == 200, first.text  # the second key answered
        fake.enqueue(gemini_rate_limited("45s"))  # key two, now; key one still rests
        second = c.post(GENERATE, json=BODY, headers={"x-goog-api-key": ALICE_TOKEN})
        third = c.post(GENERATE, json=BODY, headers={"x-goog-api-key": ALICE_TOKEN})
    assert [r.header("x-goog-api-key") for r in fake.requests] == [KEY_1, KEY_2, KEY_2]
    for refused in (second, third):
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    # The bridge's own refusal: the keys rest as long as Google's RetryInfo said.
    details = {d["@type"].rsplit(".", 1)[-1]: d for d in third.json()["error"]["details"]}
    assert details["ErrorInfo"]["domain"] == "aibridge"
    assert 25 <= float(details["RetryInfo"]["retryDelay"].rstrip("s")) <= 30
    assert 25 <= int(third.headers["retry-after"]) <= 30


def test_an_invalid_key_fails_over_to_the_next(fake, make_bridge):
    extra = f'[providers.gemini]\nupstream = "{fake.url}"\n'
    bridge = make_bridge(provider_config(fake.url, extra=extra),
                         env={"AIBRIDGE_GEMINI_KEYS": f"{KEY_1},{KEY_2}"})
    fake.enqueue(gemini_error(400, "API key not valid. Please pass a valid API key.",
                              reason="API_KEY_INVALID"))
    with client(bridge) as c:
        answer = c.post(GENERATE, json=BODY)
    assert answer.status_code == 200, answer.text
    assert [r.header("x-goog-api-key") for r in fake.requests] == [KEY_1, KEY_2]


def test_failures_reach_the_client_in_googles_shapes(bridge, fake):
    chunks = [gemini_chunk([{"text": d}], model="gemini-2.5-flash", n=1) for d in TEXT.split()]
    html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    fake.enqueue(Reply(status=502, body=html, headers=[("Content-Type", "text/html")]))
    cut_sse = gemini_stream(chunks, sse=True)
    cut_sse.close_after_events = 2
    cut_array = gemini_stream(chunks, sse=False)
    cut_array.close_after_events = 2
    fake.enqueue(cut_sse)
    fake.enqueue(cut_array)
    # One client each: the bridge closes a connection whose stream it had to end.
    with client(bridge) as c:
        page = c.post(GENERATE, json=BODY, headers={"x-goog-api-key": ALICE_TOKEN})
    with client(bridge) as c:
        sse = c.post(STREAM, params={"alt": "sse"}, json=BODY,
                     headers={"x-goog-api-key": ALICE_TOKEN})
    with client(bridge) as c:
        array = c.post(STREAM, json=BODY, headers={"x-goog-api-key": ALICE_TOKEN})
    assert page.status_code == 502
    error = page.json()["error"]
    assert (error["code"], error["status"]) == (502, "UNAVAILABLE")
    assert "502 Bad Gateway" in error["message"]
    events = sse_chunks(sse.text)
    assert answer_text(events[:2]) == "Hellofrom"
    assert events[-1]["error"]["message"].startswith("gemini: stream interrupted")
    elements = json.loads(array.text)  # still one well-formed JSON array
    assert answer_text(elements[:2]) == "Hellofrom"
    assert elements[-1]["error"]["code"] == 502


# -- Gemini CLI ------------------------------------------------------------------------------------

QUIET_SETTINGS = {"privacy": {"usageStatisticsEnabled": False},
                  "telemetry": {"enabled": False},
                  "general": {"disableAutoUpdate": True, "disableUpdateNag": True}}


def test_gemini_cli_answers_through_the_bridge(bridge, fake, tmp_path: Path):
    gemini = AGENTS / "gemini"
    assert gemini.exists(), "gemini missing: run scripts/setup (install-agents)"
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(QUIET_SETTINGS))
    node = shutil.which("node")
    assert node is not None
    env = {"PATH": f"{Path(node).parent}:/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb",
           "HOME": str(home), "HTTPS_PROXY": bridge.proxy_url(),
           "NODE_EXTRA_CA_CERTS": bridge.ca,
           # The API key is the proxy token: in auto mode that means "use the central key".
           "GEMINI_API_KEY": ALICE_TOKEN, "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    result = subprocess.run([str(gemini), "-p", "say hi", "--output-format", "json"], env=env,
                            cwd=home, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["response"] == TEXT
    # Gemini CLI read the usage the fake sent (prompt 11 of which 3 cached, thoughts 2).
    tokens = next(iter(out["stats"]["models"].values()))["tokens"]
    assert (tokens["prompt"], tokens["cached"], tokens["thoughts"]) == (11, 3, 2)
    streams = [r for r in fake.requests if ":streamGenerateContent" in r.path]
    assert streams and streams[-1].path.endswith("?alt=sse")
    assert all(r.header("x-goog-api-key") == KEY_1 for r in fake.requests)
    assert all(r.header("X-AI-Bridge-Actor-ID") == "alice" for r in fake.requests)
    assert (streams[-1].header("user-agent") or "").startswith("GeminiCLI")
    bridge.wait_for_log(r"provider=gemini model=\S+ stream=True status=200 .*outcome=completed")
