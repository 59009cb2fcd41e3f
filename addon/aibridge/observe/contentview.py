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
from aibridge.providers.base import WireApi
from aibridge.providers.catalog import WIRE_APIS, wire_api
from aibridge.sse import SSEEvent, SSEParser

log = logging.getLogger(__name__)

MAX_EVENT_LINES = 2000  # one line per event up to this many; the rest are counted
MAX_DATA = 160  # characters of an event's data shown on its line
MAX_ARGUMENTS = 4000  # characters of a tool call's arguments shown in the summary
SNIFF_EVENTS = 50  # events looked at to guess the route of a flow the bridge did not handle

class SSEContentview(contentviews.Contentview):
    """mitmproxy 12 contentview; its name is "SSE" (`.../content/sse.json` in mitmweb's API)."""

    syntax_highlight = "yaml"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        try:
            return render(data, _flow_api(metadata))
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


def render(data: bytes, api: WireApi | None = None) -> str:
    """The view's text for a whole SSE body; `api` None means "sniff it from the events"."""
    parser = SSEParser()
    events = parser.feed(data) + parser.flush()
    if not events:
        return _raw(data)
    source = "flow"
    if api is None:
        api, source = sniff(events), "sniffed"
    lines = [f"# SSE · {len(events)} events"
             + (f" · {api.title} ({source})" if api else "")]
    if parser.overflowed:
        lines.append("# an over-long line was dropped")
    if api:
        lines += _summary(api, events)
    lines.append("events:")
    for event in events[:MAX_EVENT_LINES]:
        lines.append(f"  {event.event or 'message'}: {_short(_compact(event))}")
    if len(events) > MAX_EVENT_LINES:
        lines.append(f"  # … {len(events) - MAX_EVENT_LINES} more events")
    return "\n".join(lines) + "\n"


def sniff(events: list[SSEEvent]) -> WireApi | None:
    """The wire format an event stream looks like: the first API sure of an event, else the
    first one with a hint."""
    hinted: WireApi | None = None
    for event in events[:SNIFF_EVENTS]:
        obj = None if event.data == "[DONE]" else _json(event.data)
        for api in WIRE_APIS.values():
            verdict = api.recognises(event.event, obj, event.data)
            if verdict >= 2:
                return api
            if verdict == 1 and hinted is None:
                hinted = api
    return hinted


def _summary(api: WireApi, events: list[SSEEvent]) -> list[str]:
    acc = api.accumulator()
    acc.collect_text(limit=None)  # the assembled text too, in the same pass (the body is in memory)
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
    texts = acc.assembled()
    if thinking := texts.get("thinking"):
        lines += _block("thinking", thinking)
    lines += _block("text", texts.get("text", ""))
    if refusal := texts.get("refusal"):
        lines += _block("refusal", refusal)
    return lines


# --- helpers -------------------------------------------------------------------------------


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


def _raw(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _flow_api(metadata: contentviews.Metadata) -> WireApi | None:
    flow = getattr(metadata, "flow", None)
    meta = getattr(flow, "metadata", None)
    info = meta.get(KEY) if isinstance(meta, dict) else None
    route = info.get("route") if isinstance(info, dict) else None
    return wire_api(route)
