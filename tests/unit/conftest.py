"""Shared set-up for the in-process addon tests (tests/unit/test_addon_*.py).

`make_bridge` builds the real addon chain (`aibridge.addons.chain.chain`) under mitmproxy's
`taddons` test master, configured from a TOML file written to tmp_path, with proxy
authentication on (an actors file) and every provider aimed at a dead local port (nothing ever
connects: hooks are called directly). Flows are built with mitmproxy's `tflow`/`tutils`.
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection, http
from mitmproxy.test import taddons, tflow, tutils

from aibridge.addons.chain import chain
from aibridge.addons.runtime import Runtime
from aibridge.providers.sse_shortcut import Shortcut
from aibridge.state.redis_shared import Shared
from tests.conftest import RedisServer

TOKEN = "alice-proxy-token-0123"
OPENAI_KEY = "sk-proj-central-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-api03-central-anthropic-0123456789"
DEAD_UPSTREAM = "http://127.0.0.1:9"
BASE_CONFIG = f"""\
[auth]
actors_file = "actors.toml"
[recording]
enabled = false
[providers.openai]
upstream = "{DEAD_UPSTREAM}"
[providers.anthropic]
upstream = "{DEAD_UPSTREAM}"
"""
ACTORS = f'[[actors]]\nid = "alice"\ntoken = "{TOKEN}"\nmetadata = {{ Team = "ml" }}\n'


async def run_hook(addons: Iterable[object], name: str, *args: Any) -> None:
    """What mitmproxy does for one event: call `name` on every addon that has it, in order."""
    for addon in addons:
        method = getattr(addon, name, None)
        if method is not None:
            result = method(*args)
            if inspect.isawaitable(result):
                await result


@dataclass
class Bridge:
    runtime: Runtime
    addons: list[object]
    tctx: taddons.context
    config: Path

    def addon(self, kind: type) -> Any:
        return next(a for a in self.addons if isinstance(a, kind))

    async def hook(self, name: str, *args: Any) -> None:
        await run_hook(self.addons, name, *args)

    async def tunnel(self, host: str, token: str | None = TOKEN) -> connection.Client:
        """A client connection whose CONNECT to host:443 went through the chain and passed."""
        flow = connect_flow(host, token=token)
        await self.hook("http_connect", flow)
        assert flow.response is None, flow.response and flow.response.content
        flow.client_conn.sni = host
        return flow.client_conn

    async def send(self, flow: http.HTTPFlow, until: str = "request") -> http.HTTPFlow:
        """Run the request-side hooks in mitmproxy's order, up to and including `until`."""
        for name in ("requestheaders", "request"):
            await self.hook(name, flow)
            if name == until:
                break
        return flow


@pytest.fixture
async def make_bridge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[Callable[..., Bridge]]:
    monkeypatch.setenv("AIBRIDGE_OPENAI_KEYS", OPENAI_KEY)
    monkeypatch.setenv("AIBRIDGE_ANTHROPIC_KEYS", ANTHROPIC_KEY)
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path))
    (tmp_path / "actors.toml").write_text(ACTORS)
    made: list[Bridge] = []

    def make(config: str = BASE_CONFIG, extra_addons: Iterable[object] = ()) -> Bridge:
        path = tmp_path / "aibridge.toml"
        path.write_text(config)
        runtime = Runtime()
        addons = chain(runtime)
        tctx = taddons.context(*addons, *extra_addons)
        tctx.configure(addons[0], bridge_config=str(path))
        made.append(Bridge(runtime, addons, tctx, path))
        return made[-1]

    yield make
    for bridge in made:
        await bridge.runtime.drop_resend_client()


@pytest.fixture
async def bridge(make_bridge: Callable[..., Bridge]) -> Bridge:
    return make_bridge()


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"x:{token}".encode()).decode()


def connect_flow(host: str, port: int = 443, token: str | None = TOKEN) -> http.HTTPFlow:
    headers = http.Headers(proxy_authorization=basic(token)) if token else http.Headers()
    request = tutils.treq(method=b"CONNECT", scheme=b"", host=host, port=port,
                          authority=f"{host}:{port}".encode(), path=b"", headers=headers,
                          content=b"")
    return tflow.tflow(req=request)


def provider_flow(client: connection.Client, host: str, path: str, *, method: str = "POST",
                  headers: dict[str, str] | None = None, body: object = None,
                  content: bytes | None = None) -> http.HTTPFlow:
    """A decrypted request inside a TLS tunnel to `host` (SNI = host)."""
    fields = {"host": host, **(headers or {})}
    if content is None:
        content = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            fields.setdefault("content-type", "application/json")
    fields["content-length"] = str(len(content))
    request = tutils.treq(method=method.encode(), scheme=b"https", host=host, port=443,
                          authority=b"", path=path.encode(),
                          headers=http.Headers(**{k.replace("-", "_"): v
                                                  for k, v in fields.items()}),
                          content=content)
    return tflow.tflow(client_conn=client, req=request)


def plain_flow(host: str, path: str = "/", headers: dict[str, str] | None = None,
               client: connection.Client | None = None) -> http.HTTPFlow:
    """A plain-HTTP proxy request (absolute form, no CONNECT, no TLS)."""
    if client is None:
        client = tflow.tclient_conn()
        client.timestamp_tls_setup = None
        client.sni = None
    request = tutils.treq(method=b"GET", scheme=b"http", host=host, port=80,
                          authority=host.encode(), path=path.encode(),
                          headers=http.Headers(**{k.replace("-", "_"): v
                                                  for k, v in (headers or {}).items()}),
                          content=b"")
    return tflow.tflow(client_conn=client, req=request)


def json_of(flow: http.HTTPFlow) -> dict[str, Any]:
    assert flow.response is not None
    assert flow.response.headers.get("content-type", "").startswith("application/json")
    return json.loads(flow.response.get_content())


@pytest.fixture
def shared(redis_server: RedisServer) -> Iterator[Callable[[], Shared]]:
    """Open links to the test Redis, as separate processes would; all closed at the end."""
    opened: list[Shared] = []

    def open_one() -> Shared:
        s = Shared(redis_server.url, timeout=0.05, retry_interval=0.1, prefix="t")
        s.start()
        opened.append(s)
        return s
    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def hits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The strings stream shortcuts took without parsing their events."""
    taken: list[str] = []
    original = Shortcut.string

    def string(self: Shortcut, data: bytes) -> str | None:
        piece = original(self, data)
        if piece is not None:
            taken.append(piece)
        return piece

    monkeypatch.setattr(Shortcut, "string", string)
    return taken
