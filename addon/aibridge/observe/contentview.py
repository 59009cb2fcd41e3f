"""The "SSE" contentview for mitmweb/mitmproxy: a text/event-stream body as a summary
(model, response id, usage, stop reason, tool calls, error, the assembled output text)
followed by one line per event.

The route (Anthropic Messages, OpenAI Chat Completions or Responses) comes from the flow's
`metadata["aibridge"]["route"]` when the bridge handled the flow, otherwise it is sniffed from
the events. The summary reuses the bridge's own `StreamAccumulator`, so it says what the
bridge recorded. Bodies come from upstreams we do not control: `prettify` never raises, and
anything that is not an event stream is shown as raw text.

Registered once per process by `register()` (mitmproxy's registry is global and a script
reload must not register it twice).
"""

from __future__ import annotations

import json
import logging

from mitmproxy import contentviews

from aibridge.observe.flowview import KEY
from aibridge.providers.parsing import ROUTES, StreamAccumulator
from aibridge.streaming.sse import SSEEvent, SSEParser

log = logging.getLogger(__name__)

ROUTE_NAMES = {
    "messages": "Anthropic Messages",
    "chat": "OpenAI Chat Completions",
    "responses": "OpenAI Responses",
}
MAX_EVENT_LINES = 2000  # one line per event up to this many; the rest are counted
MAX_DATA = 160  # characters of an event's data shown on its line
MAX_ARGUMENTS = 4000  # characters of a tool call's arguments shown in the summary
SNIFF_EVENTS = 50  # events looked at to guess the route of a flow the bridge did not handle

_ANTHROPIC_TYPES = frozenset({
    "message_start", "message_delta", "message_stop", "content_block_start",
    "content_block_delta", "content_block_stop", "ping",
})


class SSEContentview(contentviews.Contentview):
    """mitmproxy 12 contentview; its name is "SSE" (`.../content/sse.json` in mitmweb's API)."""

    syntax_highlight = "yaml"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        try:
            return render(data, _flow_route(metadata))
        except Exception:  # never fail a view on a hostile body: show it as it is
            log.debug("SSE contentview failed; showing raw text", exc_info=True)
            return _raw(data)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        content_type = getattr(metadata, "content_type", None) or ""
        return 2 if content_type.lower().startswith("text/event-stream") else -1


def register() -> None:
    """Add the SSE contentview to mitmproxy's registry, once per process.

    mitmproxy re-runs an addon script on reload while `aibridge` stays imported, so the view
    already registered is an instance of this very class and is kept (no "Replacing existing
    sse contentview" line). A view from an earlier import of this module is replaced.
    """
    existing = contentviews.registry.get("sse")
    if isinstance(existing, SSEContentview):
        return
    contentviews.add(SSEContentview)


# --- rendering ---------------------------------------------------------------------------


def render(data: bytes, route: str | None = None) -> str:
    """The view's text for a whole SSE body; `route` None means "sniff it from the events"."""
    parser = SSEParser()
    events = parser.feed(data) + parser.flush()
    if not events:
        return _raw(data)
    source = "flow"
    if route not in ROUTES:
        route, source = sniff(events), "sniffed"
    lines = [f"# SSE · {len(events)} events"
             + (f" · {ROUTE_NAMES[route]} ({source})" if route else "")]
    if parser.overflowed:
        lines.append("# an over-long line was dropped")
    if route:
        lines += _summary(route, events)
    lines.append("events:")
    for event in events[:MAX_EVENT_LINES]:
        lines.append(f"  {event.event or 'message'}: {_short(_compact(event))}")
    if len(events) > MAX_EVENT_LINES:
        lines.append(f"  # … {len(events) - MAX_EVENT_LINES} more events")
    return "\n".join(lines) + "\n"


