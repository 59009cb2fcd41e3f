"""One bridged request ("interception") and the interface the hooks, recorder and tracer share.

Go's `Setup(logger, recorder, mcp)` is not part of the protocol: in Python those are passed to
whatever consumes an interception instead of being stored on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aibridge.ids import new_id
from aibridge.intercept.actor import Actor
from aibridge.intercept.credential import CredentialInfo


@runtime_checkable
class Interceptor(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def streaming(self) -> bool: ...

    @property
    def credential(self) -> CredentialInfo: ...

    @property
    def correlating_tool_call_id(self) -> str | None: ...

    def trace_attributes(self) -> dict[str, str | int | bool]: ...


@dataclass(frozen=True)
class Fallback:
    """The provider that served an interception in place of the one asked (`[[fallbacks]]`),
    and the model it served with: what the interception is priced as."""

    provider: str
    provider_type: str
    model: str


@dataclass
class Interception:
    """The state of one interception. Mutable: `credential` changes as keys are tried."""

    provider: str  # configured provider name
    provider_type: str  # "openai" | "anthropic"
    route: str  # e.g. "/v1/chat/completions"
    model: str
    streaming: bool
    actor: Actor
    credential: CredentialInfo
    correlating_tool_call_id: str | None = None
    id: str = field(default_factory=new_id)
    started_at: float = field(default_factory=time.time)
    fallback: Fallback | None = None  # set when another provider served it

    def trace_attributes(self) -> dict[str, str | int | bool]:
        """Span attributes; the credential appears only as kind and masked hint."""
        return {
            "interception_id": self.id,
            "provider": self.provider,
            "route": self.route,
            "model": self.model,
            "streaming": self.streaming,
            "user_id": self.actor.id,
            "credential_kind": str(self.credential.kind),
            "credential_hint": self.credential.hint,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only, so it can live in mitmproxy's `flow.metadata` and saved flows."""
        return {
            "id": self.id,
            "provider": self.provider,
            "provider_type": self.provider_type,
            "route": self.route,
            "model": self.model,
            "streaming": self.streaming,
            "actor": {"id": self.actor.id, "metadata": dict(self.actor.metadata)},
            "credential": self.credential.to_dict(),
            "correlating_tool_call_id": self.correlating_tool_call_id,
            "started_at": self.started_at,
            **({"fallback": {"provider": self.fallback.provider,
                             "model": self.fallback.model}} if self.fallback else {}),
        }
