"""What the bridge records (docs/behaviour.md §12), as plain immutable data.

The addon builds these; the store writes them (SQLite or PostgreSQL) and telemetry turns them
into spans and metrics. No field ever holds a secret: credentials appear as masked hints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ERROR_MESSAGE_LIMIT = 1024  # bytes of UTF-8, as Coder stores it (docs/behaviour.md §8)


@dataclass(frozen=True)
class InterceptionStarted:
    id: str  # a time-ordered UUID (ids.py)
    started_at: float  # epoch seconds
    actor_id: str
    actor_metadata: dict[str, str]
    provider: str  # configured provider name
    provider_type: str  # openai | anthropic
    route: str  # e.g. /v1/messages
    model: str
    streaming: bool
    transport: str  # http | websocket
    client: str  # guessed from headers (docs/behaviour.md §11), e.g. "Claude Code"
    client_session_id: str | None
    user_agent: str | None
    credential_kind: str  # centralized | byok
    credential_hint: str
    credential_length: int
    correlating_tool_call_id: str | None


@dataclass(frozen=True)
class InterceptionEnded:
    id: str
    ended_at: float
    outcome: str  # completed | failed | cancelled | rejected
    status: int | None  # HTTP status the client got (None: no response)
    error_type: str | None  # docs/behaviour.md §8: bad_request, unauthorized, rate_limited, ...
    error_message: str | None  # at most ERROR_MESSAGE_LIMIT bytes
    credential_hint: str  # of the last key tried
    credential_length: int
    response_model: str | None
    response_id: str | None
    time_to_first_token: float | None  # seconds, streaming only
    key_attempts: int  # central keys tried (0 for BYOK)
    # Exact USD (never a float); None: the model has no price (unpriced, not free).
    cost_usd: Decimal | None = None
    price_source: str | None = None  # "genai-prices:<provider>/<model>" or "operator:<glob>"
    # The provider and model that served it in place of the ones asked ([[fallbacks]]).
    fallback_provider: str | None = None
    fallback_model: str | None = None


@dataclass(frozen=True)
class TokenUsage:
    interception_id: str
    msg_id: str | None  # provider's message/response id
    input_tokens: int  # as the API reports it (Anthropic: excludes cache)
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    extra: dict[str, int] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True)
class PromptUsage:
    interception_id: str
    msg_id: str | None
    prompt: str  # the last user prompt, subject to the privacy setting
    truncated: bool
    created_at: float = 0.0


@dataclass(frozen=True)
class ToolUsage:
    interception_id: str
    msg_id: str | None
    tool: str
    tool_call_id: str
    arguments: str  # raw JSON text as the model produced it
    created_at: float = 0.0


@dataclass(frozen=True)
class Passthrough:
    """One request passed through to a provider (a path that is not a bridged model call, such
    as `/v1/models`, `/v1/files` or `/api/...`), or refused on such a path; recorded whole
    when it ends. Kept apart from interceptions: it is no model request and has no tokens."""

    id: str  # a time-ordered UUID (ids.py)
    started_at: float
    ended_at: float
    actor_id: str
    actor_metadata: dict[str, str]
    provider: str
    provider_type: str
    method: str
    path: str  # normal form, without the query (which may carry anything)
    status: int | None  # HTTP status the client got (None: no response)
    outcome: str  # completed | failed | cancelled | rejected
    error_type: str | None
    error_message: str | None  # at most ERROR_MESSAGE_LIMIT bytes
    request_bytes: int  # body bytes sent upstream (as sent: compressed if the client did)
    response_bytes: int  # body bytes the client got
    credential_kind: str  # centralized | byok
    credential_hint: str
    credential_length: int
    user_agent: str | None
    key_attempts: int  # central keys tried (0 for BYOK or a refusal)


@dataclass(frozen=True)
class SecretFinding:
    """A secret found in what an interception sent (or in the model's answer): the rule,
    where, the action taken and a keyed hash of the secret to count repeats (the same key
    gives the same hash: per process, or across restarts with `[secrets] salt_env`). Never the
    secret."""

    interception_id: str
    rule: str  # aws-access-key, private-key, ... or an operator rule's id
    location: str  # "tool result of call toolu_1 in message 12"
    action: str  # log | redact | block
    secret_hash: str  # hex digits of an HMAC of the secret
    source: str = "request"  # request | response (model output: log only)
    created_at: float = 0.0


@dataclass(frozen=True)
class McpRound:
    """One call of a bridge (MCP) tool in an interception's tool loop (streaming/tool_loop.py):
    the model called it, the bridge ran it and asked the provider again."""

    interception_id: str
    round: int  # 1: called in the provider's first answer, 2: in the second, ...
    server: str  # [mcp.servers.NAME]
    tool: str  # the server's name for the tool
    injected_name: str  # bmcp_<server>_<tool>, as the model saw it
    tool_call_id: str
    arguments: str  # raw JSON text as the model produced it (at most ARGUMENTS_LIMIT bytes)
    result_bytes: int  # size of the tool's whole result text
    duration: float  # seconds
    error: str | None  # why the call failed (the tool's error, a timeout, ...); None: it ran
    created_at: float = 0.0


ARGUMENTS_LIMIT = 16 * 1024


Record = (InterceptionStarted | InterceptionEnded | TokenUsage | PromptUsage | ToolUsage
          | Passthrough | SecretFinding | McpRound)


def truncate_utf8(text: str | None, limit: int = ERROR_MESSAGE_LIMIT) -> str | None:
    """At most `limit` bytes of UTF-8, never cutting a character in half."""
    if text is None:
        return None
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")
