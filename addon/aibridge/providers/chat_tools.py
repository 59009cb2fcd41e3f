"""The tool loop on OpenAI Chat Completions (see providers/tooluse.py).

Tools are `{"type": "function", "function": {"name", "description", "parameters"}}`; the model
calls them in `message.tool_calls` and gets one `role: "tool"` message per call back. A stream
is chunks (tool calls arrive as pieces keyed by `index`, the id and name in the first), a chunk
with `finish_reason`, an optional usage chunk (`stream_options.include_usage`) and
`data: [DONE]`: a spliced stream gives every chunk the first round's id, renumbers the tool
calls the client sees, and ends with the last round's finish chunk and the usage of every
round. Requests for several choices (`n` > 1) are left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
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

_DONE = b"[DONE]"


def _leaves_alone(body: dict[str, Any]) -> bool:
    choice = body.get("tool_choice")
    if choice == "none" or isinstance(choice, dict):
        return True  # no tools, or a named (or restricted) choice among the client's own
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return True
    tools = body.get("tools")
    return "functions" in body or (tools is not None and not isinstance(tools, list))


def _tool_name(call: dict[str, Any]) -> str:
    return _s(_d(call.get("function")).get("name")) or _s(_d(call.get("custom")).get("name")) or ""


def _message(answer: dict[str, Any]) -> dict[str, Any]:
    choices = _list(answer.get("choices"))
    return _d(_d(choices[0]).get("message")) if choices else {}


class ChatTools(ToolWire):
    def inject(self, body: dict[str, Any], tools: Sequence[ToolSpec]) -> bool:
        if _leaves_alone(body) or not tools:
            return False
        own = body.get("tools") or []
        names = {_tool_name(_d(t)) for t in own}
        added = [{"type": "function", "function": {
            "name": t.name, "description": t.description,
            "parameters": object_schema(t.schema)}} for t in tools if t.name not in names]
        if not added:
            return False
        body["tools"] = [*own, *added]
        return True

    def calls(self, answer: dict[str, Any]) -> list[ToolCall]:
        return [ToolCall(_s(c.get("id")) or "", _tool_name(c),
                         _text(_d(c.get("function")).get("arguments")))
                for c in map(_d, _list(_message(answer).get("tool_calls")))]

    def follow_up(self, body: dict[str, Any], answer: dict[str, Any],
                  runs: Sequence[ToolRun]) -> dict[str, Any]:
        message = _message(answer)
        turn: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        turn["tool_calls"] = [{"id": _s(c.get("id")) or "", "type": "function",
                               "function": {"name": _tool_name(c),
                                            "arguments": _text(_d(c.get("function"))
                                                               .get("arguments"))}}
                              for c in map(_d, _list(message.get("tool_calls")))]
        results = [{"role": "tool", "tool_call_id": run.call.id, "content": run.output}
                   for run in runs]
        return {**body, "messages": [*_list(body.get("messages")), turn, *results]}

    def merge(self, answers: Sequence[dict[str, Any]], injected: Injected, *,
              dropped_calls: bool) -> dict[str, Any]:
        final = copy.deepcopy(answers[-1])
        choices = _list(final.get("choices"))
        if choices and isinstance(choices[0], dict):
            choice = choices[0]
            message = _d(choice.get("message"))
            texts = [t for a in answers if isinstance(t := _message(a).get("content"), str)]
            message["content"] = "".join(texts) if texts else message.get("content")
            visible = [c for c in _list(message.get("tool_calls"))
                       if not injected(_tool_name(_d(c)))]
            if visible:
                message["tool_calls"] = visible
            else:
                message.pop("tool_calls", None)
                if dropped_calls:
                    choice["finish_reason"] = "stop"
            choice["message"] = message
        usage: dict[str, Any] = {}
        for answer in answers:
            usage = sum_usage(usage, _d(answer.get("usage")))
        if usage:
            final["usage"] = usage
        return final

    def splicer(self, injected: Injected) -> ChatSplicer:
        return ChatSplicer(injected)


class ChatSplicer(StreamSplicer):
    def __init__(self, injected: Injected) -> None:
        self._injected = injected
        self._round = 0
        self._id: str | None = None  # the first round's: every chunk the client sees has it
        self._usage: dict[str, Any] = {}
        self._saw_usage = False
        self._done = False
        self._failed = False
        self._finish: dict[str, Any] | None = None  # the last round's finish chunk
        self._usage_chunk: dict[str, Any] | None = None
        self._last_visible_tool = False
        self._new_round()

    def _new_round(self) -> None:
        self._index: dict[int, int | None] = {}  # upstream call index -> client's (None: held)
        self._next_index = 0
        self._calls: dict[int, dict[str, Any]] = {}
        self._text: list[str] = []
        self._reason: str | None = None
        self._round_usage: dict[str, Any] = {}
        self._head: dict[str, Any] = {}
        self._visible_tool = False

    def event(self, name: str | None, data: bytes) -> bytes:
        if data.strip() == _DONE:
            self._done = True
            return b""
        if (obj := event_object(data)) is None:
            return raw_sse(name, data)
        if isinstance(obj.get("error"), dict):
            self._failed = True
            return raw_sse(name, data)
        if not self._head:
            self._head = {k: obj[k] for k in ("id", "object", "created", "model",
                                              "system_fingerprint", "service_tier") if k in obj}
        if self._id is None:
            self._id = _s(obj.get("id"))
        changed = self._round > 0 and self._id is not None and obj.get("id") != self._id
        hold = False
        if isinstance(usage := obj.get("usage"), dict):
            self._round_usage = usage
            self._saw_usage = True
            self._usage_chunk = obj
            obj = {**obj, "usage": None}
            changed = True
            hold = not _list(obj.get("choices"))
        choices = _list(obj.get("choices"))
        if choices and isinstance(choices[0], dict):
            choice, keep = self._choice(choices[0])
            if choice is not choices[0]:
                changed = True
                obj = {**obj, "choices": [choice, *choices[1:]] if keep else choices[1:]}
                hold = hold or not keep
        if hold:
            return b""
        if not changed:
            return raw_sse(name, data)
        if self._id is not None:
            obj["id"] = self._id
        return sse(name, obj)

    def _choice(self, choice: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The choice as the client sees it, and whether anything of it is left to send."""
        delta = _d(choice.get("delta"))
        reason = choice.get("finish_reason")
        calls = delta.get("tool_calls")
        if isinstance(content := delta.get("content"), str):
            self._text.append(content)
        if not calls and not reason:
            return choice, True
        out_delta = {k: v for k, v in delta.items() if k != "tool_calls"}
        if isinstance(calls, list) and calls:
            visible = [c for c in map(self._call, calls) if c is not None]
            if visible:
                out_delta["tool_calls"] = visible
        out = {**choice, "delta": out_delta}
        if reason:
            self._reason = _s(reason)
            self._finish = {**self._head, "choices": [{**choice, "delta": {}}]}
            out["finish_reason"] = None
        keep = any(v is not None for v in out_delta.values())
        return out, keep

    def _call(self, piece: object) -> dict[str, Any] | None:
        piece = _d(piece)
        upstream = piece.get("index")
        if not isinstance(upstream, int):
            return piece
        function = _d(piece.get("function"))
        entry = self._calls.get(upstream)
        if entry is None:
            name = _tool_name(piece)
            entry = self._calls[upstream] = {"id": _s(piece.get("id")) or "", "name": name,
                                             "arguments": []}
            if self._injected(name):
                self._index[upstream] = None
            else:
                self._index[upstream] = self._next_index
                self._next_index += 1
                self._visible_tool = True
        entry["arguments"].append(_text(function.get("arguments")))
        index = self._index.get(upstream)
        if index is None:
            return None
        return piece if index == upstream else {**piece, "index": index}

    def end_round(self) -> dict[str, Any]:
        calls = [{"id": c["id"], "type": "function",
                  "function": {"name": c["name"], "arguments": "".join(c["arguments"])}}
                 for _, c in sorted(self._calls.items())]
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(self._text) if self._text else None}
        if calls:
            message["tool_calls"] = calls
        answer = {**self._head, "choices": [{"index": 0, "message": message,
                                             "finish_reason": self._reason}],
                  "usage": self._round_usage}
        self._usage = sum_usage(self._usage, self._round_usage)
        self._round += 1
        self._last_visible_tool = self._visible_tool
        self._new_round()
        return answer

    def finish(self, *, dropped_calls: bool) -> bytes:
        if self._failed:
            return b"data: [DONE]\n\n" if self._done else b""
        out = b""
        if self._finish is not None:
            chunk = copy.deepcopy(self._finish)
            if self._id is not None:
                chunk["id"] = self._id
            if dropped_calls and not self._last_visible_tool:
                chunk["choices"][0]["finish_reason"] = "stop"
            if self._saw_usage:
                chunk["usage"] = None
            out += sse(None, chunk)
        if self._saw_usage and self._usage_chunk is not None:
            out += sse(None, {**self._usage_chunk, "id": self._id or self._usage_chunk.get("id"),
                              "choices": [], "usage": self._usage})
        if self._done:
            out += b"data: [DONE]\n\n"
        return out


CHAT_TOOLS = ChatTools()
