"""Request facts and response summaries for the three bridged routes.

Routes: "messages" (Anthropic Messages), "chat" (OpenAI Chat Completions), "responses"
(OpenAI Responses). Bodies come from clients and upstreams we do not control, so every
field is type-checked before use: an odd shape yields a missing value, never an exception.
Token conventions are documented in `aibridge.summary`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from aibridge.sse import SSEEvent
from aibridge.summary import ResponseSummary, ToolCall

ROUTES = ("messages", "chat", "responses")
UNKNOWN_MODEL = "unknown"


def _check_route(route: str) -> None:
    if route not in ROUTES:
        raise ValueError(f"unknown route kind: {route!r}")


def _d(v: object) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: object) -> list:
    return v if isinstance(v, list) else []


def _s(v: object) -> str | None:
    """A non-empty string or None."""
    return v if isinstance(v, str) and v else None


def _text(v: object) -> str:
    return v if isinstance(v, str) else ""


def _n(v: object) -> int:
    """A token count: positive ints only (bool is an int subclass, so check the type)."""
    return v if type(v) is int and v > 0 else 0


def _idx(v: object) -> int:
    """A stream index usable as a dict key (JSON could hand us an unhashable list)."""
    return v if type(v) is int else 0


def _last(v: object) -> dict:
    return _d(v[-1]) if isinstance(v, list) and v else {}


def _dumps(v: object) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


# --- requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    model: str
    streaming: bool
    correlating_tool_call_id: str | None


def parse_request(route: str, body: object) -> RequestInfo:
    """Model, streaming flag and the tool-call id whose results this request submits.

    `stream` must be JSON `true` on every route: a string "true" or 1 would make the
    upstream answer with JSON while we expected SSE (or the reverse).
    """
    _check_route(route)
    if not isinstance(body, dict):
        return RequestInfo(UNKNOWN_MODEL, False, None)
    return RequestInfo(
        model=_s(body.get("model")) or UNKNOWN_MODEL,
        streaming=body.get("stream") is True,
        correlating_tool_call_id=_CORRELATORS[route](body),
    )


def _messages_correlation(body: dict) -> str | None:
    # All results of a turn are submitted together, so any one id links the turns.
    for block in reversed(_list(_last(body.get("messages")).get("content"))):
        block = _d(block)
        if block.get("type") == "tool_result" and (tool_id := _s(block.get("tool_use_id"))):
            return tool_id
    return None


def _chat_correlation(body: dict) -> str | None:
    last = _last(body.get("messages"))
    return _s(last.get("tool_call_id")) if last.get("role") == "tool" else None


def _responses_correlation(body: dict) -> str | None:
    last = _last(body.get("input"))
    if last.get("type") in ("function_call_output", "custom_tool_call_output"):
        return _s(last.get("call_id"))
    return None


_CORRELATORS: dict[str, Callable[[dict], str | None]] = {
    "messages": _messages_correlation,
    "chat": _chat_correlation,
    "responses": _responses_correlation,
}


# --- shared summary helpers ----------------------------------------------------------


def _put_extra(s: ResponseSummary, key: str, value: object) -> None:
    if n := _n(value):
        s.extra_tokens[key] = n


def _set_error(s: ResponseSummary, message: str | None, kind: str | None) -> None:
    # The first error is the cause; later ones (e.g. response.failed after error) repeat it.
    if s.error is None:
        s.error = message or kind or "unknown error"
        s.error_type = kind


def _anthropic_usage(s: ResponseSummary, usage: dict) -> None:
    """Apply an Anthropic usage object; zero/missing fields never overwrite known values.

    That one rule serves whole bodies, `message_start` and `message_delta` alike: the
    delta's output_tokens is cumulative, so it replaces (never adds to) the start's count.
    """
    for attr, key in (
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("cache_read_tokens", "cache_read_input_tokens"),
        ("cache_write_tokens", "cache_creation_input_tokens"),
    ):
        if n := _n(usage.get(key)):
            setattr(s, attr, n)
    server_tools = _d(usage.get("server_tool_use"))
    _put_extra(s, "web_search_requests", server_tools.get("web_search_requests"))
    creation = _d(usage.get("cache_creation"))
    _put_extra(s, "cache_ephemeral_1h_input", creation.get("ephemeral_1h_input_tokens"))
    _put_extra(s, "cache_ephemeral_5m_input", creation.get("ephemeral_5m_input_tokens"))


def _chat_usage(s: ResponseSummary, usage: dict) -> None:
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


def _responses_usage(s: ResponseSummary, usage: dict) -> None:
    s.input_tokens = _n(usage.get("input_tokens"))
    s.output_tokens = _n(usage.get("output_tokens"))
    s.cache_read_tokens = _n(_d(usage.get("input_tokens_details")).get("cached_tokens"))
    output = _d(usage.get("output_tokens_details"))
    _put_extra(s, "output_reasoning", output.get("reasoning_tokens"))


def _chat_tool_parts(call: dict) -> tuple[str | None, str | None, str]:
    """(id, name, arguments piece) of a chat tool call or tool-call delta."""
    if "custom" in call:
        custom = _d(call.get("custom"))
        return _s(call.get("id")), _s(custom.get("name")), _text(custom.get("input"))
    function = _d(call.get("function"))
    return _s(call.get("id")), _s(function.get("name")), _text(function.get("arguments"))


_RESPONSES_TOOL_ITEMS = {"function_call": "arguments", "custom_tool_call": "input"}


def _tool_field(item: dict) -> str | None:
    """Which field holds a Responses tool-call item's input; None for other items."""
    kind = item.get("type")
    return _RESPONSES_TOOL_ITEMS.get(kind) if isinstance(kind, str) else None


