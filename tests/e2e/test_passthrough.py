"""Passthroughs through a real mitmdump: path normal form (variants of bridged routes are bridged,
unsafe paths refused), embeddings bridged with usage, every passthrough recorded and logged,
deny lists, and large bodies streamed or refused before they are read."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import pytest

from tests.e2e.harness import ANTHROPIC_KEY, OPENAI_KEY, BridgeProcess
from tests.e2e.test_hostile import Reader, memory_kib, open_tls
from tests.fakeprovider import FakeProvider, Reply

MIB = 1 << 20
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def config(upstream: str) -> str:
    return f"""
[providers.openai]
upstream = "{upstream}"
deny = ["/v1/batches", "/v1/files/denied"]

[providers.anthropic]
upstream = "{upstream}"
credentials = "auto"
deny = ["/v1/messages/batches"]

[auth]
actors_file = "actors.toml"

[egress]
allow = ["127.0.0.0/8"]
"""


@pytest.fixture(scope="module")
def bridge(fake: FakeProvider, make_bridge) -> BridgeProcess:
    return make_bridge(config(fake.url))


def db_rows(bridge: BridgeProcess, sql: str, count: int, timeout: float = 10) -> list[dict]:
    """Rows of `sql` once there are at least `count` (the recorder writes in batches)."""
    db = bridge.workdir / "data" / "aibridge.db"
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute(sql)]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def curl(bridge: BridgeProcess, path: str, *args: str,
         host: str = "api.openai.com") -> tuple[int, dict | None]:
    result = bridge.curl("--path-as-is", "-w", "\n%{http_code}", f"https://{host}{path}", *args)
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), json.loads(body) if body.strip() else None


# -- embeddings ---------------------------------------------------------------------------------


def test_embeddings_are_bridged_with_their_usage(bridge, fake):
    result = bridge.openai().embeddings.create(model="text-embedding-3-small",
                                               input=["first text", "second text"])
    assert [d.embedding for d in result.data] == [[0.25, -0.5, 1.0]] * 2  # SDK decoded base64
    assert result.usage.prompt_tokens == 10
    (seen,) = fake.requests
    assert seen.path == "/v1/embeddings"
    assert seen.header("Authorization") == f"Bearer {OPENAI_KEY}"
    bridge.wait_for_log(r"model=text-embedding-3-small stream=False status=200 .*"
                        r"credential=centralized:sk-c\.\.\.cdef in 10 out 0 outcome=completed")
    rows = db_rows(bridge, "SELECT i.route, i.streaming, t.input_tokens, t.output_tokens, "
                           "p.prompt FROM interceptions i "
                           "JOIN token_usages t ON t.interception_id = i.id "
                           "JOIN prompt_usages p ON p.interception_id = i.id "
                           "WHERE i.model = 'text-embedding-3-small'", 1)
    assert rows == [{"route": "/v1/embeddings", "streaming": 0, "input_tokens": 10,
                     "output_tokens": 0, "prompt": "first text\nsecond text"}]


# -- path normal form ---------------------------------------------------------------------------

VARIANTS = ["/v1/chat/completions/", "/v1/chat/completions;x", "/v1/./chat/completions",
            "/v1/chat%2fcompletions", "/v1/chat%2Fcompletions", "//v1//chat/completions",
            "/v1/models/../chat/completions?x=1"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_of_a_bridged_route_are_bridged_and_forwarded_in_normal_form(bridge, fake,
                                                                              variant):
    model = f"gpt-variant-{VARIANTS.index(variant)}"
    status, body = curl(bridge, variant, "-H", "Content-Type: application/json",
                        "-d", json.dumps({**CHAT, "model": model}))
    assert status == 200, body
    (seen,) = fake.requests
    assert seen.path == "/v1/chat/completions" + ("?x=1" if "?" in variant else "")
    # An interception: recorded and logged as a model request, not passed through.
    bridge.wait_for_log(rf"model={model} stream=False status=200 .* outcome=completed")
    rows = db_rows(bridge, f"SELECT route FROM interceptions WHERE model = '{model}'", 1)
    assert rows == [{"route": "/v1/chat/completions"}]


def test_a_variant_gets_the_size_limit_of_its_route(bridge, fake):
    with open_tls(bridge) as tls:
        tls.sendall(b"POST /v1/chat/completions/ HTTP/1.1\r\nHost: api.openai.com\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 40000000\r\n\r\n")
        answer = Reader(tls).response()
    assert answer.status == 413, answer
    assert "32MiB" in answer.json()["error"]["message"]
    assert fake.requests == []


@pytest.mark.parametrize(("host", "path", "why"), [
    ("api.openai.com", "/v1/../admin", "base path"),
    ("api.openai.com", "/v1/%2e%2e/admin", "escaped dot segment"),
    ("api.openai.com", "/v1/chat/completions%00", "%00"),
    ("api.anthropic.com", "/v1/messages/../../admin", "base path"),
    ("api.anthropic.com", "/v1/.%2e/messages", "escaped dot segment"),
])
def test_paths_without_one_safe_reading_are_refused_in_the_routes_shape(bridge, fake, host,
                                                                          path, why):
    status, body = curl(bridge, path, "-X", "POST", "-H", "Content-Type: application/json",
                        "-d", "{}", host=host)
    assert status == 400, body
    assert why in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    if host == "api.anthropic.com":
        assert body["type"] == "error"  # Anthropic's envelope
    else:
        assert body["error"]["code"] == "invalid_path"  # OpenAI's
    assert fake.requests == []


# -- passthrough records and log lines ----------------------------------------------------------


def test_passthroughs_are_recorded_and_logged_apart_from_model_requests(bridge, fake):
    models = bridge.openai(token="bob-proxy-token-5678").models.list()
    assert [m.id for m in models.data] == ["gpt-4o", "claude-sonnet-4-5"]
    assert fake.requests[-1].header("Authorization") == f"Bearer {OPENAI_KEY}"
    line = bridge.wait_for_log(r"aibridge: passthrough \S+ actor=bob provider=openai GET "
                               r"/v1/models status=200 credential=centralized:sk-c\.\.\.cdef "
                               r"bytes in=0 out=(\d+) outcome=completed")
    # The caller's own key (Anthropic in auto mode) is recorded too, as BYOK.
    own = "sk-ant-own-key-0123456789abcdef"
    count = bridge.anthropic(api_key=own).messages.count_tokens(
        model="claude-sonnet-5", messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens == 11
    assert fake.requests[-1].header("Authorization") == f"Bearer {own}"  # as the SDK sent it
    rows = db_rows(bridge, "SELECT actor_id, provider, method, path, status, outcome, "
                           "request_bytes, response_bytes, credential_kind, credential_hint "
                           "FROM passthroughs WHERE actor_id = 'bob' OR credential_kind = "
                           "'byok' ORDER BY started_at", 2)
    assert rows[0] == {"actor_id": "bob", "provider": "openai", "method": "GET",
                       "path": "/v1/models", "status": 200, "outcome": "completed",
                       "request_bytes": 0, "response_bytes": int(line[1]),
                       "credential_kind": "centralized", "credential_hint": "sk-c...cdef"}
    assert rows[1]["path"] == "/v1/messages/count_tokens"
    assert rows[1]["credential_kind"] == "byok" and rows[1]["credential_hint"] == "sk-a...cdef"
    assert rows[1]["request_bytes"] > 0
    # Neither is a model request.
    assert db_rows(bridge, "SELECT id FROM interceptions WHERE actor_id = 'bob' OR route "
                           "LIKE '%count_tokens'", 0) == []
    dump = json.dumps(db_rows(bridge, "SELECT * FROM passthroughs", 1))
    assert OPENAI_KEY not in dump and ANTHROPIC_KEY not in dump and own not in dump
    # `aibridge usage --passthrough` reports them; the model report does not count them.
    config = bridge.workdir / "report.toml"
    config.write_text(f'[recording]\nurl = "sqlite:///{bridge.workdir}/data/aibridge.db"\n')
    aibridge = str(Path(sys.executable).with_name("aibridge"))
    report = json.loads(subprocess.run(
        [aibridge, "usage", "--config", str(config), "--passthrough", "--format", "json",
         "--actor", "bob"], capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [(r["actor"], r["provider"], r["requests"], r["central"]) for r in report] == [
        ("bob", "openai", 1, 1)]
    models = json.loads(subprocess.run(
        [aibridge, "usage", "--config", str(config), "--format", "json", "--actor", "bob"],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    assert models == []


def test_denied_paths_are_refused_recorded_and_logged(bridge, fake):
    client = bridge.anthropic()
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client.messages.batches.create(requests=[{"custom_id": "1", "params": {
            "model": "claude-sonnet-5", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}}])
    assert denied.value.status_code == 403
    assert "deny list" in denied.value.message
    assert denied.value.body["type"] == "error"  # Anthropic's envelope
    assert denied.value.body["error"]["type"] == "permission_error"
    status, body = curl(bridge, "/v1/batches", "-d", "{}", "-H",
                        "Content-Type: application/json")
    assert status == 403 and body["error"]["code"] == "route_denied"
    status, body = curl(bridge, "/v1/files/denied/x")
    assert status == 403
    assert fake.requests == []
    bridge.wait_for_log(r"rejected POST /v1/messages/batches from alice: 403 route denied")
    rows = db_rows(bridge, "SELECT provider, method, path, status, outcome, error_type "
                           "FROM passthroughs WHERE status = 403 ORDER BY started_at", 3)
    assert [(r["provider"], r["method"], r["path"], r["outcome"]) for r in rows] == [
        ("anthropic", "POST", "/v1/messages/batches", "rejected"),
        ("openai", "POST", "/v1/batches", "rejected"),
        ("openai", "GET", "/v1/files/denied/x", "rejected")]


# -- large bodies -------------------------------------------------------------------------------


def test_a_large_upload_is_streamed_and_memory_stays_bounded(bridge, fake, tmp_path):
    size = 64 * MIB
    upload = tmp_path / "upload.bin"
    with upload.open("wb") as f:
        for i in range(size // MIB):
            f.write(hashlib.sha256(b"%d" % i).digest() * (MIB // 32))
    fake.enqueue(Reply(body={"id": "file-1", "object": "file", "bytes": size}), path="/v1/files")
    pid = bridge.proc.pid
    before = memory_kib(pid)["VmRSS"]
    status, body = curl(bridge, "/v1/files", "-H", "Content-Type: application/octet-stream",
                        "--data-binary", f"@{upload}")
    grown = memory_kib(pid)["VmRSS"] - before
    assert status == 200 and body["id"] == "file-1"
    (seen,) = fake.requests
    assert len(seen.body) == size
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(upload.read_bytes()).digest()
    assert seen.header("Authorization") == f"Bearer {OPENAI_KEY}"
    assert seen.header("Content-Length") == str(size)
    assert grown < 16 << 10, f"RSS grew {grown} KiB for a {size >> 20} MiB upload"
    rows = db_rows(bridge, "SELECT request_bytes, status FROM passthroughs "
                           "WHERE path = '/v1/files' AND status = 200", 1)
    assert rows == [{"request_bytes": size, "status": 200}]


def test_a_chunked_upload_is_streamed_with_its_framing(bridge, fake, tmp_path):
    upload = tmp_path / "chunked.bin"
    upload.write_bytes(b"0123456789abcdef" * (MIB // 4))  # 4 MiB
    fake.enqueue(Reply(body={"id": "file-2"}), path="/v1/files")
    status, body = curl(bridge, "/v1/files", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", f"@{upload}")
    assert status == 200, body
    (seen,) = fake.requests
    assert seen.body == upload.read_bytes()
    assert seen.header("Transfer-Encoding") == "chunked"
    assert seen.header("Content-Length") is None


@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "body-at-once"])
def test_an_upload_over_the_passthrough_limit_is_refused_unread(bridge, fake, tmp_path,
                                                                expect):
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(101 * MIB)  # over the default 100 MiB; sparse, so cheap to make
    pid = bridge.proc.pid
    before = memory_kib(pid)["VmRSS"]
    # curl waits only 1 s for "100 Continue" before it sends the body anyway: on a loaded
    # machine the answer can take longer, so let it wait as a patient client would.
    extra = ["--expect100-timeout", "30"] if expect else ["-H", "Expect:"]  # body at once
    result = bridge.curl("-w", "\n%{http_code}", "https://api.openai.com/v1/files",
                         "--data-binary", f"@{big}", *extra)
    grown = memory_kib(pid)["VmRSS"] - before
    assert grown < 16 << 10, f"RSS grew {grown} KiB for a 101 MiB upload"
    assert fake.requests == []
    body, _, status = result.stdout.rpartition("\n")
    if expect or status == "413":  # pushing the body at once, curl may see the reset first
        assert status == "413", result
        assert "100MiB" in json.loads(body)["error"]["message"]
    bridge.wait_for_log(r"rejected POST /v1/files from alice: 413 Request body too large")


@pytest.mark.parametrize(("host", "path"), [("api.openai.com", b"/v1/files"),
                                            ("api.openai.com", b"/v1/chat/completions"),
                                            ("api.anthropic.com", b"/v1/messages")])
def test_a_body_declared_too_large_is_answered_before_any_of_it_is_sent(bridge, fake, host,
                                                                         path):
    """Only the head is sent: the answer cannot wait for a body that never comes."""
    with open_tls(bridge, host) as tls:
        tls.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: " + host.encode() +
                    b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 10737418240\r\n\r\n")  # 10 GiB
        reader = Reader(tls)
        answer = reader.response()
        assert answer.status == 413, answer
        assert answer.header("Connection") == "close"
        assert reader.closes()
    error = answer.json()
    assert "Request body too large" in (error["error"]["message"])
    if host == "api.anthropic.com":
        assert error["type"] == "error"
    assert fake.requests == []


def test_the_proxy_still_serves_after_refusing_unread_bodies(bridge):
    reply = bridge.openai().chat.completions.create(**CHAT)
    assert reply.choices[0].message.content == "Hello from fake"
    assert "Traceback" not in bridge.log()
    assert not any(p.name.endswith(".rejected.jsonl") for p in Path(bridge.workdir).rglob("*"))
