"""The tool loop on OpenAI Responses over HTTP (see providers/tooluse.py).

Tools are `{"type": "function", "name", "description", "parameters"}`; the model calls them with
`function_call` output items and gets `function_call_output` input items back. A stream is
`response.created` / `response.in_progress`, events about numbered output items
(`output_index`), and a terminal `response.completed` (or `.incomplete`, `.failed`) carrying the
whole response; every event has a `sequence_number`. A spliced stream keeps the first round's
opening events and response id (the SDKs refuse a stream whose response id changes), renumbers
output items and sequence numbers, and ends with one terminal event whose response holds the
output the client saw and the usage of every round. Background responses are left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from aibridge.providers.jsonfields import _d, _list, _s, _text
from aibridge.providers.tooluse import (
    Injected,
    StreamSplicer,
    ToolRun,
    ToolSpec,
    ToolWire,
    event_object,
    object_schema,
    raw_sse,
    sse,
    sum_usage,
)
from aibridge.summary import ToolCall

_CALLS = {"function_call": "arguments", "custom_tool_call": "input"}
_OPENING = ("response.created", "response.in_progress", "response.queued")
_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def _leaves_alone(body: dict[str, Any]) -> bool:
    choice = body.get("tool_choice")
    if choice == "none" or isinstance(choice, dict):
        return True  # no tools, or a named choice (one of the client's, or a hosted tool)
    tools = body.get("tools")
    return body.get("background") is True or (tools is not None and not isinstance(tools, list))


def _is_bridge_call(item: dict[str, Any], injected: Injected) -> bool:
    return item.get("type") in _CALLS and injected(_s(item.get("name")) or "")


def _input(body: dict[str, Any]) -> list[Any]:
    items = body.get("input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return list(items) if isinstance(items, list) else []


class ResponsesTools(ToolWire):
    def inject(self, body: dict[str, Any], tools: Sequence[ToolSpec]) -> bool:
        if _leaves_alone(body) or not tools:
            return False
        own = body.get("tools") or []
        names = {_s(_d(t).get("name")) for t in own}
        added = [{"type": "function", "name": t.name, "description": t.description,
                  "parameters": object_schema(t.schema), "strict": False}
                 for t in tools if t.name not in names]
        if not added:
            return False
        body["tools"] = [*own, *added]
        return True

    def calls(self, answer: dict[str, Any]) -> list[ToolCall]:
        return [ToolCall(_s(item.get("call_id")) or "", _s(item.get("name")) or "",
                         _text(item.get(_CALLS[item["type"]])))
                for item in map(_d, _list(answer.get("output"))) if item.get("type") in _CALLS]

    def follow_up(self, body: dict[str, Any], answer: dict[str, Any],
                  runs: Sequence[ToolRun]) -> dict[str, Any]:
        results = [{"type": "function_call_output", "call_id": run.call.id,
                    "output": run.output} for run in runs]
        return {**body, "input": [*_input(body), *_list(answer.get("output")), *results]}

    def merge(self, answers: Sequence[dict[str, Any]], injected: Injected, *,
              dropped_calls: bool) -> dict[str, Any]:
        # The last round's id: a later request naming it as previous_response_id continues
        # from the whole exchange (the first round's ends with a call it never answered).
        final = copy.copy(answers[-1])
        final["output"] = [item for a in answers for item in map(_d, _list(a.get("output")))
                           if not _is_bridge_call(item, injected)]
        usage: dict[str, Any] = {}
        for answer in answers:
            usage = sum_usage(usage, _d(answer.get("usage")))
        if usage:
            final["usage"] = usage
        return final

    def splicer(self, injected: Injected) -> ResponsesSplicer:
        return ResponsesSplicer(injected)

    def rechain(self, body: dict[str, Any], alias: Callable[[str], str | None]) -> bool:
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and (last := alias(previous)) is not None:
            body["previous_response_id"] = last
            return True
        return False


class ResponsesSplicer(StreamSplicer):
    def __init__(self, injected: Injected) -> None:
        self._injected = injected
        self._round = 0
        self._sequence = 0  # the client's sequence numbers
        self._next_index = 0  # the client's output indexes
        self._id: str | None = None  # the first round's response id
        self._usage: dict[str, Any] = {}
        self._visible: list[dict[str, Any]] = []  # output items the client saw, all rounds
        self._failed = False
        self._terminal: tuple[str, dict[str, Any]] | None = None
        self._last_visible_call = False
        self._new_round()

    def _new_round(self) -> None:
        self._index: dict[int, int | None] = {}
        self._items: dict[int, dict[str, Any]] = {}
        self._response: dict[str, Any] | None = None  # the round's terminal response
        self._kind: str | None = None
        self._visible_call = False

    def event(self, name: str | None, data: bytes) -> bytes:
        if (obj := event_object(data)) is None:
            return raw_sse(name, data)
        kind = _s(obj.get("type")) or name or ""
        if kind in _OPENING:
            if self._round > 0:
                return b""
            self._id = self._id or _s(_d(obj.get("response")).get("id"))
            return self._emit(name, obj)
        if kind in _TERMINAL:
            self._response, self._kind = _d(obj.get("response")), kind
            return b""
        if kind == "error":
            self._failed = True
            return self._emit(name, obj)
        upstream = obj.get("output_index")
        if not isinstance(upstream, int):
            return self._emit(name, obj)
        if kind == "response.output_item.added":
            item = _d(obj.get("item"))
            if _is_bridge_call(item, self._injected):
                self._index[upstream] = None
            else:
                self._index[upstream] = self._next_index
                self._next_index += 1
                self._visible_call = self._visible_call or item.get("type") in _CALLS
        elif kind == "response.output_item.done":
            self._items[upstream] = _d(obj.get("item"))
        index = self._index.get(upstream, upstream)
        if index is None:
            return b""
        return self._emit(name, {**obj, "output_index": index})

    def _emit(self, name: str | None, obj: dict[str, Any]) -> bytes:
        if "sequence_number" in obj:
            obj = {**obj, "sequence_number": self._sequence}
            self._sequence += 1
        return sse(name, obj)

    def end_round(self) -> dict[str, Any]:
        if self._response is not None:
            answer = self._response
            if not _list(answer.get("output")) and self._items:
                answer = {**answer, "output": [self._items[i] for i in sorted(self._items)]}
        else:  # a broken round: what its finished items said
            answer = {"output": [self._items[i] for i in sorted(self._items)]}
        self._visible += [item for item in map(_d, _list(answer.get("output")))
                          if not _is_bridge_call(item, self._injected)]
        self._usage = sum_usage(self._usage, _d(answer.get("usage")))
        if self._response is not None and self._kind is not None:
            self._terminal = (self._kind, answer)
        else:
            self._terminal = None
        self._last_visible_call = self._visible_call
        self._round += 1
        self._new_round()
        return answer

    def alias(self) -> tuple[str, str] | None:
        # The stream kept the first round's id; the provider stored the whole exchange under
        # the last round's, and a chain continued from the first would end in an unanswered
        # call.
        last = _s(self._terminal[1].get("id")) if self._terminal is not None else None
        if self._id is None or last is None or last == self._id:
            return None
        return self._id, last

    def finish(self, *, dropped_calls: bool) -> bytes:
        if self._failed or self._terminal is None:
            return b""
        kind, response = self._terminal
        response = {**response, "output": self._visible}
        if self._id is not None:
            response["id"] = self._id
        if self._usage:
            response["usage"] = self._usage
        return self._emit(kind, {"type": kind, "response": response, "sequence_number": 0})


RESPONSES_TOOLS = ResponsesTools()