def _responses_meta(s: ResponseSummary, response: dict) -> None:
    """Fields of a Responses `response` object except its output items."""
    s.response_id = _s(response.get("id")) or s.response_id
    s.model = _s(response.get("model")) or s.model
    s.stop_reason = _s(response.get("status")) or s.stop_reason
    if isinstance(usage := response.get("usage"), dict):
        _responses_usage(s, usage)
    if isinstance(error := response.get("error"), dict):
        _set_error(s, _s(error.get("message")), _s(error.get("code")))


# --- whole JSON bodies ---------------------------------------------------------------


def summarize_json(route: str, body: object) -> ResponseSummary:
    """Summary of a non-streaming 2xx JSON response; `completed` unless it carries an error."""
    _check_route(route)
    s = ResponseSummary()
    if isinstance(body, dict):
        _WHOLE[route](s, body)
        s.completed = s.error is None
    return s


def _messages_whole(s: ResponseSummary, body: dict) -> None:
    if body.get("type") == "error":
        error = _d(body.get("error"))
        _set_error(s, _s(error.get("message")), _s(error.get("type")))
        return
    s.model = _s(body.get("model"))
    s.response_id = _s(body.get("id"))
    s.stop_reason = _s(body.get("stop_reason"))
    _anthropic_usage(s, _d(body.get("usage")))
    for block in _list(body.get("content")):
        block = _d(block)
        kind = block.get("type")
        if kind == "text":
            s.text_chars += len(_text(block.get("text")))
        elif kind == "tool_use":
            s.tool_calls.append(
                ToolCall(
                    _s(block.get("id")) or "",
                    _s(block.get("name")) or "",
                    _dumps(block.get("input", {})),
                )
            )


def _chat_whole(s: ResponseSummary, body: dict) -> None:
    if isinstance(error := body.get("error"), dict):
        _set_error(s, _s(error.get("message")), _s(error.get("type")) or _s(error.get("code")))
        return
    s.model = _s(body.get("model"))
    s.response_id = _s(body.get("id"))
    _chat_usage(s, _d(body.get("usage")))
    for choice in _list(body.get("choices")):
        choice = _d(choice)
        message = _d(choice.get("message"))
        s.text_chars += len(_text(message.get("content")))
        for call in _list(message.get("tool_calls")):
            call_id, name, arguments = _chat_tool_parts(_d(call))
            s.tool_calls.append(ToolCall(call_id or "", name or "", arguments))
        s.stop_reason = s.stop_reason or _s(choice.get("finish_reason"))


def _responses_whole(s: ResponseSummary, body: dict) -> None:
    _responses_meta(s, body)
    for item in _list(body.get("output")):
        item = _d(item)
        if item.get("type") == "message":
            for part in _list(item.get("content")):
                part = _d(part)
                if part.get("type") == "output_text":
                    s.text_chars += len(_text(part.get("text")))
        elif field := _tool_field(item):
            s.tool_calls.append(
                ToolCall(
                    _s(item.get("call_id")) or "",
                    _s(item.get("name")) or "",
                    _text(item.get(field)),
                )
            )


_WHOLE: dict[str, Callable[[ResponseSummary, dict], None]] = {
    "messages": _messages_whole,
    "chat": _chat_whole,
    "responses": _responses_whole,
}


# --- streams -------------------------------------------------------------------------


