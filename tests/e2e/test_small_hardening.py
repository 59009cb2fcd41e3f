"""Smaller hardening: forged actor headers in any spelling and on untouched routes, long and
hostile model names, bridge-made 502s that name the provider rather than internal addresses,
and HTTP/2 on provider hosts."""

from __future__ import annotations

import json
import socket
import subprocess

import h2.config
import h2.connection
import h2.events
import openai
import pytest

from tests.e2e.harness import ROOT, provider_config

MESSAGES = [{"role": "user", "content": "hi"}]
FORGED = {"X_AI_Bridge_Actor_Id": "mallory", "x_ai_bridge_actor_metadata_username": "mallory",
          "X-AI_Bridge-Actor_Metadata-Team": "mallory"}
CHAT = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hardened(fake, make_bridge):
    extra = f"""
[providers.chatgpt]
upstream = "{fake.url}"

[providers.refused]
type = "openai"
hosts = ["refused.example"]
upstream = "http://127.0.0.1:{closed_port()}"
credentials = "byok"

[providers.gateway]
type = "anthropic"
hosts = ["gateway.example"]
upstream = "https://llm-gateway.corp.invalid:8443"
credentials = "byok"
"""
    return make_bridge(provider_config(fake.url, extra=extra))


def forged_values(seen) -> list[tuple[str, str]]:
    return [(n, v) for n, v in seen.headers if v == "mallory"]


# -- actor headers -------------------------------------------------------------------------


def test_underscore_actor_headers_never_reach_the_provider(hardened, fake):
    hardened.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                              extra_headers=FORGED)
    seen = fake.requests[-1]
    assert forged_values(seen) == []
    assert seen.header("X-AI-Bridge-Actor-ID") == "alice"  # the trusted one


def test_untouched_routes_lose_forged_actor_headers_too(hardened, fake):
    """chatgpt.com outside the Codex paths is forwarded as sent, except for these."""
    headers = [arg for name, value in {**FORGED, "X-AI-Bridge-Actor-ID": "mallory",
                                       "X-Kept": "yes"}.items()
               for arg in ("-H", f"{name}: {value}")]
    result = hardened.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", *headers,
                           "https://chatgpt.com/backend-api/me")
    assert result.returncode == 0, result.stderr
    seen = fake.requests[-1]
    assert seen.path == "/backend-api/me"
    assert forged_values(seen) == []
    assert seen.header("X-Kept") == "yes"  # everything else as sent


# -- model names ---------------------------------------------------------------------------


def test_long_and_hostile_model_names_are_cut_and_escaped(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url))
    hostile = "gpt-\x1b[31mred\x1b[0m\x07-" + "x" * 1000
    bridge.openai().chat.completions.create(model=hostile, messages=MESSAGES)
    assert fake.requests[-1].json()["model"] == hostile  # forwarded as sent: the provider judges
    bridge.stop()
    config = bridge.workdir / "report.toml"
    config.write_text(f'[recording]\nurl = "sqlite:///{bridge.workdir}/data/aibridge.db"\n')
    aibridge = str(ROOT / ".venv" / "bin" / "aibridge")
    report = json.loads(subprocess.run([aibridge, "usage", "--config", str(config), "--format",
                                        "json"], capture_output=True, text=True, timeout=60,
                                       check=True).stdout)
    recorded = report[0]["model"]
    assert len(recorded) == 256 and recorded.endswith("…") and hostile.startswith(recorded[:-1])
    table = subprocess.run([aibridge, "usage", "--config", str(config)], capture_output=True,
                           timeout=60, check=True).stdout
    assert b"\x1b" not in table and b"\x07" not in table  # nothing drives the terminal
    assert b"gpt-\\x1b[31mred\\x1b[0m\\x07-xxx" in table  # shown escaped instead


# -- bridge-made 502s ----------------------------------------------------------------------