def sniff(events: list[SSEEvent]) -> str | None:
    """The route an event stream looks like, from its event names and JSON `type`s."""
    chat_hint = False
    for event in events[:SNIFF_EVENTS]:
        name = event.event or ""
        if name in _ANTHROPIC_TYPES:
            return "messages"
        if name.startswith("response."):
            return "responses"
        if event.data == "[DONE]":
            chat_hint = True
            continue
        obj = _json(event.data)
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        if isinstance(kind, str):
            if kind in _ANTHROPIC_TYPES:
                return "messages"
            if kind.startswith("response."):
                return "responses"
        if obj.get("object") == "chat.completion.chunk" or isinstance(obj.get("choices"), list):
            return "chat"
    return "chat" if chat_hint else None


def _summary(route: str, events: list[SSEEvent]) -> list[str]:
    acc = StreamAccumulator(route)
    for event in events:
        acc.feed(event)
    s = acc.summary
    lines = []
    for label, value in (("model", s.model), ("response_id", s.response_id),
                         ("stop_reason", s.stop_reason)):
        if value:
            lines.append(f"{label}: {_scalar(value)}")
    usage = (f"input {s.input_tokens} · output {s.output_tokens} · cache read "
             f"{s.cache_read_tokens} · cache write {s.cache_write_tokens}")
    usage += "".join(f" · {k.replace('_', ' ')} {v}" for k, v in sorted(s.extra_tokens.items()))
    lines.append(f"usage: {usage}")
    if s.tool_calls:
        lines.append("tool_calls:")
        for call in s.tool_calls:
            lines.append(f"  - name: {_scalar(call.name or '?')}")
            if call.id:
                lines.append(f"    id: {_scalar(call.id)}")
            arguments = call.arguments
            if len(arguments) > MAX_ARGUMENTS:
                arguments = (arguments[:MAX_ARGUMENTS]
                             + f"… (+{len(call.arguments) - MAX_ARGUMENTS} chars)")
            lines.append(f"    arguments: {_oneline(arguments) or '{}'}")
    if s.error:
        error = f"{s.error_type}: {s.error}" if s.error_type else s.error
        lines.append(f"error: {_scalar(error)}")
    lines.append(f"completed: {'true' if s.completed else 'false'}")
    if acc.bad_events:
        lines.append(f"not_json_events: {acc.bad_events}")
    texts = _TEXT[route](events)
    if thinking := texts.get("thinking"):
        lines += _block("thinking", thinking)
    lines += _block("text", texts.get("text", ""))
    if refusal := texts.get("refusal"):
        lines += _block("refusal", refusal)
    return lines


# --- assembled text per route ----------------------------------------------------------------
# StreamAccumulator only counts text (it runs on every streamed token); the view assembles it.


def _messages_text(events: list[SSEEvent]) -> dict[str, str]:
    blocks: dict[tuple[str, int], list[str]] = {}
    for event in events:
        obj = _json(event.data)
        if not isinstance(obj, dict) or (obj.get("type") or event.event) != "content_block_delta":
            continue
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            continue
        index = _int(obj.get("index"))
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(text := delta.get("text"), str):
            blocks.setdefault(("text", index), []).append(text)
        elif kind == "thinking_delta" and isinstance(text := delta.get("thinking"), str):
            blocks.setdefault(("thinking", index), []).append(text)
    return _join(blocks)


def _chat_text(events: list[SSEEvent]) -> dict[str, str]:
    blocks: dict[tuple[str, int], list[str]] = {}
    for event in events:
        obj = _json(event.data)
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list):
            continue
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            index = _int(choice.get("index"))
            for key, label in (("content", "text"), ("reasoning_content", "thinking"),
                               ("reasoning", "thinking"), ("refusal", "refusal")):
                if isinstance(piece := delta.get(key), str) and piece:
                    blocks.setdefault((label, index), []).append(piece)
    return _join(blocks)


_RESPONSES_DELTAS = {
    "response.output_text.delta": "text",
    "response.refusal.delta": "refusal",
    "response.reasoning_summary_text.delta": "thinking",
    "response.reasoning_text.delta": "thinking",
}


