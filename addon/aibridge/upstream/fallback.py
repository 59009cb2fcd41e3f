"""Fallback across providers (`[[fallbacks]]`): a request the Anthropic API cannot serve goes to
Amazon Bedrock instead, translated both ways (providers.bedrock_messages), and the client sees
an ordinary Anthropic answer.

Two ways, by when the bridge learns that the first provider cannot serve:

- Before sending (every central key cooling, the circuit breaker open): the flow itself is
  *diverted* — translated and sent to Bedrock by mitmproxy — so a stream's event-stream frames
  are re-emitted as SSE as they arrive (`SseRelay`, the flow's stream callable).
- After an answer (a 5xx, every key refused by the provider) or a connection failure: the
  bridge sends the translated request itself (`send`, its own HTTP client, as key failover does)
  and the answer replaces the provider's, whole (mitmproxy sends answers that addons make in
  one piece): a streamed answer arrives at once, still as SSE.

This module is the mechanism (which fallback applies, the translated request, the answer);
`flow.fallback` puts it into an interception.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx2
from mitmproxy import http

from aibridge.config import FallbackConfig
from aibridge.errors.envelope import ResponseError
from aibridge.model import KeyPoolError
from aibridge.providers import Provider, ProviderRegistry, Upstream
from aibridge.providers.bedrock import region_of
from aibridge.providers.bedrock_messages import (
    ANTHROPIC_HEADERS,
    InvokeStreamToSSE,
    anthropic_error,
    invoke_body,
    invoke_path,
)
from aibridge.providers.eventstream import CONTENT_TYPE as EVENTSTREAM
from aibridge.upstream.resend import resend

ALL_KEYS_COOLING, CIRCUIT_OPEN, UNREACHABLE, SERVER_ERROR = (
    "all_keys_cooling", "circuit_open", "unreachable", "5xx")
MARKER = "x-aibridge-fallback"  # on answers a fallback served: which provider


@dataclass(frozen=True)
class Route:
    """One configured fallback, resolved against the providers."""

    source: Provider
    target: Provider
    models: Mapping[str, str]
    on: frozenset[str]
    upstream: Upstream  # where the target's requests go

    def model_for(self, model: str) -> str | None:
        """The target's model id for the model asked: the exact name, a glob, or the longest
        name the asked model's dated versions start with (`claude-sonnet-4-5` for
        `claude-sonnet-4-5-20250929`); None when it has no fallback."""
        if model in self.models:
            return self.models[model]
        for pattern, target in self.models.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(model, pattern):
                return target
        prefixes = [p for p in self.models if model.startswith(p + "-")]
        return self.models[max(prefixes, key=len)] if prefixes else None


@dataclass(frozen=True)
class Diverted:
    """A request another provider serves: the route and the model it serves with."""

    route: Route
    model: str
    streaming: bool


@dataclass
class Routes:
    by_source: dict[str, Route] = field(default_factory=dict)

    def for_provider(self, provider: Provider) -> Route | None:
        return self.by_source.get(provider.name)


def routes(configs: list[FallbackConfig], registry: ProviderRegistry) -> Routes:
    """The fallbacks whose providers are both enabled (config validation checked the rest)."""
    by_name = {p.name: p for p in registry.providers}
    found = Routes()
    for config in configs:
        source, target = by_name.get(config.from_), by_name.get(config.to)
        if source is None or target is None:
            continue
        found.by_source[source.name] = Route(source, target, dict(config.models),
                                             frozenset(config.on), target_upstream(target))
    return found


def target_upstream(target: Provider) -> Upstream:
    """The configured upstream; without one, the provider's first host that names a region,
    else `bedrock-runtime.<region>.amazonaws.com` for its `region` (its hosts are patterns)."""
    if not target.follows_host:
        return target.upstream
    for host in target.hosts:
        if "*" not in host and region_of(host):
            return Upstream("https", host, 443, "")
    region = target.region or "us-east-1"
    return Upstream("https", f"bedrock-runtime.{region}.amazonaws.com", 443, "")


def trigger_of(error: ResponseError, circuit_open: bool) -> str | None:
    """Why an admission refusal means the provider cannot serve (None: it is the request's or
    the caller's fault, which no other provider changes)."""
    if circuit_open:
        return CIRCUIT_OPEN
    if isinstance(error.__cause__, KeyPoolError):
        return ALL_KEYS_COOLING
    return None


def translate(request: http.Request, body: Mapping[str, object], model_id: str,
              streaming: bool) -> None:
    """`request` (an Anthropic Messages request, as the client sent it) made Bedrock's invoke
    request for `model_id`. Credentials and the destination are the rewrite's job after."""
    beta = request.headers.get("anthropic-beta")
    for name in (*ANTHROPIC_HEADERS, "content-encoding"):
        request.headers.pop(name, None)
    request.path = invoke_path(model_id, streaming)
    request.headers["Content-Type"] = "application/json"
    request.headers["Accept"] = EVENTSTREAM if streaming else "application/json"
    # The answer is translated, so it must arrive readable.
    request.headers["Accept-Encoding"] = "identity"
    request.raw_content = json.dumps(invoke_body(body, beta), separators=(",", ":")).encode()


def request_body(request: http.Request) -> dict | None:
    """The JSON object the request carries (a copy the client sent; None if unreadable)."""
    try:
        body = json.loads(request.get_content(strict=False) or b"")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def send(client: httpx2.AsyncClient, request: http.Request) -> http.Response:
    """The translated, signed request sent by the bridge itself. Raises httpx2.HTTPError."""
    auth = request.headers.get("authorization", "")
    return await resend(client, request, "Authorization", auth)


# -- the answer ------------------------------------------------------------------------------


def _mark(response: http.Response, target: Provider) -> None:
    response.headers[MARKER] = target.name


def answer_headers(response: http.Response, target: Provider, *, sse: bool) -> None:
    """Headers of a translated answer: Anthropic's media type, no stale framing."""
    for name in ("content-length", "content-encoding", "x-amzn-errortype"):
        response.headers.pop(name, None)
    response.headers["Content-Type"] = "text/event-stream" if sse else "application/json"
    _mark(response, target)


def translate_answer(response: http.Response, target: Provider) -> None:
    """A whole Bedrock answer (no stream) as Anthropic's: errors in Anthropic's envelope."""
    if response.status_code >= 400:
        body = anthropic_error(response.status_code, response.headers.get("x-amzn-errortype"),
                               response.get_content(strict=False) or b"")
        answer_headers(response, target, sse=False)
        response.content = body
    elif not response.headers.get("content-type", "").startswith(EVENTSTREAM):
        _mark(response, target)


def stream_answer(response: http.Response, target: Provider,
                  tap: Callable[[bytes], bytes]) -> None:
    """A whole event-stream answer (the bridge sent it) as Anthropic SSE, read by `tap`."""
    sse = InvokeStreamToSSE()(response.raw_content or b"")
    tap(sse)
    tap(b"")
    answer_headers(response, target, sse=True)
    response.content = sse


class SseRelay:
    """The stream callable of a diverted flow: event-stream frames in, Anthropic SSE out as
    each frame completes, read by `tap` on the way."""

    def __init__(self, tap: Callable[[bytes], bytes]) -> None:
        # The flow's stream tap (streaming.tap): reads each piece and returns it unchanged.
        self.tap = tap
        self._convert: InvokeStreamToSSE | None = InvokeStreamToSSE()

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            return self.tap(b"")
        if self._convert is None:
            return b""  # a frame could not be read: the client got its error event
        try:
            sse = self._convert(chunk)
        except Exception as e:  # a corrupt frame: say so in the stream, never crash it
            self._convert = None
            sse = b"event: error\ndata: " + json.dumps({"type": "error", "error": {
                "type": "api_error", "message": f"unreadable Bedrock stream: {e}"}}).encode() \
                + b"\n\n"
        return self.tap(sse) if sse else b""
