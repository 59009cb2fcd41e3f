"""OpenTelemetry for the bridge: one GenAI client span per interception, GenAI metrics, and the
in-process counters (key pool, circuit breaker) as OTel instruments.

Conventions (the OpenTelemetry GenAI semantic conventions):
- Span `chat {model}`, kind CLIENT, started at the interception's start and ended at its end; the
  `gen_ai.*` names are hard-coded here (the semconv package marks them deprecated-and-moved) and a
  unit test checks them against `opentelemetry.semconv._incubating`.
- `gen_ai.usage.input_tokens` for Anthropic is input + cache read + cache write (its `input_tokens`
  excludes cache); OpenAI's reported input already includes cached tokens and is used as is.
- Metrics are recorded once per interception, when it ends, so every point carries
  `gen_ai.response.model` and a histogram count is a count of operations:
  `gen_ai.client.token.usage` (one point per token type, only if usage was reported),
  `gen_ai.client.operation.duration` (with `error.type` when failed) and, for streaming requests
  only, `gen_ai.client.operation.time_to_first_chunk`. The latter uses the duration buckets
  (the spec gives the same advice for the client latency histograms).
- Cost: `aibridge.cost` (a counter, USD) adds each priced interception's cost when it ends,
  with attributes `aibridge.actor.id`, `aibridge.team` (the actor's `Team` metadata, "" when
  none), `aibridge.provider` and `gen_ai.request.model`; an interception whose model has no
  price adds 1 to `aibridge.cost.unpriced` ({request}, same attributes) instead, never $0. The
  span carries `aibridge.cost.usd` (the exact decimal, as text) and `aibridge.cost.source`.
  The recorded cost is exact; the metric is a float, as every OTel sum is.
- First token: span event `aibridge.first_token` plus span attribute
  `gen_ai.response.time_to_first_chunk` (seconds). The `gen_ai.*` namespace is the spec's to
  define, so our own events live under `aibridge.*`; likewise `aibridge.failover`.
- Registry counters become observable instruments read from `Registry.snapshot()`s at collection
  time; their labels become attributes (`provider` -> `aibridge.provider`, `model` ->
  `gen_ai.request.model`, `endpoint` -> `aibridge.route`, others -> `aibridge.key_pool.<label>`).
  OTel has no observable histogram, so `aibridge.key_pool.failover_attempts` replays the Registry
  histogram's new observations into a synchronous histogram with the same buckets at each
  collection (bucket counts and sums exact for integer observations).

Telemetry must never break the proxy: every public method swallows its errors (logged at debug)
and ignores unknown interception ids. With the "none" exporter the methods return at once.
Nothing here touches the global OTel providers. No attribute ever holds a secret: credentials
appear only as the masked hints the records carry.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from aibridge.counters import Histogram as RegistryHistogram
from aibridge.counters import Labels, Registry
from aibridge.pricing import TEAM_KEY
from aibridge.providers.catalog import PROVIDER_APIS
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    McpRound,
    TokenUsage,
)

log = logging.getLogger(__name__)

SCOPE_NAME = "aibridge"

# -- names (hard-coded on purpose; tests/unit/test_telemetry.py checks them against semconv) ----
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
USER_AGENT_ORIGINAL = "user_agent.original"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"

GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"
GEN_AI_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"
GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"

OPERATION_CHAT = "chat"
OPERATION_EXECUTE_TOOL = "execute_tool"
TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"
ERROR_TYPE_OTHER = "_OTHER"

# Bridge attributes.
AIBRIDGE_INTERCEPTION_ID = "aibridge.interception_id"
AIBRIDGE_ACTOR_ID = "aibridge.actor.id"
AIBRIDGE_PROVIDER = "aibridge.provider"
AIBRIDGE_FALLBACK_PROVIDER = "aibridge.fallback.provider"
AIBRIDGE_FALLBACK_MODEL = "aibridge.fallback.model"
AIBRIDGE_ROUTE = "aibridge.route"
AIBRIDGE_CREDENTIAL_KIND = "aibridge.credential.kind"
AIBRIDGE_CREDENTIAL_HINT = "aibridge.credential.hint"
AIBRIDGE_CLIENT = "aibridge.client"
AIBRIDGE_TRANSPORT = "aibridge.transport"
AIBRIDGE_OUTCOME = "aibridge.outcome"
AIBRIDGE_KEY_ATTEMPTS = "aibridge.key_attempts"
AIBRIDGE_INCOMPLETE = "aibridge.incomplete"  # span ended by eviction or shutdown, not by the addon
AIBRIDGE_TEAM = "aibridge.team"
AIBRIDGE_COST_USD = "aibridge.cost.usd"
AIBRIDGE_COST_SOURCE = "aibridge.cost.source"
AIBRIDGE_COST = "aibridge.cost"
AIBRIDGE_COST_UNPRICED = "aibridge.cost.unpriced"
AIBRIDGE_MCP_SERVER = "aibridge.mcp.server"
AIBRIDGE_MCP_ROUND = "aibridge.mcp.round"
AIBRIDGE_MCP_RESULT_BYTES = "aibridge.mcp.result_bytes"

EVENT_FAILOVER = "aibridge.failover"
EVENT_FIRST_TOKEN = "aibridge.first_token"
FAILOVER_FROM_HINT = "aibridge.failover.from_hint"
FAILOVER_TO_HINT = "aibridge.failover.to_hint"
FAILOVER_REASON = "aibridge.failover.reason"

# Registry-backed instruments.
KEY_POOL_STATE_TRANSITIONS = "aibridge.key_pool.state_transitions"
KEY_POOL_EXHAUSTIONS = "aibridge.key_pool.exhaustions"
KEY_POOL_FAILOVER_ATTEMPTS = "aibridge.key_pool.failover_attempts"
CIRCUIT_BREAKER_STATE = "aibridge.circuit_breaker.state"
CIRCUIT_BREAKER_TRIPS = "aibridge.circuit_breaker.trips"
CIRCUIT_BREAKER_REJECTS = "aibridge.circuit_breaker.rejects"
_REGISTRY_SYNC = "aibridge.internal.registry_sync"  # never yields; exists for its callback

# Bucket advice, exactly as the spec's table.
TOKEN_USAGE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                       16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)

# Registry label -> OTel attribute name.
_LABEL_ATTRIBUTES = {"provider": AIBRIDGE_PROVIDER, "endpoint": AIBRIDGE_ROUTE,
                     "model": GEN_AI_REQUEST_MODEL}

# Extra token types (providers/parsing.py) that are reasoning output tokens.
_REASONING_EXTRAS = ("completion_reasoning", "output_reasoning")

EXPORTERS = ("none", "console", "otlp")
MAX_LIVE_SPANS = 10_000  # bound on spans kept for interceptions that never end (a bug elsewhere)

class TelemetryConfigError(ValueError):
    """Telemetry settings that cannot work (unknown exporter, missing optional extra)."""


def _guarded[F: Callable[..., Any]](method: F) -> F:
    """Telemetry never raises into the proxy: errors are logged at debug and dropped."""

    @functools.wraps(method)
    def wrapper(self: Telemetry, *args: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        try:
            method(self, *args, **kwargs)
        except Exception:
            log.debug("telemetry: %s failed", method.__name__, exc_info=True)

    return wrapper  # type: ignore[return-value]


@dataclass
class _Live:
    """One interception in flight."""

    span: Span
    started_at: float
    streaming: bool
    input_excludes_cache: bool
    metric_attrs: dict[str, str | int]
    cost_attrs: dict[str, str] = field(default_factory=dict)
    usage_seen: bool = False
    input_tokens: int = 0  # per the convention (Anthropic: cache included)
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    ttfc: float | None = None
    extra: dict[str, int] = field(default_factory=dict)


def _ns(epoch_seconds: float) -> int:
    return int(epoch_seconds * 1e9)


def _label_attributes(key: Labels) -> dict[str, str]:
    return {_LABEL_ATTRIBUTES.get(k, f"aibridge.key_pool.{k}"): v for k, v in key}


class Telemetry:
    """Spans and metrics for interceptions; build it with `from_settings`."""

    def __init__(self, tracer_provider: TracerProvider | None,
                 meter_provider: MeterProvider | None,
                 counters: Registry | None = None) -> None:
        self.enabled = tracer_provider is not None and meter_provider is not None
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._counters = counters
        self._live: dict[str, _Live] = {}
        if not self.enabled:
            return
        assert tracer_provider is not None and meter_provider is not None
        self._tracer = tracer_provider.get_tracer(SCOPE_NAME)
        meter = meter_provider.get_meter(SCOPE_NAME)
        self._token_usage = meter.create_histogram(
            GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS)
        self._duration = meter.create_histogram(
            GEN_AI_CLIENT_OPERATION_DURATION, unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._ttfc = meter.create_histogram(
            GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK, unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._cost = meter.create_counter(
            AIBRIDGE_COST, unit="USD",
            description="Cost of the interceptions whose model has a price, in US dollars.")
        self._unpriced = meter.create_counter(
            AIBRIDGE_COST_UNPRICED, unit="{request}",
            description="Interceptions whose model has no price (their cost is unknown).")
        if counters is not None:
            self._register_counters(meter, counters)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_settings(cls, exporter: str = "none", *, service_name: str = "aibridge",
                      otlp_endpoint: str | None = None, counters: Registry | None = None,
                      span_exporter: SpanExporter | None = None,
                      metric_reader: MetricReader | None = None) -> Telemetry:
        """`exporter`: "none" (default), "console" or "otlp" (needs the `otlp` extra).

        `span_exporter` (exported synchronously) and `metric_reader` are added to what `exporter`
        configures; tests pass in-memory ones. "none" without either builds no providers at all.
        `otlp_endpoint` is the OTLP/HTTP base URL (e.g. http://collector:4318); without it the
        exporter follows the OTEL_EXPORTER_OTLP_* environment variables.
        """
        exporter = (exporter or "none").strip().lower()
        if exporter not in EXPORTERS:
            raise TelemetryConfigError(
                f"unknown telemetry exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
        if exporter == "none" and span_exporter is None and metric_reader is None:
            return cls(None, None, counters)

        span_processors: list[Any] = []
        readers: list[MetricReader] = []
        if exporter == "console":
            span_processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif exporter == "otlp":
            otlp_spans, otlp_metrics = _otlp_exporters(otlp_endpoint)
            span_processors.append(BatchSpanProcessor(otlp_spans))
            readers.append(PeriodicExportingMetricReader(otlp_metrics))
        if span_exporter is not None:
            span_processors.append(SimpleSpanProcessor(span_exporter))
        if metric_reader is not None:
            readers.append(metric_reader)

        resource = Resource.create({"service.name": service_name})
        tracer_provider = TracerProvider(resource=resource)
        for processor in span_processors:
            tracer_provider.add_span_processor(processor)
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        return cls(tracer_provider, meter_provider, counters)

    # -- interception lifecycle -------------------------------------------------------------

    @_guarded
    def interception_started(self, rec: InterceptionStarted, server_address: str,
                             server_port: int) -> None:
        provider_name = rec.provider_type
        attrs: dict[str, Any] = {
            GEN_AI_OPERATION_NAME: OPERATION_CHAT,
            GEN_AI_PROVIDER_NAME: provider_name,
            GEN_AI_REQUEST_MODEL: rec.model,
            GEN_AI_REQUEST_STREAM: rec.streaming,
            SERVER_ADDRESS: server_address,
            SERVER_PORT: server_port,
            AIBRIDGE_INTERCEPTION_ID: rec.id,
            AIBRIDGE_ACTOR_ID: rec.actor_id,
            AIBRIDGE_PROVIDER: rec.provider,
            AIBRIDGE_ROUTE: rec.route,
            AIBRIDGE_CREDENTIAL_KIND: rec.credential_kind,
            AIBRIDGE_CREDENTIAL_HINT: rec.credential_hint,
            AIBRIDGE_CLIENT: rec.client,
            AIBRIDGE_TRANSPORT: rec.transport,
        }
        if rec.client_session_id:
            attrs[GEN_AI_CONVERSATION_ID] = rec.client_session_id
        if rec.user_agent:
            attrs[USER_AGENT_ORIGINAL] = rec.user_agent
        name = f"{OPERATION_CHAT} {rec.model}" if rec.model else OPERATION_CHAT
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attrs,
                                       start_time=_ns(rec.started_at))
        metric_attrs: dict[str, str | int] = {
            GEN_AI_OPERATION_NAME: OPERATION_CHAT,
            GEN_AI_PROVIDER_NAME: provider_name,
            GEN_AI_REQUEST_MODEL: rec.model,
            SERVER_ADDRESS: server_address,
            SERVER_PORT: server_port,
        }
        if len(self._live) >= MAX_LIVE_SPANS:
            self._evict()
        previous = self._live.pop(rec.id, None)
        if previous is not None:  # a repeated id: close the old span rather than leak it
            _end_incomplete(previous)
        cost_attrs = {AIBRIDGE_ACTOR_ID: rec.actor_id,
                      AIBRIDGE_TEAM: str(rec.actor_metadata.get(TEAM_KEY, "")),
                      AIBRIDGE_PROVIDER: rec.provider, GEN_AI_REQUEST_MODEL: rec.model}
        self._live[rec.id] = _Live(span=span, started_at=rec.started_at,
                                   streaming=rec.streaming,
                                   input_excludes_cache=_input_excludes_cache(provider_name),
                                   metric_attrs=metric_attrs, cost_attrs=cost_attrs)

    @_guarded
    def failover(self, interception_id: str, from_hint: str, to_hint: str, reason: str,
                 at: float | None = None) -> None:
        live = self._live.get(interception_id)
        if live is None:
            return
        live.span.add_event(EVENT_FAILOVER, {FAILOVER_FROM_HINT: from_hint,
                                             FAILOVER_TO_HINT: to_hint,
                                             FAILOVER_REASON: reason},
                            timestamp=None if at is None else _ns(at))

    @_guarded
    def event(self, interception_id: str, name: str,
              attributes: Mapping[str, str | int | float]) -> None:
        """An `aibridge.*` event on the interception's span (a budget crossing a threshold
        when this request's cost was settled)."""
        live = self._live.get(interception_id)
        if live is None:
            return
        live.span.add_event(name, dict(attributes))

    @_guarded
    def tool_call(self, rec: McpRound) -> None:
        """A child span of the interception's for one call of a bridge (MCP) tool, `execute_tool
        {tool}`, ending when the call did (`rec.created_at`)."""
        live = self._live.get(rec.interception_id)
        if live is None:
            return
        attrs: dict[str, Any] = {
            GEN_AI_OPERATION_NAME: OPERATION_EXECUTE_TOOL, GEN_AI_TOOL_NAME: rec.tool,
            GEN_AI_TOOL_CALL_ID: rec.tool_call_id, GEN_AI_TOOL_TYPE: "extension",
            AIBRIDGE_INTERCEPTION_ID: rec.interception_id, AIBRIDGE_MCP_SERVER: rec.server,
            AIBRIDGE_MCP_ROUND: rec.round, AIBRIDGE_MCP_RESULT_BYTES: rec.result_bytes}
        span = self._tracer.start_span(
            f"{OPERATION_EXECUTE_TOOL} {rec.tool}", context=set_span_in_context(live.span),
            kind=SpanKind.INTERNAL, attributes=attrs,
            start_time=_ns(rec.created_at - rec.duration))
        if rec.error is not None:
            span.set_attribute(ERROR_TYPE, "tool_error")
            span.set_status(Status(StatusCode.ERROR, rec.error[:200]))
        span.end(end_time=_ns(rec.created_at))

    @_guarded
    def first_token(self, interception_id: str, at: float) -> None:
        live = self._live.get(interception_id)
        if live is None or live.ttfc is not None:
            return
        live.ttfc = max(0.0, at - live.started_at)
        live.span.add_event(EVENT_FIRST_TOKEN,
                            {GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: live.ttfc}, timestamp=_ns(at))
        live.span.set_attribute(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, live.ttfc)

    @_guarded
    def usage(self, rec: TokenUsage) -> None:
        live = self._live.get(rec.interception_id)
        if live is None:
            return
        live.usage_seen = True
        input_tokens = rec.input_tokens
        if live.input_excludes_cache:
            input_tokens += rec.cache_read_tokens + rec.cache_write_tokens
        live.input_tokens += input_tokens
        live.output_tokens += rec.output_tokens
        live.cache_read += rec.cache_read_tokens
        live.cache_write += rec.cache_write_tokens
        live.reasoning += sum(rec.extra.get(k, 0) for k in _REASONING_EXTRAS)
        span = live.span
        span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, live.input_tokens)
        span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, live.output_tokens)
        span.set_attribute(GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, live.cache_read)
        span.set_attribute(GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, live.cache_write)
        if live.reasoning:
            span.set_attribute(GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, live.reasoning)

    @_guarded
    def interception_ended(self, rec: InterceptionEnded) -> None:
        live = self._live.pop(rec.id, None)
        if live is None:
            return
        span = live.span
        attrs = live.metric_attrs
        if rec.response_model:
            attrs[GEN_AI_RESPONSE_MODEL] = rec.response_model
            span.set_attribute(GEN_AI_RESPONSE_MODEL, rec.response_model)
        if rec.response_id:
            span.set_attribute(GEN_AI_RESPONSE_ID, rec.response_id)
        if rec.status is not None:
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, rec.status)
        if rec.credential_hint:
            span.set_attribute(AIBRIDGE_CREDENTIAL_HINT, rec.credential_hint)
        if rec.key_attempts:
            span.set_attribute(AIBRIDGE_KEY_ATTEMPTS, rec.key_attempts)
        span.set_attribute(AIBRIDGE_OUTCOME, rec.outcome)
        if rec.fallback_provider:
            # Served by another provider ([[fallbacks]]): its name and model, and the cost
            # counted under it.
            span.set_attribute(AIBRIDGE_FALLBACK_PROVIDER, rec.fallback_provider)
            span.set_attribute(AIBRIDGE_FALLBACK_MODEL, rec.fallback_model or "")
            live.cost_attrs = {**live.cost_attrs, AIBRIDGE_PROVIDER: rec.fallback_provider,
                               GEN_AI_REQUEST_MODEL: rec.fallback_model or ""}
        if rec.cost_usd is not None:
            span.set_attribute(AIBRIDGE_COST_USD, str(rec.cost_usd))
            if rec.price_source:
                span.set_attribute(AIBRIDGE_COST_SOURCE, rec.price_source)
            self._cost.add(float(rec.cost_usd), live.cost_attrs)
        else:
            self._unpriced.add(1, live.cost_attrs)
        if live.ttfc is None and rec.time_to_first_token is not None:
            live.ttfc = max(0.0, rec.time_to_first_token)
            span.set_attribute(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, live.ttfc)

        error = _error_type(rec)
        duration_attrs = attrs
        if error is not None:
            span.set_attribute(ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, error))
            duration_attrs = {**attrs, ERROR_TYPE: error}
        span.end(end_time=_ns(rec.ended_at))

        self._duration.record(max(0.0, rec.ended_at - live.started_at), duration_attrs)
        if live.usage_seen:
            self._token_usage.record(live.input_tokens,
                                     {**attrs, GEN_AI_TOKEN_TYPE: TOKEN_TYPE_INPUT})
            self._token_usage.record(live.output_tokens,
                                     {**attrs, GEN_AI_TOKEN_TYPE: TOKEN_TYPE_OUTPUT})
        if live.streaming and live.ttfc is not None:
            self._ttfc.record(live.ttfc, attrs)

    # -- lifecycle of the providers ---------------------------------------------------------

    def live_count(self) -> int:
        """Interceptions with an open span (for tests and diagnostics)."""
        return len(self._live)

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        if not self.enabled:
            return
        try:
            assert self._tracer_provider is not None and self._meter_provider is not None
            self._tracer_provider.force_flush(timeout_millis)
            self._meter_provider.force_flush(timeout_millis)
        except Exception:
            log.debug("telemetry: flush failed", exc_info=True)

    def shutdown(self) -> None:
        """End the spans still open (marked incomplete), flush, shut the providers down.

        Idempotent; afterwards every method is a no-op."""
        if not self.enabled:
            return
        self.enabled = False
        try:
            for live in self._live.values():
                _end_incomplete(live)
            self._live.clear()
            assert self._tracer_provider is not None and self._meter_provider is not None
            self._tracer_provider.shutdown()
            self._meter_provider.shutdown()
        except Exception:
            log.debug("telemetry: shutdown failed", exc_info=True)

    # -- internals --------------------------------------------------------------------------

    def _evict(self) -> None:
        oldest = next(iter(self._live))
        log.debug("telemetry: %d interceptions open; ending the oldest span", len(self._live))
        _end_incomplete(self._live.pop(oldest))

    def _register_counters(self, meter: Any, counters: Registry) -> None:
        def observe(counter: Any) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(_options: CallbackOptions) -> Iterable[Observation]:
                try:
                    snapshot = counter.snapshot()
                except Exception:
                    log.debug("telemetry: reading %s failed", counter.name, exc_info=True)
                    return []
                return [Observation(value, _label_attributes(key))
                        for key, value in snapshot.items()]
            return callback

        meter.create_observable_counter(
            KEY_POOL_STATE_TRANSITIONS, [observe(counters.key_transitions)], unit="{transition}",
            description="Key state transitions, by reason.")
        meter.create_observable_counter(
            KEY_POOL_EXHAUSTIONS, [observe(counters.key_exhaustions)], unit="{exhaustion}",
            description="Requests refused because no key of the pool was usable.")
        meter.create_observable_gauge(
            CIRCUIT_BREAKER_STATE, [observe(counters.circuit_state)], unit="1",
            description="Circuit breaker state: 0 closed, 0.5 half-open, 1 open.")
        meter.create_observable_counter(
            CIRCUIT_BREAKER_TRIPS, [observe(counters.circuit_trips)], unit="{trip}",
            description="Circuit breaker transitions to open.")
        meter.create_observable_counter(
            CIRCUIT_BREAKER_REJECTS, [observe(counters.circuit_rejects)], unit="{request}",
            description="Requests refused by an open circuit breaker.")

        source = counters.failover_attempts
        replay = _HistogramReplay(source, meter.create_histogram(
            KEY_POOL_FAILOVER_ATTEMPTS, unit="{attempt}",
            description="Keys tried per request that used the key pool.",
            explicit_bucket_boundaries_advisory=source.buckets))
        meter.create_observable_gauge(_REGISTRY_SYNC, [replay.callback])


