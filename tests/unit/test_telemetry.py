"""OpenTelemetry spans and metrics per interception (conventions §6), with in-memory exporters."""

import bisect
import logging
import sys

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    user_agent_attributes,
)
from opentelemetry.trace import SpanKind, StatusCode

from aibridge.counters import Registry
from aibridge.observe import telemetry as t
from aibridge.observe.telemetry import Telemetry, TelemetryConfigError
from aibridge.recording.records import InterceptionEnded, InterceptionStarted, TokenUsage

T0 = 1_700_000_000.0

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)


def started(iid="i-1", provider_type="anthropic", model="claude-sonnet-4", streaming=True,
            **kw) -> InterceptionStarted:
    fields = dict(
        id=iid, started_at=T0, actor_id="actor-7", actor_metadata={"email": "a@example.com"},
        provider="anthropic-main" if provider_type == "anthropic" else "openai-main",
        provider_type=provider_type,
        route="/v1/messages" if provider_type == "anthropic" else "/v1/chat/completions",
        model=model, streaming=streaming, transport="http", client="Claude Code",
        client_session_id="sess-1", user_agent="claude-cli/2.0", credential_kind="centralized",
        credential_hint="sk-a...1111", credential_length=40, correlating_tool_call_id=None)
    fields.update(kw)
    return InterceptionStarted(**fields)


def ended(iid="i-1", *, at=T0 + 2.5, outcome="completed", status=200, error_type=None,
          response_model="claude-sonnet-4-20250514", **kw) -> InterceptionEnded:
    fields = dict(
        id=iid, ended_at=at, outcome=outcome, status=status, error_type=error_type,
        error_message=None if error_type is None else "upstream said no",
        credential_hint="sk-a...2222", credential_length=40, response_model=response_model,
        response_id="msg_01", time_to_first_token=None, key_attempts=2)
    fields.update(kw)
    return InterceptionEnded(**fields)


def usage(iid="i-1", inp=0, out=0, read=0, write=0, extra=None) -> TokenUsage:
    return TokenUsage(interception_id=iid, msg_id="msg_01", input_tokens=inp, output_tokens=out,
                      cache_read_tokens=read, cache_write_tokens=write, extra=extra or {},
                      created_at=T0 + 1)


@pytest.fixture
def otel():
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    registry = Registry()
    tel = Telemetry.from_settings("none", counters=registry, span_exporter=spans,
                                  metric_reader=reader)
    yield tel, spans, reader, registry
    tel.shutdown()


def metrics(reader) -> dict:
    """name -> metric, from one collection."""
    data = reader.get_metrics_data()
    out = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "aibridge"
            for m in sm.metrics:
                out[m.name] = m
    return out


def points(metric) -> dict:
    """frozenset(attributes) -> data point."""
    return {frozenset(p.attributes.items()): p for p in metric.data.data_points}


ANTHROPIC_METRIC_ATTRS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4",
    "gen_ai.response.model": "claude-sonnet-4-20250514",
    "server.address": "api.anthropic.com",
    "server.port": 443,
}


