"""Corporate egress chaining: the bridge under `--mode upstream:http://corp-proxy:port`.

A second, plain `mitmdump` plays the corporate proxy. Like most egress proxies it only tunnels
(`--ignore-hosts '.*'`: CONNECT, never decrypted) and forwards plain-HTTP requests; a tiny inline
script writes each CONNECT target and each forwarded request to a file. Provider traffic,
tunnelled hosts and the failover re-send must all show up there.

How each leg reaches the corporate proxy (observed): a request that arrived inside a CONNECT
(every SDK call) is tunnelled with a CONNECT to its target even when, as here, the provider's
upstream is the fake's plain-HTTP address; mitmproxy uses absolute form only for plain-HTTP
proxy requests from the client. The re-send (httpx2 with `proxy=`) sends a plain-HTTP upstream
in absolute form and an HTTPS one (production) with a CONNECT.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.mitmlaunch import Mitmdump
from tests.e2e.harness import ACTORS_TOML, ALICE_TOKEN, BridgeProcess, provider_config
from tests.fakeprovider import FakeProvider, Reply, tls_context_for

# Records what the corporate proxy handles, one JSON object per line; `auth` tells whether the
# bridge sent Proxy-Authorization (it must never pass on its own clients' tokens).
CORP_SCRIPT = """
import json, os
from mitmproxy import http

OUT = os.environ["CORP_RECORD"]

def _write(kind: str, flow: http.HTTPFlow) -> None:
    entry = {"kind": kind, "method": flow.request.method, "url": flow.request.url,
             "authority": f"{flow.request.host}:{flow.request.port}",
             "auth": flow.request.headers.get("proxy-authorization")}
    with open(OUT, "a") as f:
        f.write(json.dumps(entry) + "\\n")

def http_connect(flow: http.HTTPFlow) -> None:
    _write("connect", flow)

def requestheaders(flow: http.HTTPFlow) -> None:
    _write("request", flow)
"""

KEYS = ["sk-corp-key-0-aaaaaaaaaaaa", "sk-corp-key-1-bbbbbbbbbbbb"]
MESSAGES = [{"role": "user", "content": "hi"}]
CORP_USER, CORP_PASSWORD = "svc-aibridge", "corp:pa@ss"  # ':' and '@' must survive the URL
CORP_AUTH = "Basic " + base64.b64encode(f"{CORP_USER}:{CORP_PASSWORD}".encode()).decode()


class CorporateProxy(Mitmdump):
    """A plain mitmdump without the bridge: tunnels everything, records what passes."""

    def __init__(self, workdir: Path) -> None:
        script = workdir / "corp_record.py"
        workdir.mkdir(parents=True, exist_ok=True)
        script.write_text(CORP_SCRIPT)
        self.record_path = workdir / "seen.jsonl"
        super().__init__(workdir / "mitmdump.log", script=script,
                         args=["--ignore-hosts", ".*"], confdir=workdir / "certs", cwd=workdir,
                         env={**os.environ, "CORP_RECORD": str(self.record_path)})

    def seen(self) -> list[dict]:
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines()]

    def wait_for(self, predicate: Callable[[dict], bool], count: int = 1,
                 timeout: float = 10) -> list[dict]:
        # The corporate proxy writes from its own process: poll until the entries are there.
        deadline = time.monotonic() + timeout
        while True:
            hits = [e for e in self.seen() if predicate(e)]
            if len(hits) >= count or time.monotonic() > deadline:
                return hits
            time.sleep(0.05)

    def clear(self) -> None:
        self.record_path.unlink(missing_ok=True)


class ChainedBridge(BridgeProcess):
    """The bridge with only an upstream-mode listener ("HTTP(S) proxy (upstream mode) listening
    at ..."): a regular listener beside it would let clients bypass the corporate proxy."""

    def __init__(self, workdir: Path, config: str, corp_port: int,
                 env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        super().__init__(workdir, config, env=env, args=args,
                         mode=f"upstream:http://127.0.0.1:{corp_port}")


@pytest.fixture(scope="module")
def corp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorporateProxy]:
    proxy = CorporateProxy(Path(tmp_path_factory.mktemp("corp"))).start()
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def _fresh_corp(corp: CorporateProxy) -> None:
    corp.clear()


@pytest.fixture(scope="module")
def chained(tmp_path_factory: pytest.TempPathFactory, corp: CorporateProxy,
            fake: FakeProvider) -> Iterator[Callable[..., ChainedBridge]]:
    started: list[ChainedBridge] = []

    def make(env: dict[str, str] | None = None, args: list[str] | None = None) -> ChainedBridge:
        workdir = Path(tmp_path_factory.mktemp("chained"))
        (workdir / "actors.toml").write_text(ACTORS_TOML)
        bridge = ChainedBridge(workdir, provider_config(fake.url), corp.port, env=env,
                               args=args)
        started.append(bridge)
        return bridge.start()

    yield make
    for bridge in started:
        bridge.stop()


@pytest.fixture(scope="module")
def bridge(chained: Callable[..., ChainedBridge]) -> ChainedBridge:
    return chained()


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[FakeProvider, str]]:
    """A non-provider HTTPS host with its own CA, standing in for github.com & co."""
    server_ctx, ca_path = tls_context_for(["localhost", "127.0.0.1"])
    with FakeProvider(tls=server_ctx) as server:
        yield server, ca_path