class StreamAccumulator:
    """Builds a ResponseSummary from SSE events as they arrive.

    Tool-call arguments arrive in many small pieces; they are kept in lists and joined
    only when `summary` is read, so feeding stays linear in the stream size. A stream
    that breaks off still yields the arguments received so far.

    `first_token_at` marks the first event carrying model output of any kind (text,
    thinking/reasoning, tool-call input), which is what a client waiting on the stream
    experiences as time to first token.
    """

    def __init__(self, route: str) -> None:
        _check_route(route)
        self.route = route
        self.bad_events = 0  # events whose data was not a JSON object
        self.first_token_at: float | None = None  # time.monotonic() of the first output
        self._summary = ResponseSummary()
        self._handle: Callable[[str | None, dict], None] = getattr(self, f"_{route}")
        # Tool calls still receiving argument pieces: stream key -> (call, pieces).
        self._tools: dict[tuple[int, ...], tuple[ToolCall, list[str]]] = {}
        self._dirty = False

    @property
    def summary(self) -> ResponseSummary:
        if self._dirty:
            for call, pieces in self._tools.values():
                if pieces:
                    call.arguments = "".join(pieces)
                    pieces[:] = [call.arguments]
            self._dirty = False
        return self._summary

    def feed(self, event: SSEEvent) -> None:
        s = self._summary
        s.events += 1
        data = event.data
        if data == "[DONE]" and self.route == "chat":
            s.completed = True
            return
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            self.bad_events += 1
            if event.event == "error":  # an error we cannot parse is still an error
                _set_error(s, data[:1024] or None, None)
            return
        self._handle(event.event, obj)

    def _output(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def _start_tool(self, key: tuple[int, ...], call: ToolCall) -> None:
        self._summary.tool_calls.append(call)
        self._tools[key] = (call, [])

    def _append_args(self, key: tuple[int, ...], piece: str) -> None:
        if piece and (entry := self._tools.get(key)):
            entry[1].append(piece)
            self._dirty = True

    # Anthropic Messages: typed events; the JSON `type` mirrors the SSE event name.
    def _messages(self, name: str | None, obj: dict) -> None:
        s = self._summary
        kind = obj.get("type") or name
        if kind == "content_block_delta":  # the hot path: one per token
            self._output()
            delta = _d(obj.get("delta"))
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                s.text_chars += len(_text(delta.get("text")))
            elif delta_kind == "input_json_delta":
                self._append_args((_idx(obj.get("index")),), _text(delta.get("partial_json")))
        elif kind == "message_start":
            message = _d(obj.get("message"))
            s.model = _s(message.get("model")) or s.model
            s.response_id = _s(message.get("id")) or s.response_id
            _anthropic_usage(s, _d(message.get("usage")))
        elif kind == "content_block_start":
            block = _d(obj.get("content_block"))
            if block.get("type") == "tool_use":
                # `input` is `{}` here; it stands if no input_json_delta follows.
                call = ToolCall(
                    _s(block.get("id")) or "",
                    _s(block.get("name")) or "",
                    _dumps(block.get("input", {})),
                )
                self._start_tool((_idx(obj.get("index")),), call)
        elif kind == "message_delta":
            s.stop_reason = _s(_d(obj.get("delta")).get("stop_reason")) or s.stop_reason
            _anthropic_usage(s, _d(obj.get("usage")))
        elif kind == "message_stop":
            s.completed = True
        elif kind == "error":
            error = _d(obj.get("error"))
            _set_error(s, _s(error.get("message")), _s(error.get("type")))

    # Chat Completions: untyped chunks, then `[DONE]` (handled in feed).
    def _chat(self, name: str | None, obj: dict) -> None:
        s = self._summary
        if isinstance(error := obj.get("error"), dict):
            _set_error(s, _s(error.get("message")), _s(error.get("type")) or _s(error.get("code")))
            return
        s.model = s.model or _s(obj.get("model"))
        s.response_id = s.response_id or _s(obj.get("id"))
        for choice in _list(obj.get("choices")):
            choice = _d(choice)
            delta = _d(choice.get("delta"))
            if content := _text(delta.get("content")):
                self._output()
                s.text_chars += len(content)
            for position, call in enumerate(_list(delta.get("tool_calls"))):
                self._output()
                call = _d(call)
                # n > 1 choices each number their tool calls from 0.
                key = (_idx(choice.get("index")), _idx(call.get("index", position)))
                call_id, tool_name, arguments = _chat_tool_parts(call)
                entry = self._tools.get(key)
                if entry is None:
                    self._start_tool(key, ToolCall(call_id or "", tool_name or "", ""))
                else:  # id and name normally come only in the first delta
                    entry[0].id = entry[0].id or call_id or ""
                    entry[0].name = entry[0].name or tool_name or ""
                self._append_args(key, arguments)
            if finish := _s(choice.get("finish_reason")):
                s.stop_reason = finish
                s.completed = True
        if isinstance(usage := obj.get("usage"), dict):
            _chat_usage(s, usage)

    # Responses: typed events; every `*.delta` is model output.
    def _responses(self, name: str | None, obj: dict) -> None:
        s = self._summary
        kind = _s(obj.get("type")) or name or ""
        if kind.endswith(".delta"):
            self._output()
            if kind == "response.output_text.delta":
                s.text_chars += len(_text(obj.get("delta")))
            elif kind in (
                "response.function_call_arguments.delta",
                "response.custom_tool_call_input.delta",
            ):
                self._append_args((_idx(obj.get("output_index")),), _text(obj.get("delta")))
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self._responses_item(_idx(obj.get("output_index")), _d(obj.get("item")))
        elif kind in _RESPONSE_LIFECYCLE:
            response = _d(obj.get("response"))
            _responses_meta(s, response)
            if kind in _RESPONSE_TERMINAL:
                # The final output is authoritative (and all we get if items were skipped).
                for index, item in enumerate(_list(response.get("output"))):
                    self._responses_item(index, _d(item))
                s.completed = kind != "response.failed"
        elif kind == "error":
            _set_error(s, _s(obj.get("message")), _s(obj.get("code")))

    def _responses_item(self, index: int, item: dict) -> None:
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


_RESPONSE_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_RESPONSE_LIFECYCLE = ("response.created", "response.in_progress", *_RESPONSE_TERMINAL)
