"""Request facts and response summaries for the three bridged routes.

Routes: "messages" (Anthropic Messages), "chat" (OpenAI Chat Completions), "responses"
(OpenAI Responses). Bodies come from clients and upstreams we do not control, so every
field is type-checked before use: an odd shape yields a missing value, never an exception.
Token conventions are documented in `aibridge.summary`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aibridge.streaming.sse import RawEvent, SSEEvent
from aibridge.summary import ResponseSummary, ToolCall

try:  # jiter comes with the openai SDK; it parses these small objects ~4x faster than json
    from jiter import from_json as _jiter_loads
except ImportError:  # pragma: no cover - json alone is only slower
    _jiter_loads = None

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


def _json_text(text: str) -> object:
    """json.loads, or None for anything that is not JSON (the reference verdict)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _json_str(text: str) -> object:
    """An event's data as JSON: jiter when it accepts the text, json otherwise.

    Where jiter succeeds it agrees with json.loads; whatever it refuses (lone surrogates,
    nesting past its limit, ...) is retried with json.loads, so the verdict is always json's.
    """
    if _jiter_loads is not None:
        try:
            return _jiter_loads(text.encode())
        except Exception:
            pass
    return _json_text(text)


def _json_bytes(data: bytes) -> object:
    """`_json_str(data.decode("utf-8", "replace"))` without decoding when jiter accepts it."""
    if _jiter_loads is not None:
        try:
            return _jiter_loads(data)  # invalid UTF-8 fails here and is retried below
        except Exception:
            pass
    return _json_text(data.decode("utf-8", "replace"))


_loads = _jiter_loads or _json_bytes  # feed_raw's first try (then _json_text if it raises)


def json_loads(data: bytes | str) -> object:
    """`json.loads(data)`, value and errors alike, through jiter where jiter accepts the text.

    Where jiter succeeds it agrees with json.loads; whatever it refuses (a BOM, UTF-16, lone
    surrogates, nesting past its limit, invalid JSON, ...) goes to json.loads for the verdict.
    """
    if _jiter_loads is not None and isinstance(data, bytes):
        try:
            return _jiter_loads(data)
        except Exception:  # any refusal is json's to judge
            pass
    return json.loads(data)


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


# Providers stream one JSON object per token and, from token to token, repeat the same
# bytes with only the text changed. `_Shortcut` lets such events skip JSON parsing.
_KEY_COLON_QUOTE = re.compile(rb'\s*:\s*"')
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_PADDING_KEY = b'"obfuscation"'  # OpenAI's random padding against length side channels
_PADDING = re.compile(_PADDING_KEY + rb'\s*:\s*"')
_SHORTCUT_BUILDS = 32  # per stream: bounds the cost on streams that never repeat