def test_anthropic_interception_span_and_metrics(otel):
    tel, spans, reader, _ = otel
    tel.interception_started(started(), "api.anthropic.com", 443)
    tel.failover("i-1", "sk-a...1111", "sk-a...2222", "rate_limited", at=T0 + 0.2)
    tel.first_token("i-1", T0 + 0.75)
    # Anthropic reports input without cache; two usage records accumulate.
    tel.usage(usage(inp=10, out=0, read=1000, write=200))
    tel.usage(usage(inp=5, out=300))
    assert spans.get_finished_spans() == ()
    tel.interception_ended(ended())
    assert tel.live_count() == 0

    (span,) = spans.get_finished_spans()
    assert span.name == "chat claude-sonnet-4"
    assert span.kind is SpanKind.CLIENT
    assert span.start_time == int(T0 * 1e9)
    assert span.end_time == int((T0 + 2.5) * 1e9)
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4",
        "gen_ai.request.stream": True,
        "gen_ai.response.model": "claude-sonnet-4-20250514",
        "gen_ai.response.id": "msg_01",
        "gen_ai.response.time_to_first_chunk": 0.75,
        "gen_ai.conversation.id": "sess-1",
        "gen_ai.usage.input_tokens": 10 + 1000 + 200 + 5,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_creation.input_tokens": 200,
        "server.address": "api.anthropic.com",
        "server.port": 443,
        "http.response.status_code": 200,
        "user_agent.original": "claude-cli/2.0",
        "aibridge.interception_id": "i-1",
        "aibridge.actor.id": "actor-7",
        "aibridge.provider": "anthropic-main",
        "aibridge.route": "/v1/messages",
        "aibridge.credential.kind": "centralized",
        "aibridge.credential.hint": "sk-a...2222",  # the last key tried
        "aibridge.client": "Claude Code",
        "aibridge.transport": "http",
        "aibridge.outcome": "completed",
        "aibridge.key_attempts": 2,
    }
    assert [(e.name, dict(e.attributes), e.timestamp) for e in span.events] == [
        ("aibridge.failover", {"aibridge.failover.from_hint": "sk-a...1111",
                               "aibridge.failover.to_hint": "sk-a...2222",
                               "aibridge.failover.reason": "rate_limited"},
         int((T0 + 0.2) * 1e9)),
        ("aibridge.first_token", {"gen_ai.response.time_to_first_chunk": 0.75},
         int((T0 + 0.75) * 1e9)),
    ]
    # Never the actor's metadata.
    assert not any("a@example.com" in str(v) for v in span.attributes.values())
    assert span.resource.attributes["service.name"] == "aibridge"

    m = metrics(reader)
    usage_metric = m["gen_ai.client.token.usage"]
    assert usage_metric.unit == "{token}"
    pts = points(usage_metric)
    assert set(pts) == {
        frozenset({**ANTHROPIC_METRIC_ATTRS, "gen_ai.token.type": "input"}.items()),
        frozenset({**ANTHROPIC_METRIC_ATTRS, "gen_ai.token.type": "output"}.items()),
    }
    for p in pts.values():
        assert p.explicit_bounds == TOKEN_BUCKETS
        assert p.count == 1
    values = {dict(k)["gen_ai.token.type"]: p.sum for k, p in pts.items()}
    assert values == {"input": 1215, "output": 300}

    duration = m["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    (p,) = duration.data.data_points
    assert dict(p.attributes) == ANTHROPIC_METRIC_ATTRS
    assert p.explicit_bounds == DURATION_BUCKETS
    assert (p.count, p.sum) == (1, 2.5)

    ttfc = m["gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc.unit == "s"
    (p,) = ttfc.data.data_points
    assert dict(p.attributes) == ANTHROPIC_METRIC_ATTRS
    assert (p.count, p.sum) == (1, 0.75)
    assert p.explicit_bounds == DURATION_BUCKETS


def test_openai_input_tokens_as_reported(otel):
    tel, spans, reader, _ = otel
    tel.interception_started(
        started(provider_type="openai", model="gpt-5", streaming=False, client_session_id=None,
                user_agent=None, credential_kind="byok", credential_hint="sk-...abcd"),
        "api.openai.com", 443)
    # prompt_tokens (120) already include the 100 cached ones: not added again.
    tel.usage(usage(inp=120, out=40, read=100, extra={"completion_reasoning": 16}))
    tel.interception_ended(ended(response_model="gpt-5-2025-08-07", at=T0 + 1.0,
                                 credential_hint="", key_attempts=0))

    (span,) = spans.get_finished_spans()
    assert span.name == "chat gpt-5"
    attrs = dict(span.attributes)
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.stream"] is False
    assert attrs["gen_ai.usage.input_tokens"] == 120
    assert attrs["gen_ai.usage.output_tokens"] == 40
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 100
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 16
    assert attrs["aibridge.credential.kind"] == "byok"
    assert attrs["aibridge.credential.hint"] == "sk-...abcd"  # kept: the end record had none
    assert attrs["aibridge.route"] == "/v1/chat/completions"
    for absent in ("gen_ai.conversation.id", "user_agent.original", "aibridge.key_attempts",
                   "error.type", "gen_ai.response.time_to_first_chunk"):
        assert absent not in attrs
    assert span.events == ()

    m = metrics(reader)
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-5", "gen_ai.response.model": "gpt-5-2025-08-07",
            "server.address": "api.openai.com", "server.port": 443}
    pts = points(m["gen_ai.client.token.usage"])
    assert {k: p.sum for k, p in pts.items()} == {
        frozenset({**base, "gen_ai.token.type": "input"}.items()): 120,
        frozenset({**base, "gen_ai.token.type": "output"}.items()): 40,
    }
    (p,) = m["gen_ai.client.operation.duration"].data.data_points
    assert dict(p.attributes) == base
    assert (p.count, p.sum) == (1, 1.0)
    # Not streaming: no time-to-first-chunk metric (the spec says SHOULD NOT).
    assert "gen_ai.client.operation.time_to_first_chunk" not in m


def test_failed_interception(otel):
    tel, spans, reader, _ = otel
    tel.interception_started(started(), "api.anthropic.com", 443)
    tel.interception_ended(ended(outcome="failed", status=429, error_type="rate_limited",
                                 response_model=None, response_id=None, at=T0 + 0.3))
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "rate_limited"
    assert span.attributes["error.type"] == "rate_limited"
    assert span.attributes["aibridge.outcome"] == "failed"
    assert span.attributes["http.response.status_code"] == 429
    assert "gen_ai.response.model" not in span.attributes
    assert "upstream said no" not in str(dict(span.attributes))

    m = metrics(reader)
    (p,) = m["gen_ai.client.operation.duration"].data.data_points
    expected = {k: v for k, v in ANTHROPIC_METRIC_ATTRS.items() if k != "gen_ai.response.model"}
    assert dict(p.attributes) == {**expected, "error.type": "rate_limited"}
    assert p.sum == pytest.approx(0.3)
    # No usage reported: no token metric.
    assert "gen_ai.client.token.usage" not in m


@pytest.mark.parametrize(("outcome", "expected"), [("cancelled", "cancelled"),
                                                   ("rejected", "_OTHER"),
                                                   ("failed", "_OTHER")])
def test_error_type_fallbacks(otel, outcome, expected):
    tel, spans, reader, _ = otel
    tel.interception_started(started(), "api.anthropic.com", 443)
    tel.interception_ended(ended(outcome=outcome, status=None))
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == expected
    assert "http.response.status_code" not in span.attributes
    (p,) = metrics(reader)["gen_ai.client.operation.duration"].data.data_points
    assert p.attributes["error.type"] == expected


def test_time_to_first_token_from_end_record(otel):
    tel, spans, reader, _ = otel
    tel.interception_started(started(), "api.anthropic.com", 443)
    tel.interception_ended(ended(time_to_first_token=0.4))
    (span,) = spans.get_finished_spans()
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == 0.4
    (p,) = metrics(reader)["gen_ai.client.operation.time_to_first_chunk"].data.data_points
    assert (p.count, p.sum) == (1, 0.4)


def test_first_token_counts_once(otel):
    tel, spans, reader, _ = otel
    tel.interception_started(started(), "api.anthropic.com", 443)
    tel.first_token("i-1", T0 + 0.5)
    tel.first_token("i-1", T0 + 0.9)
    tel.interception_ended(ended(time_to_first_token=0.7))
    (span,) = spans.get_finished_spans()
    assert [e.name for e in span.events] == ["aibridge.first_token"]
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == 0.5
    (p,) = metrics(reader)["gen_ai.client.operation.time_to_first_chunk"].data.data_points
    assert (p.count, p.sum) == (1, 0.5)


def test_unknown_ids_are_ignored(otel):
    tel, spans, reader, _ = otel
    tel.failover("nope", "a", "b", "rate_limited")
    tel.first_token("nope", T0)
    tel.usage(usage(iid="nope", inp=1))
    tel.interception_ended(ended(iid="nope"))
    tel.interception_started(started(), "api.anthropic.com", 443)
    tel.interception_ended(ended())
    tel.interception_ended(ended())  # twice: the second is unknown
    tel.usage(usage(inp=1))  # after the end
    assert len(spans.get_finished_spans()) == 1
    (p,) = metrics(reader)["gen_ai.client.operation.duration"].data.data_points
    assert p.count == 1


def test_errors_never_escape(otel, caplog):
    tel, _, _, _ = otel
    caplog.set_level(logging.DEBUG, logger="aibridge.observe.telemetry")
    tel.interception_started(None, "x", 1)  # type: ignore[arg-type]
    tel.usage(object())  # type: ignore[arg-type]
    assert tel.live_count() == 0
    assert "interception_started failed" in caplog.text


def test_registry_counters_exported(otel):
    _, _, reader, registry = otel
    registry.key_transitions.inc(provider="anthropic-main", reason="rate_limited")
    registry.key_transitions.inc(provider="anthropic-main", reason="rate_limited")
    registry.key_transitions.inc(provider="anthropic-main", reason="unauthorized")
    registry.key_exhaustions.inc(provider="openai-main", outcome="rate_limited")
    circuit = {"provider": "anthropic-main", "endpoint": "/v1/messages", "model": "claude-x"}
    registry.circuit_state.set(1.0, **circuit)
    registry.circuit_trips.inc(**circuit)
    registry.circuit_rejects.inc(3, **circuit)
    for attempts in (1, 1, 2, 7, 30):
        registry.failover_attempts.observe(attempts, provider="anthropic-main")

    m = metrics(reader)
    circuit_attrs = {"aibridge.provider": "anthropic-main", "aibridge.route": "/v1/messages",
                     "gen_ai.request.model": "claude-x"}

    def values(name):
        return {k: p.value for k, p in points(m[name]).items()}

    assert values("aibridge.key_pool.state_transitions") == {
        frozenset({"aibridge.provider": "anthropic-main",
                   "aibridge.key_pool.reason": "rate_limited"}.items()): 2,
        frozenset({"aibridge.provider": "anthropic-main",
                   "aibridge.key_pool.reason": "unauthorized"}.items()): 1,
    }
    assert m["aibridge.key_pool.state_transitions"].data.is_monotonic
    assert values("aibridge.key_pool.exhaustions") == {
        frozenset({"aibridge.provider": "openai-main",
                   "aibridge.key_pool.outcome": "rate_limited"}.items()): 1}
    assert values("aibridge.circuit_breaker.state") == {frozenset(circuit_attrs.items()): 1.0}
    assert values("aibridge.circuit_breaker.trips") == {frozenset(circuit_attrs.items()): 1}
    assert values("aibridge.circuit_breaker.rejects") == {frozenset(circuit_attrs.items()): 3}
    assert m["aibridge.circuit_breaker.state"].unit == "1"

    hist = m["aibridge.key_pool.failover_attempts"]
    (p,) = hist.data.data_points
    assert dict(p.attributes) == {"aibridge.provider": "anthropic-main"}
    assert p.explicit_bounds == (1, 2, 3, 4, 5, 10, 25)
    assert list(p.bucket_counts) == [2, 1, 0, 0, 0, 1, 0, 1]
    assert (p.count, p.sum, p.min) == (5, 41, 1)
    assert "aibridge.internal.registry_sync" not in m

    # Only new observations are replayed at the next collection.
    registry.failover_attempts.observe(3, provider="anthropic-main")
    registry.circuit_state.set(0.0, **circuit)
    m = metrics(reader)
    (p,) = m["aibridge.key_pool.failover_attempts"].data.data_points
    assert list(p.bucket_counts) == [2, 1, 1, 0, 0, 1, 0, 1]
    assert (p.count, p.sum) == (6, 44)
    assert values("aibridge.circuit_breaker.state") == {frozenset(circuit_attrs.items()): 0.0}


def test_reconstruct_keeps_counts_and_sum():
    bounds = (1, 2, 3, 4, 5, 10, 25)
    deltas = [1, 0, 0, 0, 0, 2, 1, 1]  # observed: 1, 6, 10, 25, 40
    values = t._reconstruct(bounds, deltas, 82)
    assert sum(values) == 82
    # Same bucket counts as the observations (the values inside wide buckets may differ).
    counts = [0] * 8
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1
    assert counts == deltas
    assert t._reconstruct(bounds, [0, 0, 0, 0, 0, 1, 0, 0], 8) == [8]


def test_no_counters_without_registry():
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tel = Telemetry.from_settings("none", span_exporter=spans, metric_reader=reader)
    assert not any(name.startswith("aibridge.") for name in metrics(reader))
    tel.shutdown()


def test_none_exporter_keeps_nothing():
    registry = Registry()
    tel = Telemetry.from_settings("none", counters=registry)
    assert tel.enabled is False
    for n in range(10_000):
        iid = f"i-{n}"
        tel.interception_started(started(iid=iid), "api.anthropic.com", 443)
        tel.failover(iid, "a", "b", "rate_limited")
        tel.first_token(iid, T0 + 0.1)
        tel.usage(usage(iid=iid, inp=1, out=1))
        tel.interception_ended(ended(iid=iid))
    assert tel.live_count() == 0
    assert tel._tracer_provider is None and tel._meter_provider is None
    tel.force_flush()
    tel.shutdown()


def test_spans_left_open_end_at_shutdown():
    spans = InMemorySpanExporter()
    tel = Telemetry.from_settings("none", span_exporter=spans)
    tel.interception_started(started(), "api.anthropic.com", 443)
    assert tel.live_count() == 1
    tel.shutdown()
    tel.shutdown()
    (span,) = spans.get_finished_spans()
    assert span.attributes["aibridge.incomplete"] is True
    assert tel.live_count() == 0
    tel.interception_started(started(iid="i-2"), "api.anthropic.com", 443)  # after shutdown: no-op
    assert tel.live_count() == 0


def test_live_spans_are_bounded(otel, monkeypatch):
    tel, spans, _, _ = otel
    monkeypatch.setattr(t, "MAX_LIVE_SPANS", 3)
    for n in range(5):
        tel.interception_started(started(iid=f"i-{n}"), "api.anthropic.com", 443)
    assert tel.live_count() == 3
    assert [s.attributes["aibridge.interception_id"] for s in spans.get_finished_spans()] == [
        "i-0", "i-1"]


def test_console_exporter_builds_and_shuts_down():
    tel = Telemetry.from_settings("console", service_name="aibridge-test")
    assert tel.enabled
    tel.shutdown()


def test_unknown_exporter_rejected():
    with pytest.raises(TelemetryConfigError, match="unknown telemetry exporter 'jaeger'"):
        Telemetry.from_settings("jaeger")


def test_otlp_exporter_builds():  # the extra is in requirements.lock, so tests always have it
    tel = Telemetry.from_settings("otlp", otlp_endpoint="http://127.0.0.1:9/")
    assert tel.enabled
    processor = tel._tracer_provider._active_span_processor._span_processors[0]
    assert processor.span_exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    tel._tracer_provider.shutdown()  # nothing is listening: don't wait on a metrics export
    tel._meter_provider.shutdown(timeout_millis=100)


def test_otlp_without_extra_is_a_clear_error(monkeypatch):
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                        None)
    with pytest.raises(TelemetryConfigError, match=r"pip install 'aibridge\[otlp\]'"):
        Telemetry.from_settings("otlp")


