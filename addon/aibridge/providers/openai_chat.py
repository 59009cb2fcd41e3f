"""OpenAI Chat Completions (`POST /v1/chat/completions`), as OpenAI and the many
OpenAI-compatible providers speak it. Token conventions: see `aibridge.summary`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aibridge.providers.base import WireApi
from aibridge.providers.chat_tools import CHAT_TOOLS
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
from aibridge.providers.sse_shortcut import Shortcut
from aibridge.providers.stream import StreamAccumulator
from aibridge.providers.texts import TextSlot, text_parts
from aibridge.providers.tooluse import ToolWire
from aibridge.summary import ResponseSummary, ToolCall


def _usage(s: ResponseSummary, usage: dict) -> None:
    prompt = _d(usage.get("prompt_tokens_details"))
    completion = _d(usage.get("completion_tokens_details"))
    s.input_tokens = _n(usage.get("prompt_tokens"))
    s.output_tokens = _n(usage.get("completion_tokens"))
    s.cache_read_tokens = _n(prompt.get("cached_tokens"))
    _put_extra(s, "completion_reasoning", completion.get("reasoning_tokens"))
    _put_extra(s, "prompt_audio", prompt.get("audio_tokens"))
    _put_extra(s, "completion_audio", completion.get("audio_tokens"))
    _put_extra(s, "completion_accepted_prediction", completion.get("accepted_prediction_tokens"))
    _put_extra(s, "completion_rejected_prediction", completion.get("rejected_prediction_tokens"))


def _tool_parts(call: dict) -> tuple[str | None, str | None, str]:
    """(id, name, arguments piece) of a chat tool call or tool-call delta."""
    if "custom" in call:
        custom = _d(call.get("custom"))
        return _s(call.get("id")), _s(custom.get("name")), _text(custom.get("input"))
    function = _d(call.get("function"))
    return _s(call.get("id")), _s(function.get("name")), _text(function.get("arguments"))


# Output text of a delta: its key, and the label it is assembled under (in this order).
_DELTA_TEXTS = (("content", "text"), ("reasoning_content", "thinking"),
                ("reasoning", "thinking"), ("refusal", "refusal"))


class ChatAccumulator(StreamAccumulator):
    """Untyped chunks, then `[DONE]`."""

    done_marker = b"[DONE]"

    def _handle(self, name: str | None, obj: dict) -> None:
        s = self._summary
        if isinstance(error := obj.get("error"), dict):
            _set_error(s, _s(error.get("message")), _s(error.get("type")) or _s(error.get("code")))
            if self._assembly is not None:  # text beside an error is still output
                for choice in _list(obj.get("choices")):
                    if isinstance(choice, dict) and isinstance(delta := choice.get("delta"), dict):
                        self._delta_texts(_idx(choice.get("index")), delta)
            return
        if s.model is None:
            s.model = _s(obj.get("model"))
        if s.response_id is None:
            s.response_id = _s(obj.get("id"))
        choices = obj.get("choices")
        if isinstance(choices, list):  # the hot path (one chunk per token) is kept inline
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    content = delta.get("content")
                    if content and isinstance(content, str):
                        if self.first_token_at is None:
                            self._output()
                        s.text_chars += len(content)
                    if self._assembly is not None:
                        self._delta_texts(_idx(choice.get("index")), delta)
                    calls = delta.get("tool_calls")
                    if calls and isinstance(calls, list):
                        self._tools_delta(_idx(choice.get("index")), calls)
                finish = choice.get("finish_reason")
                if finish and isinstance(finish, str):
                    s.stop_reason = finish
                    s.completed = True
        if isinstance(usage := obj.get("usage"), dict):
            _usage(s, usage)

    def _delta_texts(self, index: int, delta: dict) -> None:
        add = self._assembly.add  # type: ignore[union-attr]
        for key, label in _DELTA_TEXTS:
            if isinstance(piece := delta.get(key), str) and piece:
                add((label, index), piece)

    def _tools_delta(self, choice_index: int, calls: list) -> None:
        self._output()
        for position, call in enumerate(calls):
            call = _d(call)
            # n > 1 choices each number their tool calls from 0.
            key = (choice_index, _idx(call.get("index", position)))
            call_id, tool_name, arguments = _tool_parts(call)
            entry = self._tools.get(key)
            if entry is None:
                self._start_tool(key, ToolCall(call_id or "", tool_name or "", ""))
            else:  # id and name normally come only in the first delta
                entry[0].id = entry[0].id or call_id or ""
                entry[0].name = entry[0].name or tool_name or ""
            self._append_args(key, arguments)

    def _learn(self, data: bytes, obj: dict) -> Shortcut | None:
        """A shortcut from a chunk whose one choice has only text or one tool-call piece."""
        if isinstance(obj.get("error"), dict) or isinstance(obj.get("usage"), dict):
            return None
        choices = obj.get("choices")
        if not (isinstance(choices, list) and len(choices) == 1):
            return None
        choice = choices[0]
        if not isinstance(choice, dict) or not isinstance(delta := choice.get("delta"), dict):
            return None
        finish = choice.get("finish_reason")
        if finish and isinstance(finish, str):
            return None
        if any(isinstance(piece := delta.get(key), str) and piece
               for key, _ in _DELTA_TEXTS[1:]):
            return None  # reasoning or refusal text beside it: not text-only
        content = delta.get("content")
        calls = delta.get("tool_calls")
        if not (calls and isinstance(calls, list)):
            if not isinstance(content, str) or (
                shortcut := self._build(data, b"content", content)
            ) is None:
                return None
            shortcut.counts = True
            shortcut.block = ("text", _idx(choice.get("index")))
            return shortcut
        if (content and isinstance(content, str)) or len(calls) != 1:
            return None
        call = calls[0]
        if not isinstance(call, dict) or "custom" in call:
            return None
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(
            arguments := function.get("arguments"), str
        ):
            return None
        key = (_idx(choice.get("index")), _idx(call.get("index", 0)))
        if key not in self._tools:
            return None
        if (shortcut := self._build(data, b"arguments", arguments)) is None:
            return None
        shortcut.always_output = True
        shortcut.args_key = key
        return shortcut


class ChatCompletions(WireApi):
    name = "chat"
    title = "OpenAI Chat Completions"
    path = "/chat/completions"

    def correlating_tool_call_id(self, body: dict) -> str | None:
        last = _last(body.get("messages"))
        return _s(last.get("tool_call_id")) if last.get("role") == "tool" else None

    def accumulator(self) -> ChatAccumulator:
        return ChatAccumulator()

    def summarize(self, body: object) -> ResponseSummary:
        s = ResponseSummary()
        if not isinstance(body, dict):
            return s
        if isinstance(error := body.get("error"), dict):
            _set_error(s, _s(error.get("message")), _s(error.get("type")) or _s(error.get("code")))
            return s
        s.model = _s(body.get("model"))
        s.response_id = _s(body.get("id"))
        _usage(s, _d(body.get("usage")))
        for choice in _list(body.get("choices")):
            choice = _d(choice)
            message = _d(choice.get("message"))
            s.text_chars += len(_text(message.get("content")))
            for call in _list(message.get("tool_calls")):
                call_id, name, arguments = _tool_parts(_d(call))
                s.tool_calls.append(ToolCall(call_id or "", name or "", arguments))
            s.stop_reason = s.stop_reason or _s(choice.get("finish_reason"))
        s.completed = True
        return s

    def last_prompt(self, body: object) -> str | None:
        # The last user message, wherever it is (tool and assistant messages may follow it).
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            return None
        for message in reversed(messages):
            if _role(message) == "user":
                return _content_text(message.get("content"), "text") or None
        return None

    def recognises(self, name: str | None, obj: object, data: str) -> int:
        if data == "[DONE]":
            return 1  # other APIs could end with it too
        if isinstance(obj, dict) and (obj.get("object") == "chat.completion.chunk"
                                      or isinstance(obj.get("choices"), list)):
            return 2
        return 0

    def stream_error_tail(self, body: dict[str, Any]) -> bytes:
        # Chat streams carry errors as a plain data line and still end with [DONE].
        data = json.dumps(body, separators=(",", ":"))
        return f"data: {data}\n\ndata: [DONE]\n\n".encode()

    def texts(self, body: dict) -> Iterator[TextSlot]:
        messages = body.get("messages")
        for index, message in enumerate(messages if isinstance(messages, list) else ()):
            if not isinstance(message, dict):
                continue
            role = message.get("role")
            if "content" in message:
                if role == "tool":
                    yield from text_parts(message, "content",
                                          "tool result of call {id} in message {index}", index,
                                          _s(message.get("tool_call_id")) or "")
                else:
                    yield from text_parts(message, "content", _TEMPLATES.get(
                        role, "message {index}"), index)
            calls = message.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if not isinstance(call, dict):
                    continue
                ident = _s(call.get("id")) or ""
                for name, field in (("function", "arguments"), ("custom", "input")):
                    holder = call.get(name)
                    if isinstance(holder, dict) and isinstance(holder.get(field), str):
                        yield TextSlot(holder, field, "tool call {id} in message {index}",
                                       index, ident)

    def tool_wire(self) -> ToolWire:
        return CHAT_TOOLS


_TEMPLATES = {"system": "system message {index}", "developer": "system message {index}"}


CHAT_COMPLETIONS = ChatCompletions()