class _Shortcut:
    """A text-only event the full parser has just handled, with its text string cut out.

    An event whose bytes are `prefix`, a JSON string body, then the template's remaining
    bytes (`suffix`; or `middle`, alphanumeric padding and `suffix` when the template had an
    "obfuscation" string after the text) parses to the template's object with only that
    string changed, so its effect is known without parsing it: output, plus the string's
    exact length in text_chars or the string appended to a tool call's arguments. Only the
    string literal itself is decoded (which also validates it).

    `build` only accepts templates where this reasoning holds: no backslash outside the
    string (so no key is spelled with escapes), the string's key occurring exactly once,
    and the decoded literal equal to the value the parser saw under that key.
    """

    __slots__ = ("always_output", "args_key", "counts", "middle", "prefix", "start", "suffix")

    def __init__(self, prefix: bytes, middle: bytes | None, suffix: bytes) -> None:
        self.prefix = prefix  # ends with the string's opening quote
        self.start = len(prefix)
        self.middle = middle  # from the string's closing quote to the padding's opening one
        self.suffix = suffix  # from the closing quote (of the padding, if any) to the end
        self.counts = False  # the string is output text: add its length to text_chars
        self.always_output = False  # output even if the string is empty
        self.args_key: tuple[int, ...] | None = None  # the string is a tool-arguments piece

    @staticmethod
    def build(data: bytes, key: bytes, value: str) -> _Shortcut | None:
        if _jiter_loads is None:
            return None
        quoted = b'"' + key + b'"'
        at = data.find(quoted)
        if at < 0 or data.count(quoted) != 1:
            return None
        if not (colon := _KEY_COLON_QUOTE.match(data, at + len(quoted))):
            return None
        start = colon.end()
        close = _STRING_BODY.match(data, start).end()
        if close >= len(data) or data.find(92, 0, start) >= 0 or data.find(92, close) >= 0:
            return None
        try:
            if _jiter_loads(data[start - 1 : close + 1]) != value:
                return None
        except Exception:
            return None
        padding = _PADDING.search(data, close)
        if padding is None:
            if data.find(_PADDING_KEY) >= 0:  # before the text: it would differ every time
                return None
            return _Shortcut(data[:start], None, data[close:])
        pad_start = padding.end()
        pad_end = data.find(34, pad_start)
        if pad_end < 0 or data.count(_PADDING_KEY) != 1:
            return None
        pad = data[pad_start:pad_end]
        if pad and not pad.isalnum():
            return None
        return _Shortcut(data[:start], data[close:pad_start], data[pad_end:])

    def string(self, data: bytes) -> str | None:
        """The string in `data` (which starts with `prefix`) if it fits the template."""
        start = self.start
        close = data.find(34, start)
        if close < 0:
            return None
        if data[close - 1] == 92:  # perhaps an escaped quote: find the string's real end
            close = _STRING_BODY.match(data, start).end()  # type: ignore[union-attr]
            if close >= len(data):
                return None
        suffix = self.suffix
        middle = self.middle
        if middle is None:
            if len(data) - close != len(suffix) or not data.endswith(suffix):
                return None
        else:
            pad_start = close + len(middle)
            pad_end = len(data) - len(suffix)
            if pad_end < pad_start or not data.startswith(middle, close):
                return None
            if not data.endswith(suffix):
                return None
            if pad_end > pad_start and not data[pad_start:pad_end].isalnum():
                return None
        try:  # validates the literal: escapes, control characters, UTF-8
            return _jiter_loads(data[start - 1 : close + 1])  # type: ignore[misc]
        except Exception:
            return None