def to_fake(fake: FakeProvider) -> Callable[[dict], bool]:
    return lambda e: e["authority"] == f"127.0.0.1:{fake.port}"


def test_provider_request_leaves_through_the_corporate_proxy(bridge, corp, fake):
    reply = bridge.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from fake"
    # The bridge did its job (central key, actor header) ...
    assert fake.requests[-1].header("authorization") == "Bearer sk-central-openai-0123456789abcdef"
    assert fake.requests[-1].header("x-ai-bridge-actor-id") == "alice"
    # ... and the upstream leg went through the corporate proxy, tunnelled.
    [seen] = corp.wait_for(to_fake(fake))
    assert seen["kind"] == "connect"
    assert seen["auth"] is None  # the caller's proxy token stays at the bridge


def test_streaming_provider_request_leaves_through_the_corporate_proxy(bridge, corp, fake):
    with bridge.anthropic().messages.stream(model="claude-sonnet-5", max_tokens=8,
                                            messages=MESSAGES) as stream:
        assert stream.get_final_message().content[0].text == "Hello from fake"
    [seen] = corp.wait_for(to_fake(fake))
    assert seen["kind"] == "connect"


def test_tunnel_leaves_through_the_corporate_proxy(bridge, corp, tls_server):
    server, ca_path = tls_server
    sock, head = bridge.connect("localhost", server.port)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = ssl.create_default_context(cafile=ca_path)  # only the host's own CA: not decrypted
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    assert server.requests[-1].header("x-ai-bridge-actor-id") is None
    [seen] = corp.wait_for(lambda e: e["kind"] == "connect")
    assert seen["authority"] == f"localhost:{server.port}"
    assert seen["auth"] is None
    # The corporate proxy only tunnelled it: it never saw the request inside.
    assert corp.wait_for(lambda e: e["kind"] == "request", timeout=0.3) == []


def test_failover_resend_leaves_through_the_corporate_proxy(chained, corp, fake):
    """The re-send with the next key uses the addon's own HTTP client: it must take the
    corporate proxy too (addon.py passes `proxy=resend.upstream_proxy_url(ctx.options)`), with
    the corporate proxy's credentials (`upstream_auth`) like mitmproxy's own connections."""
    bridge = chained(env={"AIBRIDGE_OPENAI_KEYS": ",".join(KEYS)},
                     args=["--set", f"upstream_auth={CORP_USER}:{CORP_PASSWORD}"])
    try:
        fake.enqueue(Reply(status=429, headers=[("retry-after", "5")],
                           body={"error": {"message": "Rate limit reached",
                                           "type": "rate_limit_error", "param": None,
                                           "code": "rate_limit_exceeded"}}))
        reply = bridge.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert reply.choices[0].message.content == "Hello from fake"
        keys = [r.header("authorization") for r in fake.requests]
        assert keys == [f"Bearer {KEYS[0]}", f"Bearer {KEYS[1]}"]
        # First attempt: mitmproxy's tunnel. Re-send: the addon's client, absolute form.
        seen = corp.wait_for(to_fake(fake), count=2)
        assert [(e["kind"], e["method"]) for e in seen] == [
            ("connect", "CONNECT"), ("request", "POST")], (
            f"the failover re-send did not go through the corporate proxy: {seen}")
        assert seen[1]["url"] == f"http://127.0.0.1:{fake.port}/v1/chat/completions"
        assert [e["auth"] for e in seen] == [CORP_AUTH] * 2
    finally:
        bridge.stop()


def test_proxy_token_is_not_forwarded_on_plain_http(bridge, corp, fake):
    """A plain-HTTP proxy request to a non-provider host is forwarded without the caller's
    Proxy-Authorization (the bridge consumes it)."""
    result = bridge.curl(f"http://127.0.0.1:{fake.port}/v1/models", token=ALICE_TOKEN)
    assert result.returncode == 0, result.stderr
    [seen] = corp.wait_for(to_fake(fake))
    assert (seen["kind"], seen["url"]) == ("request", f"http://127.0.0.1:{fake.port}/v1/models")
    assert seen["auth"] is None


def test_health_is_answered_locally_in_upstream_mode(bridge, corp):
    """The probe deploy/Dockerfile's HEALTHCHECK sends: answered by the bridge itself, so it
    works (and says nothing) even when the corporate proxy is down."""
    result = subprocess.run(
        ["curl", "-fsS", "--max-time", "5", "--proxy", f"http://127.0.0.1:{bridge.port}",
         "http://aibridge.health/healthz"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ready"] is True
    assert corp.wait_for(lambda e: True, timeout=0.3) == []
