"""Which coding tool sent a request, and its session id (docs/behaviour.md §11).

Pure functions over the request headers and the decoded JSON body. `headers` is any
case-insensitive mapping with `.get(name)` (mitmproxy `http.Headers`). The result is recorded on
the interception and used as the `client` metric label, so names are a closed vocabulary.

Beyond Coder's AI Bridge rules:
- `X-Claude-Code-Session-Id` alone means Claude Code: recent versions send probe requests with
  random User-Agents (anthropics/claude-code #80191), and no other tool sends that header.
- The official SDKs and curl are named when no tool matched, so ad-hoc scripts are not lumped
  into "Unknown".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol


class HeaderLookup(Protocol):
    def get(self, key: str, default: None = None, /) -> str | None: ...


@dataclass(frozen=True)
class ClientInfo:
    name: str
    session_id: str | None


XUM = "Xum"
CLAUDE_CODE = "Claude Code"
CODEX = "Codex"
ZED = "Zed"
COPILOT_VSCODE = "GitHub Copilot (VS Code)"
COPILOT_CLI = "GitHub Copilot (CLI)"
KILO_CODE = "Kilo Code"
ROO_CODE = "Roo Code"
CODER_AGENTS = "Coder Agents"
CHARM_CRUSH = "Charm Crush"
CURSOR = "Cursor"
OPENCODE = "OpenCode"
JUNIE = "Junie"
OPENAI_SDK = "OpenAI SDK"
ANTHROPIC_SDK = "Anthropic SDK"
CURL = "curl"
UNKNOWN = "Unknown"

CLAUDE_CODE_SESSION_HEADER = "x-claude-code-session-id"

# (lower-cased User-Agent prefixes, `originator` header value or None, client), first match wins.
# The order is Coder's: it matters only where prefixes overlap, e.g. "claude" is broad.
_UA_RULES: tuple[tuple[tuple[str, ...], str | None, str], ...] = (
    (("xum/", "mux/"), None, XUM),
    (("claude",), None, CLAUDE_CODE),
    (("codex",), None, CODEX),
    (("zed/",), None, ZED),
    (("githubcopilotchat/",), None, COPILOT_VSCODE),
    (("copilot/",), None, COPILOT_CLI),
    (("kilo-code/",), "kilo-code", KILO_CODE),
    (("roo-code/",), "roo-code", ROO_CODE),
    (("coder-agents/",), None, CODER_AGENTS),
    (("charm crush/", "charm-crush/"), None, CHARM_CRUSH),
)
# Checked after Cursor's header, as Coder does.
_LATE_UA_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("opencode/",), OPENCODE),
    (("junie:",), JUNIE),
    # Not in Coder's rules: only when nothing more specific matched.
    (("openai/python", "openai/js"), OPENAI_SDK),
    (("anthropic/python", "anthropic/js"), ANTHROPIC_SDK),
    (("curl/",), CURL),
)

# Headers carrying the session id, tried in order; clients not listed have none.
_SESSION_HEADERS: dict[str, tuple[str, ...]] = {
    XUM: ("x-mux-workspace-id",),
    CLAUDE_CODE: (CLAUDE_CODE_SESSION_HEADER,),
    CODEX: ("session-id", "session_id"),
    COPILOT_VSCODE: ("x-interaction-id",),
    COPILOT_CLI: ("x-client-session-id",),
    KILO_CODE: ("x-kilocode-taskid",),
    CODER_AGENTS: ("x-coder-chat-id",),
    OPENCODE: ("x-opencode-session", "x-session-affinity"),
}

_LEGACY_SESSION_MARK = "_session_"


def guess_client(headers: HeaderLookup, body: object | None) -> ClientInfo:
    """The client's name (never empty: "Unknown" at worst) and its session id, if it sent one."""
    headers = _indexed(headers)
    name = _client_name(headers)
    session = _first_header(headers, _SESSION_HEADERS.get(name, ()))
    if session is None and name == CLAUDE_CODE:
        # count_tokens bodies carry no metadata, so the header above is tried first.
        session = _claude_code_body_session(body)
    return ClientInfo(name, session)


def _indexed(headers: HeaderLookup) -> HeaderLookup:
    """mitmproxy's `Headers.get` scans every field, lower-casing each name; the half dozen
    lookups below read one dict made in one pass instead (same answers: names compared
    case-insensitively, repeated fields joined with ", ")."""
    fields = getattr(headers, "fields", None)
    if not isinstance(fields, tuple):
        return headers
    index: dict[str, str] = {}
    for raw_name, raw_value in fields:
        name = raw_name.decode("utf-8", "surrogateescape").lower()
        value = raw_value.decode("utf-8", "surrogateescape")
        index[name] = f"{index[name]}, {value}" if name in index else value
    return index


def _client_name(headers: HeaderLookup) -> str:
    ua = (headers.get("user-agent") or "").strip().lower()
    originator = (headers.get("originator") or "").strip().lower()
    for prefixes, origin, name in _UA_RULES:
        if ua.startswith(prefixes) or (origin is not None and originator == origin):
            return name
    if headers.get(CLAUDE_CODE_SESSION_HEADER) is not None:
        return CLAUDE_CODE  # a probe request with a random UA
    if headers.get("x-cursor-client-version") is not None:
        return CURSOR  # Cursor's UA is not distinctive; this header is all it gives away
    for prefixes, name in _LATE_UA_RULES:
        if ua.startswith(prefixes):
            return name
    return UNKNOWN


def _first_header(headers: HeaderLookup, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = _clean(headers.get(name))
        if value is not None:
            return value
    return None


def _claude_code_body_session(body: object | None) -> str | None:
    """The session in `metadata.user_id`: newer versions send a JSON string with `session_id`,
    older ones `user_<hash>_account_<uuid>_session_<uuid>`."""
    if not isinstance(body, dict):
        return None
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str):
        return None
    text = user_id.strip()
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError:
            return None
        session = decoded.get("session_id") if isinstance(decoded, dict) else None
        return _clean(session) if isinstance(session, str) else None
    _, mark, suffix = text.rpartition(_LEGACY_SESSION_MARK)
    return _clean(suffix) if mark else None


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None