class StreamAccumulator:
    """Builds a ResponseSummary from SSE events as they arrive.

    Tool-call arguments arrive in many small pieces; they are kept in lists and joined
    only when `summary` is read, so feeding stays linear in the stream size. A stream
    that breaks off still yields the arguments received so far.

    `first_token_at` marks the first event carrying model output of any kind (text,
    thinking/reasoning, tool-call input), which is what a client waiting on the stream
    experiences as time to first token.

    `feed` takes SSEEvents; the tap uses `feed_raw`, which takes the parser's bytes events
    and has exactly the same effect, only faster: JSON is read with jiter (json.loads where
    jiter refuses, so verdicts never differ), and on chat and messages streams an event that
    repeats the bytes of a text-only event seen just before except for its text (or
    tool-input piece) skips JSON parsing altogether (`_Shortcut`). text_chars stays exact.
    """

    def __init__(self, route: str) -> None:
        _check_route(route)
        self.route = route
        self._is_chat = route == "chat"
        self.bad_events = 0  # events whose data was not a JSON object
        self.first_token_at: float | None = None  # time.monotonic() of the first output
        self._summary = ResponseSummary()
        self._handle: Callable[[str | None, dict], None] = getattr(self, f"_{route}")
        # Tool calls still receiving argument pieces: stream key -> (call, pieces).
        self._tools: dict[tuple[int, ...], tuple[ToolCall, list[str]]] = {}
        self._dirty = False
        self._shortcut: _Shortcut | None = None
        self._builds = _SHORTCUT_BUILDS
        # Responses events carry a sequence number, so no two have the same bytes.
        self._learn: Callable[[bytes, dict], _Shortcut | None] | None = {
            "chat": self._learn_chat,
            "messages": self._learn_messages,
        }.get(route)

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
        obj = _json_str(data)
        if isinstance(obj, dict):
            self._handle(event.event, obj)
        else:
            self._not_an_object(event.event, data)

    def feed_raw(self, events: Sequence[RawEvent]) -> None:
        """Feed events as `SSEParser.feed_raw` returns them; same effect as `feed` on each."""
        s = self._summary
        s.events += len(events)
        handle = self._handle
        chat = self._is_chat
        loads = _loads
        shortcut = self._shortcut
        for name, data, _ in events:
            if (
                shortcut is not None
                and data.startswith(shortcut.prefix)
                and (piece := shortcut.string(data)) is not None
            ):
                if self.first_token_at is None and (piece or shortcut.always_output):
                    self.first_token_at = time.monotonic()
                if shortcut.counts:
                    s.text_chars += len(piece)
                elif shortcut.args_key is not None:
                    self._append_args(shortcut.args_key, piece)
                continue
            if chat and data == b"[DONE]":
                s.completed = True
                continue
            try:
                obj = loads(data)
            except Exception:  # jiter refused it: json decides, as in `feed`
                obj = _json_text(data.decode("utf-8", "replace"))
            if isinstance(obj, dict):
                handle(name, obj)
                if (
                    self._learn is not None
                    and self._builds > 0
                    and (learned := self._learn(data, obj)) is not None
                ):
                    self._shortcut = shortcut = learned
            else:
                self._not_an_object(name, data.decode("utf-8", "replace"))

    def _not_an_object(self, name: str | None, data: str) -> None:
        self.bad_events += 1
        if name == "error":  # an error we cannot parse is still an error
            _set_error(self._summary, data[:1024] or None, None)

    def _build(self, data: bytes, key: bytes, value: str) -> _Shortcut | None:
        self._builds -= 1
        return _Shortcut.build(data, key, value)

    def _learn_messages(self, data: bytes, obj: dict) -> _Shortcut | None:
        """A shortcut from a text, thinking or tool-input delta (any other is not text-only)."""
        if obj.get("type") != "content_block_delta":  # then the SSE event name is moot
            return None
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return None
        kind = delta.get("type")
        if kind == "text_delta":
            key = b"text"
        elif kind == "thinking_delta":
            key = b"thinking"
        elif kind == "input_json_delta":
            key = b"partial_json"
        else:
            return None
        value = delta.get(key.decode())
        if not isinstance(value, str) or (shortcut := self._build(data, key, value)) is None:
            return None
        shortcut.always_output = True
        shortcut.counts = kind == "text_delta"
        if kind == "input_json_delta":
            shortcut.args_key = (_idx(obj.get("index")),)
        return shortcut

    def _learn_chat(self, data: bytes, obj: dict) -> _Shortcut | None:
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
        content = delta.get("content")
        calls = delta.get("tool_calls")
        if not (calls and isinstance(calls, list)):
            if not isinstance(content, str) or (
                shortcut := self._build(data, b"content", content)
            ) is None:
                return None
            shortcut.counts = True
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
        if kind == "content_block_delta":  # the hot path: one per token, kept inline
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            delta = obj.get("delta")
            if isinstance(delta, dict):
                delta_kind = delta.get("type")
                if delta_kind == "text_delta":
                    text = delta.get("text")
                    if isinstance(text, str):
                        s.text_chars += len(text)
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
                            self.first_token_at = time.monotonic()
                        s.text_chars += len(content)
                    calls = delta.get("tool_calls")
                    if calls and isinstance(calls, list):
                        self._chat_tools(_idx(choice.get("index")), calls)
                finish = choice.get("finish_reason")
                if finish and isinstance(finish, str):
                    s.stop_reason = finish
                    s.completed = True
        if isinstance(usage := obj.get("usage"), dict):
            _chat_usage(s, usage)

    def _chat_tools(self, choice_index: int, calls: list) -> None:
        self._output()
        for position, call in enumerate(calls):
            call = _d(call)
            # n > 1 choices each number their tool calls from 0.
            key = (choice_index, _idx(call.get("index", position)))
            call_id, tool_name, arguments = _chat_tool_parts(call)
            entry = self._tools.get(key)
            if entry is None:
                self._start_tool(key, ToolCall(call_id or "", tool_name or "", ""))
            else:  # id and name normally come only in the first delta
                entry[0].id = entry[0].id or call_id or ""
                entry[0].name = entry[0].name or tool_name or ""
            self._append_args(key, arguments)

    # Responses: typed events; every `*.delta` is model output.
    def _responses(self, name: str | None, obj: dict) -> None:
        s = self._summary
        kind = obj.get("type")
        if not (kind and isinstance(kind, str)):
            kind = name or ""
        if kind == "response.output_text.delta":  # the hot path: one per token, kept inline
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            if isinstance(delta := obj.get("delta"), str):
                s.text_chars += len(delta)
        elif kind.endswith(".delta"):
            self._output()
            if kind in (
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
