"""Responses over WebSocket (Codex's first choice): one interception per `response.create`.

mitmproxy relays every frame unchanged; this only reads copies. A client frame of type
`response.create` opens an interception (model, correlating tool-call id as for HTTP); the
server's frames are the Responses stream events, fed to the same accumulator as SSE, and
`response.completed` / `response.incomplete` / `response.failed` / `error` close it.

A `response.create` with `"generate": false` (Codex sends one before each turn to warm the
connection) produces no output: it ends as a `warmup`, so it is not counted as a request.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from aibridge.intercept import Actor, CredentialInfo, Interception
from aibridge.keys.circuit import Admission
from aibridge.observe.clients import ClientInfo
from aibridge.providers.base import RequestInfo, WireApi
from aibridge.providers.stream import StreamAccumulator
from aibridge.sse import SSEEvent
from aibridge.summary import ResponseSummary
from aibridge.textsafe import storable


class Opened(NamedTuple):
    interception: Interception
    frame: dict  # the whole `response.create` frame
    body: dict  # its request body: the frame itself or its `response` (the same object)
    info: RequestInfo


@dataclass
class Finished:
    interception: Interception
    summary: ResponseSummary
    outcome: str  # completed | failed | warmup
    reason: str | None
    time_to_first_token: float | None
    circuit: Admission | None = None  # the circuit breaker slot the response held
    api: WireApi | None = None
    # The output text by label ("text", "thinking", "refusal"), when the output is scanned.
    output: dict[str, str] | None = None


@dataclass
class _Open:
    interception: Interception
    accumulator: StreamAccumulator
    started_mono: float = field(default_factory=time.monotonic)
    circuit: Admission | None = None
    warmup: bool = False
    keeps_output: bool = False  # the accumulator puts the output text together

    def finished(self, outcome: str, reason: str | None, api: WireApi | None = None) -> Finished:
        first = self.accumulator.first_token_at
        ttft = max(0.0, first - self.started_mono) if first is not None else None
        return Finished(self.interception, self.accumulator.summary, outcome, reason, ttft,
                        self.circuit, api,
                        self.accumulator.assembled() if self.keeps_output else None)


class SocketSession:
    def __init__(self, api: WireApi, provider: str, provider_type: str, route_path: str,
                 actor: Actor,
                 credential: CredentialInfo, client: ClientInfo, user_agent: str | None,
                 server: tuple[str, int], *, keep_output: bool = False) -> None:
        self.api = api
        self.keep_output = keep_output  # the output text, for secret scanning of output
        self.provider, self.provider_type, self.route_path = provider, provider_type, route_path
        self.actor, self.credential = actor, credential
        self.client, self.user_agent, self.server = client, user_agent, server
        self._open: deque[_Open] = deque()  # responses run in order on one socket

    def client_frame(self, text: str) -> Opened | None:
        """A frame from the client; returns the interception it opened, the frame, its request
        body (the frame or its `response`, the same object) and the facts read from it."""
        try:
            frame = json.loads(text)
        except ValueError:
            return None
        if not isinstance(frame, dict) or frame.get("type") != "response.create":
            return None
        # The create event carries the POST /v1/responses fields, at the top or under
        # "response" depending on the client.
        body = frame.get("response") if isinstance(frame.get("response"), dict) else frame
        info = self.api.request_info(body)
        interception = Interception(
            provider=self.provider, provider_type=self.provider_type, route=self.route_path,
            model=storable(info.model), streaming=True, actor=self.actor,
            credential=self.credential,
            correlating_tool_call_id=(storable(info.correlating_tool_call_id)
                                      if info.correlating_tool_call_id else None))
        accumulator = self.api.accumulator()
        if self.keep_output:
            accumulator.collect_text()
        self._open.append(_Open(interception, accumulator, warmup=body.get("generate") is False,
                                keeps_output=self.keep_output))
        return Opened(interception, frame, body, info)

    def admitted(self, interception: Interception, circuit: Admission | None) -> None:
        """The admission pipeline let the response through, holding `circuit`."""
        for entry in self._open:
            if entry.interception is interception:
                entry.circuit = circuit

    def discard(self, interception: Interception) -> None:
        """The response was refused before it reached the provider: no frames will answer it."""
        self._open = deque(o for o in self._open if o.interception is not interception)

    def server_frame(self, text: str) -> Finished | None:
        """A frame from the provider; returns the interception it finished, if any."""
        if not self._open:
            return None
        current = self._open[0]
        frame = _json_object(text)
        kind = frame.get("type") if isinstance(frame.get("type"), str) else None
        event = SSEEvent(event=kind, data=text)
        current.accumulator.feed(event)
        end = self.api.socket_frame_end(frame)
        if end is None:
            return None
        self._open.popleft()
        summary = current.accumulator.summary
        completed, message = end
        if completed and not summary.error:
            return current.finished("warmup" if current.warmup else "completed", None, self.api)
        return current.finished("failed", message or summary.error or kind, self.api)

    def close(self, reason: str | None) -> list[Finished]:
        """The socket ended: whatever is still open did not complete."""
        finished = [o.finished("failed", reason or "socket closed before the response completed",
                               self.api) for o in self._open]
        self._open.clear()
        return finished


def _json_object(text: str) -> dict:
    try:
        frame = json.loads(text)
    except ValueError:
        return {}
    return frame if isinstance(frame, dict) else {}

