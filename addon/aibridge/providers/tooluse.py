"""Tools the bridge runs itself (MCP tools, see aibridge.mcp): what each wire format needs to
offer them to the model, hand their results back and hide them from the client.

`ToolWire` is one API's side of the tool loop, reached through `WireApi.tool_wire()`:

- `inject`: append the offered tools to a request's `tools`, in the API's tool format; a
  request whose `tool_choice` names one of the client's tools (or no tools) is left alone.
- `follow_up`: the next request of the loop: the request, the model's answer (with its calls
  of the bridge's tools) and their results, as the API expects a tool turn.
- `merge`: the whole (non-streaming) answer the client gets: what every round said, usage
  summed, no call of a bridge tool.
- `splicer`: the same for a stream, event by event (`StreamSplicer`).

Answers are in their whole-body form (what a non-streaming request returns); a splicer rebuilds
that form from the events of a streamed round, so `follow_up` serves both.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aibridge.summary import ToolCall

Injected = Callable[[str], bool]  # is this tool name one of the bridge's?


@dataclass(frozen=True)
class ToolSpec:
    """A tool the bridge offers: its injected name, what it does, its arguments' JSON schema."""

    name: str
    description: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class ToolRun:
    """One call of a bridge tool, run: the model's call and what goes back to the model."""

    call: ToolCall
    output: str
    is_error: bool = False


class StreamSplicer(ABC):
    """Rounds of one streamed answer in, one well-formed stream out.

    `event` returns the bytes the client gets for one event of the current round (b"" when it
    is held back: a bridge tool's events, and the events that open a later round or close one);
    `end_round` returns the round's answer in whole-body form and readies the next round;
    `finish` returns the held closing events of the last round, usage summed over all rounds.
    """

    @abstractmethod
    def event(self, name: str | None, data: bytes) -> bytes: ...

    @abstractmethod
    def end_round(self) -> dict[str, Any]: ...

    @abstractmethod
    def finish(self, *, dropped_calls: bool) -> bytes:
        """`dropped_calls`: the last round still called bridge tools (the loop ran out of
        rounds, or the client's own tools were called too); said so in the stop reason when
        nothing is left for the client to run."""

    def alias(self) -> tuple[str, str] | None:
        """(the answer id the client saw, the provider's id of the last round) when they
        differ and a later request may name the first (see `ToolWire.rechain`)."""
        return None


class ToolWire(ABC):
    @abstractmethod
    def inject(self, body: dict[str, Any], tools: Sequence[ToolSpec]) -> bool:
        """Append `tools` to the request; False (body unchanged) when the request is left
        alone. Sets top-level fields only: `body` may share nested values with the request
        the client sent (which was recorded as it was)."""

    @abstractmethod
    def calls(self, answer: dict[str, Any]) -> list[ToolCall]:
        """Every tool call of a whole answer, in order."""

    @abstractmethod
    def follow_up(self, body: dict[str, Any], answer: dict[str, Any],
                  runs: Sequence[ToolRun]) -> dict[str, Any]:
        """The next request: `body` with the model's turn and the tools' results appended."""

    @abstractmethod
    def merge(self, answers: Sequence[dict[str, Any]], injected: Injected, *,
              dropped_calls: bool) -> dict[str, Any]:
        """The answer the client gets from the whole answers of every round."""

    @abstractmethod
    def splicer(self, injected: Injected) -> StreamSplicer: ...

    def rechain(self, body: dict[str, Any], alias: Callable[[str], str | None]) -> bool:
        """Point a request that continues an earlier answer at what the provider knows it by
        (`StreamSplicer.alias`); True when the body changed."""
        return False


# -- helpers the wire formats share -----------------------------------------------------------


def sum_usage(total: Mapping[str, Any] | None, more: Mapping[str, Any] | None) -> dict[str, Any]:
    """Usage objects added field by field (nested objects too); a field that is no number
    keeps its latest value. Every API's usage is counts in (nested) objects."""
    out: dict[str, Any] = dict(total or {})
    for key, value in (more or {}).items():
        before = out.get(key)
        if _count(value) and _count(before):
            out[key] = before + value
        elif isinstance(value, Mapping) and isinstance(before, Mapping):
            out[key] = sum_usage(before, value)
        elif value is not None or key not in out:
            out[key] = value
    return out


def _count(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def object_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """A tool's argument schema as the APIs take it: a JSON-schema object, without `$schema`
    (some validators refuse the meta-schema reference)."""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        return {"type": "object", "properties": {}}
    return {k: v for k, v in schema.items() if k != "$schema"}


def arguments(text: str) -> dict[str, Any]:
    """A call's arguments as an object ({} when the model produced none or no JSON object)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def sse(name: str | None, obj: object) -> bytes:
    """One SSE frame (compact JSON data line)."""
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {data}\n\n".encode()


def event_object(data: bytes) -> dict[str, Any] | None:
    """A streamed event's data as a JSON object; None for anything else (which a splicer
    forwards as it came: `raw_sse`)."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def raw_sse(name: str | None, data: bytes) -> bytes:
    """An event forwarded as it came (data may span lines)."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    lines = b"".join(b"data: " + line + b"\n" for line in data.split(b"\n"))
    return head + lines + b"\n"
