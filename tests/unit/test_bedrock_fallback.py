"""Fallback from Anthropic to Bedrock: configuration, model mapping, the translations."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from aibridge.config import BridgeConfig
from aibridge.errors.envelope import new_response_error
from aibridge.keys.pool import KeyPoolError
from aibridge.model import PoolErrorKind
from aibridge.providers.anthropic_messages import MESSAGES
from aibridge.providers.bedrock_messages import (
    InvokeStreamToSSE,
    anthropic_error,
    invoke_body,
    invoke_path,
)
from aibridge.sse import SSEParser
from aibridge.streaming.tap import StreamTap
from aibridge.upstream import fallback
from aibridge.upstream.fallback import Route, SseRelay
from tests.fakeprovider import bedrock_chunk, eventstream_exception, messages_events

MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": [{"type": "text", "text": "Hello from fake"}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 7}}


def bedrock_stream() -> bytes:
    events = messages_events(MESSAGE)
    events[-1]["amazon-bedrock-invocationMetrics"] = {"inputTokenCount": 11,
                                                      "outputTokenCount": 7}
    return b"".join(bedrock_chunk(e) for e in events)


def test_the_request_is_bedrocks_invoke():
    body = {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 10, "messages": [],
            "metadata": {"user_id": "u"}, "system": "be brief", "service_tier": "auto",
            "tools": [{"name": "t"}], "thinking": {"type": "enabled", "budget_tokens": 1024}}
    out = invoke_body(body, "claude-code-20250219, interleaved-thinking-2025-05-14,"
                            "oauth-2025-04-20")
    assert out == {"max_tokens": 10, "messages": [], "system": "be brief",
                   "metadata": {"user_id": "u"},
                   "tools": [{"name": "t"}],
                   "thinking": {"type": "enabled", "budget_tokens": 1024},
                   "anthropic_version": "bedrock-2023-05-31",
                   "anthropic_beta": ["interleaved-thinking-2025-05-14"]}
    assert "anthropic_beta" not in invoke_body(body, None)
    arn = "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-v1:0"
    assert invoke_path(arn, True) == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2F"
        "us.anthropic.claude-v1%3A0/invoke-with-response-stream")
    assert invoke_path("anthropic.claude-v1:0", False) == "/model/anthropic.claude-v1%3A0/invoke"


@pytest.mark.parametrize("size", [1, 13, 100_000])
def test_a_stream_becomes_anthropic_sse(size):
    data = bedrock_stream()
    convert = InvokeStreamToSSE()
    sse = b"".join(convert(data[i:i + size]) for i in range(0, len(data), size))
    events = SSEParser().feed(sse)
    assert [e.event for e in events] == [json.loads(e.data)["type"] for e in events]
    assert events[0].event == "message_start"
    assert "amazon-bedrock-invocationMetrics" not in sse.decode()
    assert MESSAGES.assembled_text(events)["text"] == "Hello from fake"


def test_a_stream_exception_becomes_an_sse_error():
    sse = InvokeStreamToSSE()(eventstream_exception("throttlingException", "slow down"))
    (event,) = SSEParser().feed(sse)
    assert event.event == "error"
    assert json.loads(event.data) == {"type": "error", "error": {
        "type": "rate_limit_error", "message": "slow down"}}


def test_the_relay_feeds_the_messages_tap():
    tap = StreamTap(MESSAGES, None)
    relay = SseRelay(tap)
    data = bedrock_stream()
    out = b"".join(relay(data[i:i + 50]) for i in range(0, len(data), 50)) + relay(b"")
    assert out.startswith(b"event: message_start\n")
    s = tap.summary
    assert (s.input_tokens, s.output_tokens, s.completed, s.stop_reason) == (
        11, 7, True, "end_turn")
    # A corrupt frame ends the stream with an error event, never an exception.
    broken = SseRelay(StreamTap(MESSAGES, None))
    frame = bytearray(bedrock_chunk({"type": "ping"}))
    frame[-1] ^= 1
    assert b"event: error" in broken(bytes(frame))
    assert broken(b"more") == b""


@pytest.mark.parametrize(("status", "kind", "expected"), [
    (429, "ThrottlingException:http://internal.amazon.com/coral/", "rate_limit_error"),
    (400, "ValidationException", "invalid_request_error"),
    (403, "InvalidSignatureException", "permission_error"),
    (503, "ServiceUnavailableException", "overloaded_error"),
    (500, None, "api_error"),
    (401, None, "authentication_error"),
])
def test_bedrock_errors_in_anthropic_shape(status, kind, expected):
    body = json.loads(anthropic_error(status, kind, b'{"message": "why"}'))
    assert body == {"type": "error", "error": {"type": expected, "message": "why"}}
    assert json.loads(anthropic_error(502, None, b"<html>"))["error"]["message"] == (
        "bedrock returned HTTP 502")


def test_model_mapping():
    route = Route(source=None, target=None,  # type: ignore[arg-type]
                  models={"claude-sonnet-4-5": "A", "claude-haiku-*": "B",
                          "claude-sonnet-4-5-2025": "C"}, on=frozenset(), upstream=None)  # type: ignore[arg-type]
    assert route.model_for("claude-sonnet-4-5") == "A"
    assert route.model_for("claude-haiku-4-5-20251001") == "B"
    assert route.model_for("claude-sonnet-4-5-20250929") == "A"  # a dated version
    assert route.model_for("claude-sonnet-4-5-2025-x") == "C"  # the longest name wins
    assert route.model_for("claude-opus-4") is None
    assert route.model_for("claude-sonnet-4-50") is None  # not a version of it


def test_triggers():
    cooling = new_response_error("all keys cooling", "rate_limit_error", None, 429)
    cooling.__cause__ = KeyPoolError(PoolErrorKind.RATE_LIMITED, 3.0)
    assert fallback.trigger_of(cooling, False) == fallback.ALL_KEYS_COOLING
    plain = new_response_error("budget spent", "permission_error", None, 403)
    assert fallback.trigger_of(plain, False) is None
    assert fallback.trigger_of(plain, True) == fallback.CIRCUIT_OPEN


BEDROCK = {"type": "bedrock", "hosts": ["bedrock-runtime.*.amazonaws.com"]}


def test_configuration():
    config = BridgeConfig.model_validate({
        "providers": {"bedrock": BEDROCK},
        "fallbacks": [{"from": "anthropic", "to": "bedrock", "models": {"a": "b"}}]})
    assert config.fallbacks[0].on == ["all_keys_cooling", "circuit_open", "unreachable", "5xx"]
    for bad, match in [
        ({"from": "openai", "to": "bedrock", "models": {"a": "b"}}, "only an anthropic"),
        ({"from": "anthropic", "to": "nope", "models": {"a": "b"}}, "no provider named"),
        ({"from": "anthropic", "to": "bedrock", "models": {}}, "at least 1"),
        ({"from": "anthropic", "to": "bedrock", "models": {"a": "b"}, "on": ["sometimes"]},
         "on"),
    ]:
        with pytest.raises(ValidationError, match=match):
            BridgeConfig.model_validate({"providers": {"bedrock": BEDROCK}, "fallbacks": [bad]})
    with pytest.raises(ValidationError, match="two fallbacks"):
        BridgeConfig.model_validate({"providers": {"bedrock": BEDROCK}, "fallbacks": [
            {"from": "anthropic", "to": "bedrock", "models": {"a": "b"}}] * 2})