class _HistogramReplay:
    """Feeds a Registry histogram's new observations into an OTel histogram at collection time.

    The Registry keeps bucket counts and sums only. Integer observations (key attempts) in a
    bucket one wide are known exactly; values in wider buckets are reconstructed so that the
    bucket counts and the sum stay exact (min/max of those may differ from the true ones).
    """

    def __init__(self, source: RegistryHistogram, target: Any) -> None:
        self.source = source
        self.target = target
        self._seen: dict[Labels, tuple[list[int], float]] = {}

    def callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        try:
            for key, (counts, total) in self.source.snapshot().items():
                seen_counts, seen_total = self._seen.get(key, ([0] * len(counts), 0.0))
                deltas = [now - before for now, before in zip(counts, seen_counts, strict=True)]
                if any(deltas):
                    attrs = _label_attributes(key)
                    for value in _reconstruct(self.source.buckets, deltas, total - seen_total):
                        self.target.record(value, attrs)
                self._seen[key] = (counts, total)
        except Exception:
            log.debug("telemetry: replaying %s failed", self.source.name, exc_info=True)
        return []


def _reconstruct(bounds: tuple[float, ...], deltas: list[int], total: float) -> list[float]:
    """Values with `deltas[i]` in bucket i ((bounds[i-1], bounds[i]], last unbounded) summing
    to `total` when integer values make that possible."""
    values: list[float] = []
    wide: list[tuple[int, float]] = []  # (index in values, upper bound)
    for i, n in enumerate(deltas):
        if n <= 0:
            continue
        lo = bounds[i - 1] if i > 0 else -math.inf
        hi = bounds[i] if i < len(bounds) else math.inf
        if hi != math.inf and (i == 0 or hi - lo <= 1):
            values.extend([float(hi)] * n)  # the bucket holds one integer (attempts are >= 1)
            continue
        low = float(math.floor(lo) + 1)
        for _ in range(n):
            wide.append((len(values), hi))
            values.append(low)
    rest = total - sum(values)
    for index, hi in wide:
        if rest <= 0:
            break
        add = min(rest, hi - values[index])
        values[index] += add
        rest -= add
    return values


def _error_type(rec: InterceptionEnded) -> str | None:
    if rec.error_type:
        return rec.error_type
    if rec.outcome == "completed":
        return None
    if rec.outcome == "cancelled":
        return "cancelled"
    return ERROR_TYPE_OTHER


def _end_incomplete(live: _Live) -> None:
    live.span.set_attribute(AIBRIDGE_INCOMPLETE, True)
    live.span.end()


def _otlp_exporters(endpoint: str | None) -> tuple[Any, Any]:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as e:
        raise TelemetryConfigError(
            "telemetry exporter 'otlp' needs the optional extra: "
            "pip install 'aibridge[otlp]' (opentelemetry-exporter-otlp-proto-http)") from e
    if endpoint:
        base = endpoint.rstrip("/")
        return (OTLPSpanExporter(endpoint=f"{base}/v1/traces"),
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
    return OTLPSpanExporter(), OTLPMetricExporter()


def _input_excludes_cache(provider_type: str) -> bool:
    """OTel's input tokens include cached ones; APIs that report them apart get them added."""
    api = PROVIDER_APIS.get(provider_type)
    return api is not None and not api.input_includes_cache
