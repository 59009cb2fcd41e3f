"""Start a real `mitmdump` with the bridge addon, and clients that go through it."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
from pathlib import Path

import anthropic
import openai

from scripts.mitmlaunch import MITMDUMP, Mitmdump

ROOT = Path(__file__).resolve().parents[2]

OPENAI_KEY = "sk-central-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-central-0123456789abcdefgh"
ALICE_TOKEN = "alice-proxy-token-1234"
BOB_TOKEN = "bob-proxy-token-5678"

ACTORS_TOML = f"""
[[actors]]
id = "alice"
token = "{ALICE_TOKEN}"
metadata = {{ Username = "alice", Team = "ml" }}

[[actors]]
id = "bob"
token = "sha256:{__import__('hashlib').sha256(BOB_TOKEN.encode()).hexdigest()}"
metadata = {{ Username = "bob" }}
"""


class BridgeProcess(Mitmdump):
    """mitmdump with the bridge addon; `workdir` holds its config, confdir (`certs/`), saved
    flows and log (kept in a file so tests can grep it). `env` adds to ours and the tests'
    central keys; `args` come after the bridge's own options."""

    def __init__(self, workdir: Path, config: str, *, env: dict[str, str] | None = None,
                 args: list[str] | None = None, script: str | None = None,
                 cwd: Path | None = None, mode: str = "regular", program: Path = MITMDUMP,
                 log_name: str = "mitmdump.log", save_flows: bool = True) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "aibridge.toml"
        self.config_path.write_text(config)
        self.flows_path = workdir / "flows.mitm"
        own = ["--set", f"bridge_config={self.config_path}"]
        if save_flows:
            own += ["--set", f"save_stream_file={self.flows_path}"]
        super().__init__(
            workdir / log_name, script=script or str(ROOT / "addon" / "bridge.py"),
            args=[*own, *(args or [])], confdir=workdir / "certs", cwd=cwd or workdir,
            mode=mode, program=program,
            env={**os.environ, "AIBRIDGE_DATA_DIR": str(workdir / "data"),
                 "AIBRIDGE_OPENAI_KEYS": OPENAI_KEY, "AIBRIDGE_ANTHROPIC_KEYS": ANTHROPIC_KEY,
                 **(env or {})})

    def proxy_url(self, token: str | None = ALICE_TOKEN, user: str = "dev") -> str:
        creds = f"{user}:{token}@" if token else ""
        return f"http://{creds}127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    # -- clients -------------------------------------------------------------------------------

    def openai(self, token: str | None = ALICE_TOKEN, api_key: str = "sk-user-placeholder",
               **kw) -> openai.OpenAI:
        http_client = openai.DefaultHttpxClient(proxy=self.proxy_url(token),
                                                verify=self.ssl_context())
        return openai.OpenAI(api_key=api_key, http_client=http_client,
                             max_retries=kw.pop("max_retries", 0), **kw)

    def async_openai(self, token: str | None = ALICE_TOKEN, api_key: str = "sk-user-placeholder",
                     **kw) -> openai.AsyncOpenAI:
        http_client = openai.DefaultAsyncHttpxClient(proxy=self.proxy_url(token),
                                                     verify=self.ssl_context())
        return openai.AsyncOpenAI(api_key=api_key, http_client=http_client,
                                  max_retries=kw.pop("max_retries", 0), **kw)

    # The Anthropic SDK sends its API key as `Authorization: Bearer`; in `auto` mode a key equal
    # to the caller's proxy token means "use the central key", anything else is the caller's own.
    def anthropic(self, token: str | None = ALICE_TOKEN, api_key: str | None = ALICE_TOKEN,
                  **kw) -> anthropic.Anthropic:
        http_client = anthropic.DefaultHttpxClient(proxy=self.proxy_url(token),
                                                   verify=self.ssl_context())
        return anthropic.Anthropic(api_key=api_key, http_client=http_client,
                                   max_retries=kw.pop("max_retries", 0), **kw)

    def async_anthropic(self, token: str | None = ALICE_TOKEN, api_key: str | None = ALICE_TOKEN,
                        **kw) -> anthropic.AsyncAnthropic:
        http_client = anthropic.DefaultAsyncHttpxClient(proxy=self.proxy_url(token),
                                                        verify=self.ssl_context())
        return anthropic.AsyncAnthropic(api_key=api_key, http_client=http_client,
                                        max_retries=kw.pop("max_retries", 0), **kw)

    def curl(self, *args: str, token: str | None = ALICE_TOKEN,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "--proxy",
               f"http://127.0.0.1:{self.port}", "--cacert", self.ca]
        if token:
            cmd += ["--proxy-user", f"dev:{token}"]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout + 5)

    def connect(self, host: str, port: int, token: str | None = ALICE_TOKEN
                ) -> tuple[socket.socket, bytes]:
        """A raw CONNECT; returns the socket and the proxy's response head."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        head = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if token:
            basic = base64.b64encode(f"dev:{token}".encode()).decode()
            head += f"Proxy-Authorization: Basic {basic}\r\n"
        sock.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return sock, data


def provider_config(upstream: str, *, extra: str = "", actors: bool = True,
                    egress_allow: tuple[str, ...] = ("127.0.0.0/8",)) -> str:
    """Providers retargeted to the fake. The tests' other servers live on loopback, which the
    bridge refuses to reach for clients by default: `egress_allow` opens it for them."""
    auth = '[auth]\nactors_file = "actors.toml"\n' if actors else ""
    egress = f"[egress]\nallow = {list(egress_allow)!r}\n".replace("'", '"')
    return f"""
[providers.openai]
upstream = "{upstream}"

[providers.anthropic]
upstream = "{upstream}"
credentials = "auto"

{auth}
{egress}
{extra}
"""
