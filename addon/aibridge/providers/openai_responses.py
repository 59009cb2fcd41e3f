"""OpenAI Responses (`POST /v1/responses`), over HTTP and over a WebSocket (Codex's first choice:
one `response.create` frame per response, the server's frames being the stream's events).
Token conventions: see `aibridge.summary`."""

from __future__ import annotations

from collections.abc import Iterator

from aibridge.providers.base import WireApi
from aibridge.providers.jsonfields import (
    _content_text,
    _d,
    _idx,
    _last,
    _list,
    _n,
    _put_extra,
    _role,
    _s,
    _set_error,
    _text,
)
from aibridge.providers.responses_tools import RESPONSES_TOOLS
from aibridge.providers.stream import StreamAccumulator
from aibridge.providers.texts import TextSlot, strings, text_parts
from aibridge.providers.tooluse import ToolWire
from aibridge.summary import ResponseSummary, ToolCall

_TOOL_ITEMS = {"function_call": "arguments", "custom_tool_call": "input"}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_LIFECYCLE = ("response.created", "response.in_progress", *TERMINAL)
_DELTAS = {
    "response.output_text.delta": "text",
    "response.refusal.delta": "refusal",
    "response.reasoning_summary_text.delta": "thinking",
    "response.reasoning_text.delta": "thinking",
}


def _usage(s: ResponseSummary, usage: dict) -> None:
    s.input_tokens = _n(usage.get("input_tokens"))
    s.output_tokens = _n(usage.get("output_tokens"))
    s.cache_read_tokens = _n(_d(usage.get("input_tokens_details")).get("cached_tokens"))
    output = _d(usage.get("output_tokens_details"))
    _put_extra(s, "output_reasoning", output.get("reasoning_tokens"))


def _block_index(obj: dict) -> int:
    """The output text block of a delta: its output item and content part."""
    return _idx(obj.get("output_index")) * 1000 + _idx(obj.get("content_index"))


def _tool_field(item: dict) -> str | None:
    """Which field holds a tool-call item's input; None for other items."""
    kind = item.get("type")
    return _TOOL_ITEMS.get(kind) if isinstance(kind, str) else None


def _meta(s: ResponseSummary, response: dict) -> None:
    """Fields of a `response` object except its output items."""
    s.response_id = _s(response.get("id")) or s.response_id
    s.model = _s(response.get("model")) or s.model
    s.stop_reason = _s(response.get("status")) or s.stop_reason
    if isinstance(usage := response.get("usage"), dict):
        _usage(s, usage)
    if isinstance(error := response.get("error"), dict):
        _set_error(s, _s(error.get("message")), _s(error.get("code")))


class ResponsesAccumulator(StreamAccumulator):
    """Typed events; every `*.delta` is model output. Events carry a sequence number, so no two
    have the same bytes and the shortcut never applies."""

    def _handle(self, name: str | None, obj: dict) -> None:
        s = self._summary
        kind = obj.get("type")
        if not (kind and isinstance(kind, str)):
            kind = name or ""
        if kind == "response.output_text.delta":  # the hot path: one per token, kept inline
            if self.first_token_at is None:
                self._output()
            if isinstance(delta := obj.get("delta"), str):
                s.text_chars += len(delta)
                if self._assembly is not None:
                    self._assembly.add(("text", _block_index(obj)), delta)
        elif kind.endswith(".delta"):
            self._output()
            if kind in (
                "response.function_call_arguments.delta",
                "response.custom_tool_call_input.delta",
            ):
                self._append_args((_idx(obj.get("output_index")),), _text(obj.get("delta")))
            elif (self._assembly is not None and (label := _DELTAS.get(kind))
                  and isinstance(delta := obj.get("delta"), str)):
                self._assembly.add((label, _block_index(obj)), delta)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self._item(_idx(obj.get("output_index")), _d(obj.get("item")))
        elif kind in _LIFECYCLE:
            response = _d(obj.get("response"))
            _meta(s, response)
            if kind in TERMINAL:
                # The final output is authoritative (and all we get if items were skipped).
                for index, item in enumerate(_list(response.get("output"))):
                    self._item(index, _d(item))
                if self._assembly is not None:
                    self._final_text(response)
                s.completed = kind != "response.failed"
        elif kind == "error":
            _set_error(s, _s(obj.get("message")), _s(obj.get("code")))

    def _final_text(self, response: dict) -> None:
        """The final output's text: what the client got if the text deltas were skipped (or
        never sent), so it stands in for them only then."""
        for i, item in enumerate(_list(response.get("output"))):
            content = item.get("content") if isinstance(item, dict) else None
            for j, part in enumerate(_list(content)):
                if (isinstance(part, dict) and part.get("type") == "output_text"
                        and isinstance(text := part.get("text"), str)):
                    self._assembly.add_final(("text", i * 1000 + j), text)  # type: ignore[union-attr]

    def _item(self, index: int, item: dict) -> None:
        field = _tool_field(item)
        if field is None:
            return
        call_id, name = _s(item.get("call_id")) or "", _s(item.get("name")) or ""
        arguments = _text(item.get(field))
        entry = self._tools.get((index,))
        if entry is None:
            self._start_tool((index,), ToolCall(call_id, name, arguments))
            return
        call, pieces = entry
        call.id = call.id or call_id
        call.name = call.name or name
        if arguments:  # a finished item carries the complete arguments
            call.arguments = arguments
            pieces.clear()


