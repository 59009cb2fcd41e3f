"""What the real agents show when the bridge cannot serve them: the bridge's own message, soon.

Provider down and no central keys, with Claude Code and Codex as a developer runs them (the same
environment as test_agents.py). Each test asserts the agent printed the bridge's message; how
long that took is written to test-artifacts/agent-error-times.json (never asserted)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.e2e.harness import ALICE_TOKEN, ROOT, provider_config
from tests.e2e.test_agents import CODEX_CONFIG, run

pytestmark = pytest.mark.timeout(420)

AGENTS = ROOT / "tools" / "agents" / "node_modules" / ".bin"
TIMES = ROOT / "test-artifacts" / "agent-error-times.json"
AGENT_TIMEOUT = 360.0  # seconds: far above what the bridge should cost, bounded all the same


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening, then closed: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def note(name: str, seconds: float) -> None:
    TIMES.parent.mkdir(exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[name] = round(seconds, 1)
    TIMES.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")


def claude(bridge, tmp_path) -> tuple[str, float]:
    home = tmp_path / "home"
    home.mkdir()
    started = time.monotonic()
    result = run([str(AGENTS / "claude"), "-p", "say hi", "--max-turns", "1",
                  "--model", "claude-sonnet-5"], {
        "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "HTTPS_PROXY": bridge.proxy_url(), "NODE_EXTRA_CA_CERTS": bridge.ca,
        "ANTHROPIC_API_KEY": ALICE_TOKEN,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"}, timeout=AGENT_TIMEOUT)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    return result.stdout + result.stderr, elapsed


def codex(bridge, tmp_path) -> tuple[str, float]:
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(CODEX_CONFIG)
    started = time.monotonic()
    result = run([str(AGENTS / "codex"), "exec", "--skip-git-repo-check", "--ephemeral",
                  "-c", "features.unbounded_connection_retries=false",
                  "--dangerously-bypass-approvals-and-sandbox", "say hi"], {
        "HOME": str(tmp_path), "CODEX_HOME": str(codex_home),
        "HTTPS_PROXY": bridge.proxy_url(), "CODEX_CA_CERTIFICATE": bridge.ca,
        "CODEX_API_KEY": ALICE_TOKEN}, timeout=AGENT_TIMEOUT)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    return result.stdout + result.stderr, elapsed


def down_config() -> str:
    return provider_config(f"http://127.0.0.1:{closed_port()}")


def no_keys_config(fake) -> str:
    return provider_config(fake.url).replace(
        '[providers.openai]\n', '[providers.openai]\ncredentials = "auto"\n')


def test_claude_code_provider_down(make_bridge, tmp_path):
    bridge = make_bridge(down_config())
    output, elapsed = claude(bridge, tmp_path)
    note("claude_code_provider_down", elapsed)
    assert "upstream anthropic" in output and "unreachable" in output, output[-2000:]


def test_claude_code_no_central_keys(fake, make_bridge, tmp_path):
    bridge = make_bridge(no_keys_config(fake), env={"AIBRIDGE_ANTHROPIC_KEYS": ""})
    output, elapsed = claude(bridge, tmp_path)
    note("claude_code_no_central_keys", elapsed)
    assert "has no central keys" in output, output[-2000:]


def test_codex_provider_down(make_bridge, tmp_path):
    bridge = make_bridge(down_config())
    output, elapsed = codex(bridge, tmp_path)
    note("codex_provider_down", elapsed)
    assert "upstream openai" in output and "unreachable" in output, output[-2000:]


def test_codex_no_central_keys(fake, make_bridge, tmp_path):
    bridge = make_bridge(no_keys_config(fake), env={"AIBRIDGE_OPENAI_KEYS": ""})
    output, elapsed = codex(bridge, tmp_path)
    note("codex_no_central_keys", elapsed)
    assert "has no central keys" in output, output[-2000:]
