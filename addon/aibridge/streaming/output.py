"""What the model produced, as texts to scan for secrets once an answer is whole: the text
(and thinking) a stream assembled to, the arguments of the tool calls it made, or every string
of a JSON answer. Read from what the tap's or the socket session's accumulator put together
while the answer streamed; the answer itself is never changed."""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from aibridge.providers.base import WireApi
from aibridge.providers.jsonfields import json_loads
from aibridge.providers.texts import strings
from aibridge.streaming.tap import StreamTap
from aibridge.summary import ResponseSummary

Texts = list[tuple[str, str]]  # (where, text)
_ANSWER = "model output"
_LABELS = {"text": _ANSWER, "thinking": "model thinking", "refusal": "model refusal"}


def texts(api: WireApi | None, tap: StreamTap | None, summary: ResponseSummary | None,
          body: object | None) -> Texts:
    """`body`: a non-streamed 2xx answer's JSON as `answer_json` read it (None: none)."""
    if api is None:
        return []
    if tap is not None:
        assembled = tap.kept
        return [] if assembled is None else stream_texts(assembled, summary)
    if body is None:
        return []
    # One place for every string: no per-string `where` to format.
    return [(_ANSWER, slot.text) for slot in strings(body, _ANSWER)]


def answer_json(response: http.Response | None) -> object | None:
    """A non-streamed 2xx answer's JSON, read once for its summary and its output; None for
    any other answer, or one that is not JSON."""
    if response is None or not 200 <= response.status_code < 300:
        return None
    try:
        return json_loads(response.get_content(strict=False) or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def stream_texts(assembled: Mapping[str, str], summary: ResponseSummary | None) -> Texts:
    """A streamed answer: its assembled output (`StreamAccumulator.assembled`), then its tool
    calls' arguments."""
    found = [(_LABELS.get(label, f"model {label}"), text) for label, text in assembled.items()]
    for call in summary.tool_calls if summary is not None else ():
        found.append((f"tool call {call.id or '?'} in the response", call.arguments))
    return found
