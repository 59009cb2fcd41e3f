"""Which of the servers' tools a request gets.

A server's `allow` and `deny` are regular expressions a tool's own name (as the server names
it) must match in full: with `allow`, only tools it matches are offered; `deny` hides a tool
whatever `allow` says. `match` picks the callers (actor, team, metadata), as budgets do
(admission/matching.py); an empty `match` offers the tools to everyone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aibridge.admission.matching import Matcher, Who
from aibridge.config import McpServerConfig
from aibridge.mcp.names import injected_name
from aibridge.providers.tooluse import ToolSpec

DESCRIPTION_LIMIT = 4096  # characters of a tool's description passed on to the model


@dataclass(frozen=True)
class RemoteTool:
    """One tool of one server, as offered: the server's name for it and the injected spec."""

    server: str
    tool: str
    spec: ToolSpec


@dataclass(frozen=True)
class ServerRules:
    server: str
    allow: tuple[re.Pattern[str], ...]
    deny: tuple[re.Pattern[str], ...]
    matcher: Matcher

    @classmethod
    def build(cls, server: str, config: McpServerConfig, team_key: str) -> ServerRules:
        return cls(server, tuple(re.compile(p) for p in config.allow),
                   tuple(re.compile(p) for p in config.deny),
                   Matcher.build(config.match, None, None, team_key))

    def offers(self, tool: str) -> bool:
        if any(p.fullmatch(tool) for p in self.deny):
            return False
        return not self.allow or any(p.fullmatch(tool) for p in self.allow)

    def serves(self, actor: Who) -> bool:
        return self.matcher.applies(actor, "", "")


def server_tools(rules: ServerRules,
                 listed: Iterable[tuple[str, str | None, Mapping[str, Any]]]
                 ) -> tuple[RemoteTool, ...]:
    """The offered tools of a server's list of (name, description, input schema), named in a
    stable order (a tool keeps its injected name however the list is ordered)."""
    taken: set[str] = set()
    tools = []
    for name, description, schema in sorted(listed, key=lambda t: t[0]):
        if not rules.offers(name):
            continue
        spec = ToolSpec(injected_name(rules.server, name, taken),
                        (description or f"{name} ({rules.server})")[:DESCRIPTION_LIMIT],
                        dict(schema))
        tools.append(RemoteTool(rules.server, name, spec))
    return tuple(tools)


@dataclass(frozen=True)
class Offer:
    """The tools one request is offered, by injected name."""

    tools: tuple[RemoteTool, ...]
    _by_name: dict[str, RemoteTool] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update((t.spec.name, t) for t in self.tools)

    @property
    def specs(self) -> Sequence[ToolSpec]:
        return [t.spec for t in self.tools]

    def get(self, name: str) -> RemoteTool | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __bool__(self) -> bool:
        return bool(self.tools)