_SOCKET_DONE = frozenset({"response.completed", "response.incomplete"})
_SOCKET_FAILED = frozenset({"response.failed", "error"})


class Responses(WireApi):
    name = "responses"
    title = "OpenAI Responses"
    path = "/responses"
    websocket = True

    def socket_frame_end(self, frame: dict) -> tuple[bool, str | None] | None:
        kind = frame.get("type")
        if kind in _SOCKET_DONE:
            return True, None
        if kind not in _SOCKET_FAILED:
            return None
        # WebSocket error frames nest the error (`{"type": "error", "error": {...}}`), unlike
        # the flat SSE `error` event.
        error = frame.get("error")
        message = error.get("message") if kind == "error" and isinstance(error, dict) else None
        return False, message if isinstance(message, str) and message else None

    def correlating_tool_call_id(self, body: dict) -> str | None:
        last = _last(body.get("input"))
        if last.get("type") in ("function_call_output", "custom_tool_call_output"):
            return _s(last.get("call_id"))
        return None

    def accumulator(self) -> ResponsesAccumulator:
        return ResponsesAccumulator()

    def summarize(self, body: object) -> ResponseSummary:
        s = ResponseSummary()
        if not isinstance(body, dict):
            return s
        _meta(s, body)
        for item in _list(body.get("output")):
            item = _d(item)
            if item.get("type") == "message":
                for part in _list(item.get("content")):
                    part = _d(part)
                    if part.get("type") == "output_text":
                        s.text_chars += len(_text(part.get("text")))
            elif field := _tool_field(item):
                s.tool_calls.append(ToolCall(_s(item.get("call_id")) or "",
                                             _s(item.get("name")) or "", _text(item.get(field))))
        s.completed = s.error is None
        return s

    def last_prompt(self, body: object) -> str | None:
        # `input` is either the prompt itself or a list of items (messages, tool outputs).
        items = body.get("input") if isinstance(body, dict) else None
        if isinstance(items, str):
            return items or None
        if not isinstance(items, list):
            return None
        for item in reversed(items):
            if _role(item) == "user":
                return _content_text(item.get("content"), "input_text") or None
        return None

    def recognises(self, name: str | None, obj: object, data: str) -> int:
        kind = obj.get("type") if isinstance(obj, dict) else None
        if (name or "").startswith("response.") or (
                isinstance(kind, str) and kind.startswith("response.")):
            return 2
        return 0

    def texts(self, body: dict) -> Iterator[TextSlot]:
        if isinstance(body.get("instructions"), str):
            yield TextSlot(body, "instructions", "instructions")
        items = body.get("input")
        if isinstance(items, str):
            yield TextSlot(body, "input", "input")
            return
        for index, item in enumerate(items if isinstance(items, list) else ()):
            if isinstance(item, dict):
                yield from _item_texts(item, index)

    def tool_wire(self) -> ToolWire:
        return RESPONSES_TOOLS


def _item_texts(item: dict, index: int) -> Iterator[TextSlot]:
    kind = item.get("type")
    if kind in _TOOL_ITEMS:  # function_call: arguments, custom_tool_call: input
        field = _TOOL_ITEMS[kind]
        if isinstance(item.get(field), str):
            yield TextSlot(item, field, "tool call {id} in input item {index}", index,
                           _s(item.get("call_id")) or "")
    elif kind in ("function_call_output", "custom_tool_call_output"):
        if "output" in item:
            yield from text_parts(item, "output", "tool result of call {id} in input item {index}",
                                  index, _s(item.get("call_id")) or "")
    elif kind == "reasoning":
        # The summary goes back with the provider's encrypted reasoning: read, never changed.
        for slot in strings(item.get("summary"), "reasoning in input item {index}", index):
            yield slot._replace(signed=True)
    elif kind == "message" or (kind is None and "role" in item):
        if "content" in item:
            yield from text_parts(item, "content", "input item {index}", index)
    elif kind == "item_reference":
        return
    else:  # shell calls and outputs, and item types this module does not know (yet)
        yield from strings(item, "input item {index}", index, _s(item.get("call_id")) or "")


RESPONSES = Responses()
