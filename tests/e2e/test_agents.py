"""The real coding agents (Claude Code, Codex CLI), installed by scripts/install-agents, with
nothing changed but HTTPS_PROXY and the CA variable, through the bridge to the fake provider."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import ALICE_TOKEN, ANTHROPIC_KEY, OPENAI_KEY, ROOT

AGENTS = ROOT / "tools" / "agents" / "node_modules" / ".bin"
CODEX_CONFIG = """
check_for_update_on_startup = false
[analytics]
enabled = false
[feedback]
enabled = false
[features]
api_key_model_discovery = false
plugins = false
"""


def run(cmd: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(cmd, env=base | env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def agents() -> Path:
    for name in ("claude", "codex"):
        assert (AGENTS / name).exists(), f"{name} missing: run scripts/setup (install-agents)"
    return AGENTS


def test_claude_code_prints_the_fake_answer(agents, bridge, fake, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = run([str(agents / "claude"), "-p", "say hi", "--output-format", "json",
                  "--max-turns", "1", "--model", "claude-sonnet-5"], {
        "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "HTTPS_PROXY": bridge.proxy_url(), "NODE_EXTRA_CA_CERTS": bridge.ca,
        # The API key is the proxy token: in auto mode that means "use the central key".
        "ANTHROPIC_API_KEY": ALICE_TOKEN,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["result"] == "Hello from fake"
    messages = [r for r in fake.requests if r.path.startswith("/v1/messages")]
    assert messages and messages[-1].json()["stream"] is True
    assert messages[-1].header("x-api-key") == ANTHROPIC_KEY
    assert messages[-1].header("X-AI-Bridge-Actor-ID") == "alice"
    assert "claude-code-20250219" in messages[-1].header("anthropic-beta")
    # Side endpoints reached the provider (passed through), none got a bridge error.
    side = [r.path for r in fake.requests if r.path.startswith("/api/claude_code/")]
    assert side, [r.path for r in fake.requests]
    assert "rejected" not in bridge.log()
    bridge.wait_for_log(r"model=claude-sonnet-5 stream=True status=200 .*outcome=completed")


def test_codex_uses_the_websocket_and_prints_the_fake_answer(agents, bridge, fake, tmp_path):
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(CODEX_CONFIG)
    result = run([str(agents / "codex"), "exec", "--skip-git-repo-check", "--ephemeral",
                  "-c", "features.unbounded_connection_retries=false",
                  "--dangerously-bypass-approvals-and-sandbox", "say hi"], {
        "HOME": str(tmp_path), "CODEX_HOME": str(codex_home),
        "HTTPS_PROXY": bridge.proxy_url(), "CODEX_CA_CERTIFICATE": bridge.ca,
        "CODEX_API_KEY": "sk-user-placeholder"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Hello from fake" in result.stdout
    assert "Falling back from WebSockets" not in result.stderr
    upgrade = [r for r in fake.requests if r.method == "GET" and r.path == "/v1/responses"]
    assert upgrade, [r.path for r in fake.requests]
    assert upgrade[-1].header("Authorization") == f"Bearer {OPENAI_KEY}"
    assert upgrade[-1].header("X-AI-Bridge-Actor-ID") == "alice"
    assert [r for r in fake.requests if r.method == "POST"] == []  # no HTTPS fallback
    assert any(f.get("type") == "response.create" for f in fake.ws_frames)
    bridge.wait_for_log(r"stream=True status=ws credential=centralized:sk-c\.\.\.cdef "
                        r"in 11 out 7 outcome=completed")
