"""Client and session detection (reference §7.9, user needs §5.3 item 14)."""

import json

import pytest
from mitmproxy.http import Headers

from aibridge.observe.clients import ClientInfo, guess_client


def headers(fields: dict[str, str]) -> Headers:
    """mitmproxy Headers from a dict, names verbatim (`Headers(**kw)` turns `_` into `-`)."""
    result = Headers()
    for name, value in fields.items():
        result[name] = value
    return result


def name_of(fields: dict[str, str], body: object | None = None) -> str:
    return guess_client(headers(fields), body).name


@pytest.mark.parametrize(
    ("ua", "client"),
    [
        ("xum/1.2.0", "Xum"),
        ("mux/0.9 (darwin)", "Xum"),
        ("claude-cli/2.1.3 (external, cli)", "Claude Code"),
        ("Claude-CLI/2.1.3 (external, sdk-ts)", "Claude Code"),
        ("codex_cli_rs/0.169.0 (Linux 6.8.0; x86_64) xterm-256color", "Codex"),
        ("codex_vscode/0.1", "Codex"),
        ("Zed/0.200", "Zed"),
        ("GitHubCopilotChat/0.30", "GitHub Copilot (VS Code)"),
        ("copilot/1.0", "GitHub Copilot (CLI)"),
        ("kilo-code/4.0", "Kilo Code"),
        ("roo-code/3", "Roo Code"),
        ("coder-agents/1", "Coder Agents"),
        ("Charm Crush/0.1", "Charm Crush"),
        ("charm-crush/0.2", "Charm Crush"),
        ("opencode/0.5", "OpenCode"),
        ("junie:2025.1 (IntelliJ)", "Junie"),
        ("OpenAI/Python 3.57.0", "OpenAI SDK"),
        ("OpenAI/JS 6.1.0", "OpenAI SDK"),
        ("Anthropic/Python 2.13.0", "Anthropic SDK"),
        ("Anthropic/JS 0.60.0", "Anthropic SDK"),
        ("curl/7.88.1", "curl"),
        ("Mozilla/5.0 (X11; Linux x86_64)", "Unknown"),
        ("python-httpx/0.28", "Unknown"),
        ("", "Unknown"),
        # Prefix rules, not substring: a tool name later in the UA does not count.
        ("Mozilla/5.0 zed/1", "Unknown"),
        ("zed", "Unknown"),  # "zed/" needs the slash
    ],
)
def test_user_agent_rules(ua: str, client: str) -> None:
    assert name_of({"User-Agent": ua}) == client


def test_no_headers_at_all_is_unknown() -> None:
    assert guess_client(headers({}), None) == ClientInfo("Unknown", None)


@pytest.mark.parametrize(
    ("fields", "client"),
    [
        # Cursor's UA says nothing; the header alone identifies it, whatever its value.
        ({"User-Agent": "Mozilla/5.0", "x-cursor-client-version": "1.5.0"}, "Cursor"),
        ({"X-Cursor-Client-Version": ""}, "Cursor"),
        # ... but a UA rule earlier in the list still wins,
        ({"User-Agent": "claude-cli/2", "x-cursor-client-version": "1"}, "Claude Code"),
        # and Cursor beats the rules that come after it.
        ({"User-Agent": "opencode/0.5", "x-cursor-client-version": "1"}, "Cursor"),
        ({"User-Agent": "OpenAI/JS 6.1.0", "x-cursor-client-version": "1"}, "Cursor"),
        # Kilo and Roo identify themselves by `originator` when the UA is an SDK's.
        ({"User-Agent": "OpenAI/JS 5.0", "originator": "kilo-code"}, "Kilo Code"),
        ({"Originator": " Roo-Code "}, "Roo Code"),
        ({"originator": "codex_cli_rs"}, "Unknown"),
        # First match wins: a UA rule before Kilo's beats Kilo's originator.
        ({"User-Agent": "copilot/1.0", "originator": "kilo-code"}, "GitHub Copilot (CLI)"),
        # Claude Code probe requests carry random UAs but keep the session header.
        ({"User-Agent": "aZ3kq/9.1", "X-Claude-Code-Session-Id": "s1"}, "Claude Code"),
        ({"User-Agent": "Anthropic/JS 0.60.0", "x-claude-code-session-id": "s1"},
         "Claude Code"),
        ({"x-claude-code-session-id": "s1", "x-cursor-client-version": "1"}, "Claude Code"),
    ],
)
def test_header_rules(fields: dict[str, str], client: str) -> None:
    assert name_of(fields) == client


def legacy_user_id(session: str) -> str:
    return f"user_{'ab' * 32}_account_0f9e8d7c-1111-2222-3333-444455556666_session_{session}"


SESSION = "7c1d0e4a-5b6f-4a8b-9c0d-1e2f3a4b5c6d"


