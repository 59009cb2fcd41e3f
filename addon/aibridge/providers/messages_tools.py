"""The tool loop on Anthropic Messages (see providers/tooluse.py).

Tools are `{"name", "description", "input_schema"}`; the model calls them with `tool_use`
blocks and gets `tool_result` blocks back in a user turn. A stream is one `message_start`, then
content blocks (each `content_block_start`, deltas, `content_block_stop`, numbered from 0
without gaps), then `message_delta` (stop reason, cumulative usage) and `message_stop`: a
spliced stream keeps the first round's `message_start`, renumbers the blocks the client sees,
and ends with the last round's `message_delta`, carrying the usage of every round.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from aibridge.providers.jsonfields import _d, _list, _s
from aibridge.providers.tooluse import (
    Injected,
    StreamSplicer,
    ToolRun,
    ToolSpec,
    ToolWire,
    arguments,
    event_object,
    object_schema,
    raw_sse,
    sse,
    sum_usage,
)
from aibridge.summary import ToolCall

_COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
           "cache_creation_input_tokens")


def _leaves_alone(body: dict[str, Any]) -> bool:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("tool", "none"):
        return True  # one of the client's tools, by name, or no tool at all
    tools = body.get("tools")
    return tools is not None and not isinstance(tools, list)


def _is_bridge_call(block: dict[str, Any], injected: Injected) -> bool:
    return block.get("type") == "tool_use" and injected(_s(block.get("name")) or "")


def _round_usage(start: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """One round's usage: `message_start`'s, with the (cumulative) counts of `message_delta`."""
    usage = dict(start)
    for key, value in delta.items():
        if value is not None and (key not in _COUNTS or value):
            usage[key] = value
    return usage


class MessagesTools(ToolWire):
    def inject(self, body: dict[str, Any], tools: Sequence[ToolSpec]) -> bool:
        if _leaves_alone(body) or not tools:
            return False
        own = body.get("tools") or []
        names = {_s(_d(t).get("name")) for t in own}
        added = [{"name": t.name, "description": t.description,
                  "input_schema": object_schema(t.schema)} for t in tools if t.name not in names]
        if not added:
            return False
        # Appended: the client's tools, and any cache_control breakpoint on them, stay put.
        body["tools"] = [*own, *added]
        return True

    def calls(self, answer: dict[str, Any]) -> list[ToolCall]:
        return [ToolCall(_s(b.get("id")) or "", _s(b.get("name")) or "",
                         json.dumps(b.get("input", {}), separators=(",", ":")))
                for b in map(_d, _list(answer.get("content"))) if b.get("type") == "tool_use"]

    def follow_up(self, body: dict[str, Any], answer: dict[str, Any],
                  runs: Sequence[ToolRun]) -> dict[str, Any]:
        results = []
        for run in runs:
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": run.call.id,
                                      "content": run.output}
            if run.is_error:
                result["is_error"] = True
            results.append(result)
        messages = [*_list(body.get("messages")),
                    {"role": "assistant", "content": _list(answer.get("content"))},
                    {"role": "user", "content": results}]
        return {**body, "messages": messages}

    def merge(self, answers: Sequence[dict[str, Any]], injected: Injected, *,
              dropped_calls: bool) -> dict[str, Any]:
        final = copy.copy(answers[-1])
        content = [b for a in answers for b in map(_d, _list(a.get("content")))
                   if not _is_bridge_call(b, injected)]
        final["content"] = content
        usage: dict[str, Any] = {}
        for answer in answers:
            usage = sum_usage(usage, _d(answer.get("usage")))
        final["usage"] = usage
        if dropped_calls and not any(b.get("type") == "tool_use" for b in content):
            final["stop_reason"] = "end_turn"
        return final

    def splicer(self, injected: Injected) -> MessagesSplicer:
        return MessagesSplicer(injected)


class MessagesSplicer(StreamSplicer):
    def __init__(self, injected: Injected) -> None:
        self._injected = injected
        self._round = 0
        self._next_index = 0  # the next block number the client sees
        self._usage: dict[str, Any] = {}  # of the rounds before this one
        self._failed = False  # an error event: the stream ends with it
        self._last_delta: dict[str, Any] | None = None
        self._last_visible_tool = False
        self._new_round()

    def _new_round(self) -> None:
        self._index: dict[int, int | None] = {}  # upstream block -> client block (None: held)
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}
        self._message: dict[str, Any] = {}
        self._start_usage: dict[str, Any] = {}
        self._delta: dict[str, Any] | None = None  # the round's message_delta, held
        self._delta_usage: dict[str, Any] = {}
        self._visible_tool = False

    def event(self, name: str | None, data: bytes) -> bytes:
        if (obj := event_object(data)) is None:
            return raw_sse(name, data)
        kind = obj.get("type") or name
        if kind == "message_start":
            self._message = _d(obj.get("message"))
            self._start_usage = _d(self._message.get("usage"))
            return raw_sse(name, data) if self._round == 0 else b""
        if kind in ("content_block_start", "content_block_delta", "content_block_stop"):
            return self._block(name, kind, obj, data)
        if kind == "message_delta":
            self._delta = obj
            self._delta_usage = _d(obj.get("usage"))
            return b""
        if kind == "message_stop":
            return b""
        if kind == "error":
            self._failed = True
        return raw_sse(name, data)

    def _block(self, name: str | None, kind: str, obj: dict[str, Any], data: bytes) -> bytes:
        upstream = obj.get("index")
        if not isinstance(upstream, int):
            return raw_sse(name, data)
        if kind == "content_block_start":
            block = copy.deepcopy(_d(obj.get("content_block")))
            self._blocks[upstream] = block
            if _is_bridge_call(block, self._injected):
                self._index[upstream] = None
            else:
                self._index[upstream] = self._next_index
                self._next_index += 1
                self._visible_tool = self._visible_tool or block.get("type") == "tool_use"
        elif kind == "content_block_delta":
            self._apply(upstream, _d(obj.get("delta")))
        else:
            self._close(upstream)
        index = self._index.get(upstream, upstream)
        if index is None:
            return b""
        if index == upstream:
            return raw_sse(name, data)
        return sse(name, {**obj, "index": index})

    def _apply(self, index: int, delta: dict[str, Any]) -> None:
        block = self._blocks.get(index)
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = _s(block.get("text")) or ""
            block["text"] += _s(delta.get("text")) or ""
        elif kind == "thinking_delta":
            block["thinking"] = (_s(block.get("thinking")) or "") + (
                _s(delta.get("thinking")) or "")
        elif kind == "signature_delta":
            block["signature"] = _s(delta.get("signature")) or ""
        elif kind == "input_json_delta":
            self._json.setdefault(index, []).append(_s(delta.get("partial_json")) or "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _close(self, index: int) -> None:
        block, pieces = self._blocks.get(index), self._json.pop(index, None)
        if block is not None and pieces is not None:
            block["input"] = arguments("".join(pieces))

    def end_round(self) -> dict[str, Any]:
        for index in list(self._json):
            self._close(index)
        answer = {**self._message,
                  "content": [self._blocks[i] for i in sorted(self._blocks)],
                  "usage": _round_usage(self._start_usage, self._delta_usage)}
        if self._delta is not None:
            answer["stop_reason"] = _d(self._delta.get("delta")).get("stop_reason")
        self._usage = sum_usage(self._usage, answer["usage"])
        self._round += 1
        self._last_delta, self._last_visible_tool = self._delta, self._visible_tool
        self._new_round()
        return answer

    def finish(self, *, dropped_calls: bool) -> bytes:
        """After `end_round` of the last round."""
        if self._failed or self._last_delta is None:
            return b""  # a broken round: its error (or the cut) is what the client reads
        delta = {**self._last_delta, "usage": self._usage}
        if dropped_calls and not self._last_visible_tool:
            delta["delta"] = {**_d(delta.get("delta")), "stop_reason": "end_turn"}
        return sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})


MESSAGES_TOOLS = MessagesTools()
