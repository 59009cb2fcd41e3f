"""Anthropic Messages (`POST /v1/messages`) and the Anthropic API it belongs to.
Token conventions: see `aibridge.summary`."""

from __future__ import annotations

from collections.abc import Iterator

from mitmproxy.http import Headers

from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.intercept import parse_bearer
from aibridge.providers.base import CredentialSlot, ProviderApi, WireApi
from aibridge.providers.jsonfields import (
    _content_text,
    _d,
    _dumps,
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
from aibridge.providers.messages_tools import MESSAGES_TOOLS
from aibridge.providers.sse_shortcut import Shortcut
from aibridge.providers.stream import StreamAccumulator
from aibridge.providers.texts import TextSlot, strings, text_parts
from aibridge.providers.tooluse import ToolWire
from aibridge.summary import ResponseSummary, ToolCall

_EVENT_TYPES = frozenset({
    "message_start", "message_delta", "message_stop", "content_block_start",
    "content_block_delta", "content_block_stop", "ping",
})


def _usage(s: ResponseSummary, usage: dict) -> None:
    """Apply a usage object; zero/missing fields never overwrite known values.

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


class MessagesAccumulator(StreamAccumulator):
    """Typed events; the JSON `type` mirrors the SSE event name."""

    def _handle(self, name: str | None, obj: dict) -> None:
        s = self._summary
        kind = obj.get("type") or name
        if kind == "content_block_delta":  # the hot path: one per token, kept inline
            if self.first_token_at is None:
                self._output()
            delta = obj.get("delta")
            if isinstance(delta, dict):
                delta_kind = delta.get("type")
                if delta_kind == "text_delta":
                    text = delta.get("text")
                    if isinstance(text, str):
                        s.text_chars += len(text)
                        if self._assembly is not None:
                            self._assembly.add(("text", _idx(obj.get("index"))), text)
                elif delta_kind == "input_json_delta":
                    self._append_args((_idx(obj.get("index")),), _text(delta.get("partial_json")))
                elif (delta_kind == "thinking_delta" and self._assembly is not None
                      and isinstance(thinking := delta.get("thinking"), str)):
                    self._assembly.add(("thinking", _idx(obj.get("index"))), thinking)
        elif kind == "message_start":
            message = _d(obj.get("message"))
            s.model = _s(message.get("model")) or s.model
            s.response_id = _s(message.get("id")) or s.response_id
            _usage(s, _d(message.get("usage")))
        elif kind == "content_block_start":
            block = _d(obj.get("content_block"))
            if block.get("type") == "tool_use":
                # `input` is `{}` here; it stands if no input_json_delta follows.
                call = ToolCall(_s(block.get("id")) or "", _s(block.get("name")) or "",
                                _dumps(block.get("input", {})))
                self._start_tool((_idx(obj.get("index")),), call)
        elif kind == "message_delta":
            s.stop_reason = _s(_d(obj.get("delta")).get("stop_reason")) or s.stop_reason
            _usage(s, _d(obj.get("usage")))
        elif kind == "message_stop":
            s.completed = True
        elif kind == "error":
            error = _d(obj.get("error"))
            _set_error(s, _s(error.get("message")), _s(error.get("type")))

    def _learn(self, data: bytes, obj: dict) -> Shortcut | None:
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
        index = _idx(obj.get("index"))
        if kind == "input_json_delta":
            shortcut.args_key = (index,)
        else:
            shortcut.block = ("text" if kind == "text_delta" else "thinking", index)
        return shortcut


class Messages(WireApi):
    name = "messages"
    title = "Anthropic Messages"
    path = "/messages"

    def correlating_tool_call_id(self, body: dict) -> str | None:
        # All results of a turn are submitted together, so any one id links the turns.
        for block in reversed(_list(_last(body.get("messages")).get("content"))):
            block = _d(block)
            if block.get("type") == "tool_result" and (tool_id := _s(block.get("tool_use_id"))):
                return tool_id
        return None

    def accumulator(self) -> MessagesAccumulator:
        return MessagesAccumulator()

    def summarize(self, body: object) -> ResponseSummary:
        s = ResponseSummary()
        if not isinstance(body, dict):
            return s
        if body.get("type") == "error":
            error = _d(body.get("error"))
            _set_error(s, _s(error.get("message")), _s(error.get("type")))
            return s
        s.model = _s(body.get("model"))
        s.response_id = _s(body.get("id"))
        s.stop_reason = _s(body.get("stop_reason"))
        _usage(s, _d(body.get("usage")))
        for block in _list(body.get("content")):
            block = _d(block)
            kind = block.get("type")
            if kind == "text":
                s.text_chars += len(_text(block.get("text")))
            elif kind == "tool_use":
                s.tool_calls.append(ToolCall(_s(block.get("id")) or "",
                                             _s(block.get("name")) or "",
                                             _dumps(block.get("input", {}))))
        s.completed = True
        return s

    def last_prompt(self, body: object) -> str | None:
        # Only the final turn counts. Some clients append a system-role message after the
        # user's turn, so step back over exactly one; an earlier user turn is history.
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]
        if _role(last) == "system" and len(messages) >= 2:
            last = messages[-2]
        if _role(last) != "user":
            return None
        return _content_text(last.get("content"), "text") or None

    def recognises(self, name: str | None, obj: object, data: str) -> int:
        kind = obj.get("type") if isinstance(obj, dict) else None
        return 2 if name in _EVENT_TYPES or kind in _EVENT_TYPES else 0

    def texts(self, body: dict) -> Iterator[TextSlot]:
        if "system" in body:
            yield from text_parts(body, "system", "system prompt")
        messages = body.get("messages")
        for index, message in enumerate(messages if isinstance(messages, list) else ()):
            if not isinstance(message, dict) or "content" not in message:
                continue
            content = message["content"]
            if isinstance(content, str):
                yield TextSlot(message, "content", "message {index}", index)
            elif isinstance(content, list):
                for block in content:
                    if isinstance(block, dict):
                        yield from _block_texts(block, index)

    def tool_wire(self) -> ToolWire:
        return MESSAGES_TOOLS


def _block_texts(block: dict, index: int) -> Iterator[TextSlot]:
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):  # the common case first
        yield TextSlot(block, "text", "message {index}", index)
    elif kind == "tool_result":
        ident = _s(block.get("tool_use_id")) or ""
        if "content" in block:
            yield from text_parts(block, "content", "tool result of call {id} in message {index}",
                                  index, ident)
    elif kind in ("tool_use", "server_tool_use"):
        yield from strings(block.get("input"), "tool call {id} in message {index}", index,
                           _s(block.get("id")) or "")
    elif kind == "thinking":
        if isinstance(block.get("thinking"), str):
            yield TextSlot(block, "thinking", "thinking in message {index}", index, signed=True)
    elif kind in ("redacted_thinking", "image"):
        return  # encrypted by the provider / no text
    elif kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text" \
                and isinstance(source.get("data"), str):
            yield TextSlot(source, "data", "document in message {index}", index)
        elif isinstance(source, dict) and source.get("type") == "content":
            yield from strings(source.get("content"), "document in message {index}", index)
    else:  # a block type this module does not know (yet): every string in it
        yield from strings(block, "message {index}", index)


MESSAGES = Messages()
_API_KEY = CredentialSlot("X-Api-Key")
_BEARER = CredentialSlot("Authorization", bearer=True)


class AnthropicApi(ProviderApi):
    """api.anthropic.com and Anthropic-compatible providers."""

    type = "anthropic"
    apis = (MESSAGES,)
    credential = _API_KEY
    errors = ANTHROPIC_ERRORS
    # Claude Code calls these on api.anthropic.com besides the API proper.
    extra_passthrough = ("/api/",)
    input_includes_cache = False
    workspace_header = "Anthropic-Workspace-Id"

    def client_credential(self, headers: Headers) -> tuple[CredentialSlot, str] | None:
        # A personal API key wins over a bearer token (an OAuth sign-in), as Claude Code does.
        api_key = headers.get("x-api-key", "").strip()
        if api_key:
            return _API_KEY, api_key
        token = parse_bearer(headers.get("authorization"))
        return (_BEARER, token) if token else None


ANTHROPIC = AnthropicApi()