@pytest.mark.parametrize(
    ("fields", "body", "expected"),
    [
        # Claude Code: header first (count_tokens bodies have no metadata) ...
        ({"User-Agent": "claude-cli/2.1.3 (external, cli)", "X-Claude-Code-Session-Id": "hdr"},
         {"metadata": {"user_id": legacy_user_id(SESSION)}}, ClientInfo("Claude Code", "hdr")),
        # ... else the body's metadata.user_id, legacy form,
        ({"User-Agent": "claude-cli/1.0.80"},
         {"metadata": {"user_id": legacy_user_id(SESSION)}}, ClientInfo("Claude Code", SESSION)),
        # newer JSON form,
        ({"User-Agent": "claude-cli/2.1.3"},
         {"metadata": {"user_id": json.dumps({"device_id": "d", "account_uuid": "a",
                                              "session_id": SESSION})}},
         ClientInfo("Claude Code", SESSION)),
        # blank header falls back to the body,
        ({"User-Agent": "claude-cli/2", "X-Claude-Code-Session-Id": "   "},
         {"metadata": {"user_id": legacy_user_id(SESSION)}}, ClientInfo("Claude Code", SESSION)),
        # whitespace trimmed everywhere,
        ({"X-Claude-Code-Session-Id": "  s-1 \t"}, None, ClientInfo("Claude Code", "s-1")),
        ({"User-Agent": "claude-cli/2"},
         {"metadata": {"user_id": json.dumps({"session_id": f"  {SESSION} "})}},
         ClientInfo("Claude Code", SESSION)),
        # and nothing usable means no session.
        ({"User-Agent": "claude-cli/2"}, None, ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, {"metadata": {"user_id": legacy_user_id("")}},
         ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, {"metadata": {"user_id": "user_abc"}},
         ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, {"metadata": {"user_id": '{"session_id": ""}'}},
         ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, {"metadata": {"user_id": '{"session_id": 5}'}},
         ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, {"metadata": {"user_id": "{not json"}},
         ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, {"metadata": {"user_id": 12}},
         ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, {"metadata": "x"}, ClientInfo("Claude Code", None)),
        ({"User-Agent": "claude-cli/2"}, ["not", "a", "dict"], ClientInfo("Claude Code", None)),
        # Only Claude Code's session lives in the body.
        ({"User-Agent": "Anthropic/Python 2.13.0"},
         {"metadata": {"user_id": legacy_user_id(SESSION)}}, ClientInfo("Anthropic SDK", None)),
        # Codex: `session-id`, then `session_id`.
        ({"User-Agent": "codex_cli_rs/0.169.0", "session-id": "a", "session_id": "b"}, None,
         ClientInfo("Codex", "a")),
        ({"User-Agent": "codex_cli_rs/0.169.0", "session_id": " b "}, None,
         ClientInfo("Codex", "b")),
        ({"User-Agent": "codex_cli_rs/0.169.0", "session-id": "", "session_id": "b"}, None,
         ClientInfo("Codex", "b")),
        ({"User-Agent": "codex_cli_rs/0.169.0"}, None, ClientInfo("Codex", None)),
        ({"User-Agent": "xum/1", "X-Mux-Workspace-Id": "ws"}, None, ClientInfo("Xum", "ws")),
        ({"User-Agent": "GitHubCopilotChat/0.30", "x-interaction-id": "i"}, None,
         ClientInfo("GitHub Copilot (VS Code)", "i")),
        ({"User-Agent": "copilot/1.0", "X-Client-Session-Id": "c"}, None,
         ClientInfo("GitHub Copilot (CLI)", "c")),
        ({"originator": "kilo-code", "X-KILOCODE-TASKID": "t"}, None, ClientInfo("Kilo Code", "t")),
        ({"User-Agent": "coder-agents/1", "X-Coder-Chat-Id": "chat"}, None,
         ClientInfo("Coder Agents", "chat")),
        ({"User-Agent": "opencode/0.5", "X-OpenCode-Session": "o", "x-session-affinity": "a"},
         None, ClientInfo("OpenCode", "o")),
        ({"User-Agent": "opencode/0.5", "x-session-affinity": "a"}, None,
         ClientInfo("OpenCode", "a")),
        # A session header of another client is not this client's session.
        ({"User-Agent": "Zed/0.200", "x-interaction-id": "i", "session-id": "s"}, None,
         ClientInfo("Zed", None)),
        ({"x-cursor-client-version": "1", "session-id": "s"}, None, ClientInfo("Cursor", None)),
        ({"User-Agent": "curl/7.88.1", "X-Client-Session-Id": "c"}, None, ClientInfo("curl", None)),
    ],
)
def test_sessions(fields: dict[str, str], body: object | None, expected: ClientInfo) -> None:
    assert guess_client(headers(fields), body) == expected