def test_an_unreachable_upstream_is_named_by_provider_not_address(hardened):
    client = hardened.openai(base_url="https://refused.example/v1")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == ("upstream refused (refused.example) unreachable: "
                                          "connection refused")  # no 127.0.0.1:<port>
    hardened.wait_for_log(r"aibridge: refused: upstream 127\.0\.0\.1:\d+: ")  # for the operator


def test_an_internal_upstream_name_stays_out_of_the_message(hardened):
    result = hardened.curl("-s", "-H", "x-api-key: sk-ant-own-0123456789", "-H",
                           "anthropic-version: 2023-06-01", "-H", "content-type: application/json",
                           "-d", '{"model":"claude-x","max_tokens":1,"messages":[]}',
                           "https://gateway.example/v1/messages")
    body = json.loads(result.stdout)
    assert body["type"] == "error"
    assert body["error"]["message"] == ("upstream gateway (gateway.example) unreachable: "
                                        "name resolution failed")
    assert "corp.invalid" not in result.stdout and "8443" not in result.stdout


# -- HTTP/2 --------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--http2", "--http2-prior-knowledge"])
def test_curl_asking_for_http2_is_served_http11(hardened, flag):
    result = hardened.curl("-s", flag, "-w", "\n%{http_version}", "-H",
                           "content-type: application/json", "-d", CHAT.decode(),
                           "https://api.openai.com/v1/chat/completions")
    body, version = result.stdout.rsplit("\n", 1)
    assert version == "1.1"
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello from fake"


def h2_request(bridge, host: str, path: str, body: bytes) -> tuple[str | None, int, dict, bytes]:
    """POST over a TLS connection that offers only h2 in ALPN; returns the negotiated
    protocol, the status, the response headers and body."""
    sock, head = bridge.connect(host, 443)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = bridge.ssl_context()
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(sock, server_hostname=host) as tls:
        tls.settimeout(10)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "https"),
                              (":authority", host), ("content-type", "application/json"),
                              ("authorization", "Bearer sk-own-0123456789abcdef"),
                              ("content-length", str(len(body)))])
        conn.send_data(1, body, end_stream=True)
        tls.sendall(conn.data_to_send())
        status, headers, data, ended = 0, {}, b"", False
        while not ended and (chunk := tls.recv(65536)):
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                    status = int(headers[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    ended = True
            tls.sendall(conn.data_to_send())
        return tls.selected_alpn_protocol(), status, headers, data


@pytest.mark.parametrize(("host", "path"), [("api.openai.com", "/v1/chat/completions"),
                                            ("refused.example", "/v1/chat/completions")])
def test_an_h2_only_client_is_refused_in_json(hardened, fake, host, path):
    """Refused before anything goes upstream, so an unreachable upstream cannot answer it with
    mitmproxy's HTML page either."""
    before = len(fake.requests)
    alpn, status, headers, body = h2_request(hardened, host, path, CHAT)
    assert alpn == "h2"  # it can read the answer in its own protocol
    assert status == 505
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "http_version_not_supported"
    assert "use HTTP/1.1" in error["message"]
    assert len(fake.requests) == before


def test_an_http2_preface_without_alpn_is_refused(hardened, fake):
    """Prior knowledge over TLS (no ALPN): the connection speaks HTTP/1.1, and mitmproxy closes
    one that starts with the HTTP/2 preface; nothing goes upstream."""
    before = len(fake.requests)
    sock, head = hardened.connect("api.openai.com", 443)
    assert head.startswith(b"HTTP/1.1 200"), head
    with hardened.ssl_context().wrap_socket(sock, server_hostname="api.openai.com") as tls:
        assert tls.selected_alpn_protocol() is None
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/v1/models"), (":scheme", "https"),
                              (":authority", "api.openai.com")], end_stream=True)
        tls.sendall(conn.data_to_send())
        tls.settimeout(10)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply == b""
    hardened.wait_for_log("prior knowledge are currently not supported")
    assert len(fake.requests) == before