def _responses_text(events: list[SSEEvent]) -> dict[str, str]:
    blocks: dict[tuple[str, int], list[str]] = {}
    final: dict[tuple[str, int], list[str]] = {}
    for event in events:
        obj = _json(event.data)
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        kind = kind if isinstance(kind, str) and kind else event.event
        if (label := _RESPONSES_DELTAS.get(kind or "")) and isinstance(
            delta := obj.get("delta"), str
        ):
            index = _int(obj.get("output_index")) * 1000 + _int(obj.get("content_index"))
            blocks.setdefault((label, index), []).append(delta)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = obj.get("response")
            output = response.get("output") if isinstance(response, dict) else None
            for i, item in enumerate(output if isinstance(output, list) else []):
                content = item.get("content") if isinstance(item, dict) else None
                for j, part in enumerate(content if isinstance(content, list) else []):
                    if (isinstance(part, dict) and part.get("type") == "output_text"
                            and isinstance(text := part.get("text"), str)):
                        final.setdefault(("text", i * 1000 + j), []).append(text)
    # The final output is what the client got if the deltas were skipped (or never sent).
    if not any(label == "text" for label, _ in blocks):
        blocks.update(final)
    return _join(blocks)


_TEXT = {"messages": _messages_text, "chat": _chat_text, "responses": _responses_text}


# --- helpers -------------------------------------------------------------------------------


def _join(blocks: dict[tuple[str, int], list[str]]) -> dict[str, str]:
    """Blocks of the same kind in index order, one per paragraph."""
    out: dict[str, list[str]] = {}
    for (label, _), pieces in sorted(blocks.items(), key=lambda kv: kv[0]):
        out.setdefault(label, []).append("".join(pieces))
    return {label: "\n".join(parts) for label, parts in out.items()}


def _block(label: str, text: str) -> list[str]:
    """A YAML literal block (`|-`); an empty text is `""`."""
    if not text:
        return [f'{label}: ""']
    return [f"{label}: |-", *(f"  {line}" for line in text.splitlines() or [""])]


def _scalar(value: str) -> str:
    """One line: JSON-quoted when it would not read as plain text."""
    if value and value.isprintable() and value == value.strip() and value[0] not in "{[\"'":
        return value
    return json.dumps(value, ensure_ascii=False)


# Top-level fields that repeat on every event of a stream (the summary shows model and id).
_NOISE = frozenset({"id", "object", "created", "model", "system_fingerprint", "service_tier",
                    "obfuscation", "sequence_number"})


def _compact(event: SSEEvent) -> str:
    """An event's data for its one line: JSON objects without the fields every event repeats,
    nulls, or a `type` equal to the event name; anything else as it is."""
    obj = _json(event.data)
    if not isinstance(obj, dict):
        return event.data
    slim = {k: _no_nulls(v) for k, v in obj.items()
            if v is not None and k not in _NOISE and not (k == "type" and v == event.event)}
    try:
        return json.dumps(slim, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        return event.data


def _no_nulls(value: object, depth: int = 0) -> object:
    if depth > 20:
        return value
    if isinstance(value, dict):
        return {k: _no_nulls(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v, depth + 1) for v in value]
    return value


def _oneline(data: str) -> str:
    return data.replace("\r", "\\r").replace("\n", "\\n")


def _short(data: str) -> str:
    data = _oneline(data)
    if len(data) <= MAX_DATA:
        return data
    return f"{data[:MAX_DATA]}… (+{len(data) - MAX_DATA} chars)"


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _int(value: object) -> int:
    return value if type(value) is int else 0


def _raw(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _flow_route(metadata: contentviews.Metadata) -> str | None:
    flow = getattr(metadata, "flow", None)
    meta = getattr(flow, "metadata", None)
    info = meta.get(KEY) if isinstance(meta, dict) else None
    route = info.get("route") if isinstance(info, dict) else None
    return route if route in ROUTES else None