# -- names are checked against the installed semantic conventions ------------------------------

GEN_AI_NAMES = [
    "GEN_AI_OPERATION_NAME", "GEN_AI_PROVIDER_NAME", "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_STREAM", "GEN_AI_RESPONSE_MODEL", "GEN_AI_RESPONSE_ID",
    "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK", "GEN_AI_CONVERSATION_ID", "GEN_AI_TOKEN_TYPE",
    "GEN_AI_USAGE_INPUT_TOKENS", "GEN_AI_USAGE_OUTPUT_TOKENS",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS", "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS",
    "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS",
]


@pytest.mark.parametrize("name", GEN_AI_NAMES)
def test_gen_ai_attribute_names_match_semconv(name):
    if not hasattr(gen_ai_attributes, name):
        pytest.skip(f"{name} not in this semconv release")
    assert getattr(t, name) == getattr(gen_ai_attributes, name)


def test_other_names_match_semconv():
    assert t.SERVER_ADDRESS == server_attributes.SERVER_ADDRESS
    assert t.SERVER_PORT == server_attributes.SERVER_PORT
    assert t.ERROR_TYPE == error_attributes.ERROR_TYPE
    assert error_attributes.ErrorTypeValues.OTHER.value == t.ERROR_TYPE_OTHER
    assert t.HTTP_RESPONSE_STATUS_CODE == http_attributes.HTTP_RESPONSE_STATUS_CODE
    assert t.USER_AGENT_ORIGINAL == user_agent_attributes.USER_AGENT_ORIGINAL
    assert t.GEN_AI_CLIENT_TOKEN_USAGE == gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
    assert t.GEN_AI_CLIENT_OPERATION_DURATION == gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
    assert (t.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK
            == gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
    assert gen_ai_attributes.GenAiOperationNameValues.CHAT.value == t.OPERATION_CHAT
    assert gen_ai_attributes.GenAiTokenTypeValues.INPUT.value == t.TOKEN_TYPE_INPUT
    assert gen_ai_attributes.GenAiTokenTypeValues.COMPLETION.value == t.TOKEN_TYPE_OUTPUT
    providers = gen_ai_attributes.GenAiProviderNameValues
    assert (providers.OPENAI.value, providers.ANTHROPIC.value) == ("openai", "anthropic")


def test_units_match_semconv():
    """The semconv helpers' units are the ones we create the instruments with."""

    class Recorder:
        def create_histogram(self, name, unit="", description="", **_):
            return (name, unit)

    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tel = Telemetry.from_settings("none", span_exporter=spans, metric_reader=reader)
    tel.interception_started(started(), "api.anthropic.com", 443)
    tel.first_token("i-1", T0 + 0.1)
    tel.usage(usage(inp=1, out=1))
    tel.interception_ended(ended())
    ours = {name: m.unit for name, m in metrics(reader).items()}
    for create in (gen_ai_metrics.create_gen_ai_client_token_usage,
                   gen_ai_metrics.create_gen_ai_client_operation_duration,
                   gen_ai_metrics.create_gen_ai_client_operation_time_to_first_chunk):
        name, unit = create(Recorder())
        assert ours[name] == unit
    tel.shutdown()
