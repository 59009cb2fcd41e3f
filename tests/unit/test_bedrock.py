"""Amazon Bedrock: routes, event-stream decoding in the tap, summaries, the AWS error shape."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.eventstream import EventStreamBuffer
from mitmproxy.http import Headers

from aibridge.errors.convert import convert_error
from aibridge.errors.envelope import new_response_error
from aibridge.errors.shapes import AWS_ERRORS
from aibridge.providers.bedrock import BEDROCK, CONVERSE, INVOKE, region_of
from aibridge.providers.eventstream import encode_message, event_message, exception_message
from aibridge.providers.paths import normalize
from aibridge.streaming.tap import StreamTap
from tests.fakeprovider import bedrock_chunk, bedrock_reply, eventstream_message

ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0"
INVOKE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "messages": []}
ENCODED_ARN = ("arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
               "us.anthropic.claude-sonnet-4-5-v1%3A0")


@pytest.mark.parametrize(("path", "api", "model", "streaming"), [
    ("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke", INVOKE,
     "anthropic.claude-3-haiku-20240307-v1:0", False),
    ("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream", INVOKE,
     "us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
    (f"/model/{ENCODED_ARN}/converse", CONVERSE, ARN, False),
    ("/model/amazon.nova-pro-v1%3A0/converse-stream", CONVERSE, "amazon.nova-pro-v1:0", True),
])
def test_routes_take_the_model_from_the_path(path, api, model, streaming):
    # The path in the normal form the registry routes on: an ARN's %2F stays in its segment.
    normal = normalize(path, "", slash_escapes=BEDROCK.slash_escapes)
    assert normal == path
    found = BEDROCK.bridged("POST", normal)
    assert found is not None and found[0] is api
    info = api.request_info({}, found[1])
    assert (info.model, info.streaming) == (model, streaming)


@pytest.mark.parametrize("path", ["/model/x/invoke/extra", "/model/x/count-tokens", "/models",
                                  "/model//invoke", "/guardrail/g/version/1/apply"])
def test_other_paths_are_not_bridged(path):
    assert BEDROCK.bridged("POST", path) is None
    assert BEDROCK.bridged("GET", "/model/x/invoke") is None


def test_region_of_bedrock_hosts():
    assert region_of("bedrock-runtime.eu-west-1.amazonaws.com") == "eu-west-1"
    assert region_of("bedrock-runtime-fips.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert region_of("127.0.0.1") is None and region_of(None) is None


def test_encoder_writes_what_botocore_reads():
    frame = event_message("chunk", {"bytes": "e30="}) + exception_message(
        "throttlingException", "slow down")
    buffer = EventStreamBuffer()
    buffer.add_data(frame)
    messages = list(buffer)
    assert messages[0].headers[":event-type"] == "chunk"
    assert json.loads(messages[0].payload) == {"bytes": "e30="}
    assert messages[1].headers[":exception-type"] == "throttlingException"
    # The fake encodes on its own; both agree byte for byte.
    headers = {":event-type": "x", ":content-type": "application/json", ":message-type": "event"}
    assert encode_message(headers, b"{}") == eventstream_message(headers, b"{}")


def _feed_in_pieces(tap: StreamTap, data: bytes, size: int) -> bytes:
    out = b"".join(tap(data[i:i + size]) for i in range(0, len(data), size))
    return out + tap(b"")


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_tap_reads_an_invoke_stream_and_passes_every_byte(size):
    reply = bedrock_reply(1, "us.anthropic.claude-sonnet-4-5-v1:0",
                          "invoke-with-response-stream", INVOKE_BODY)
    data = b"".join(e if isinstance(e, bytes) else e.encode() for e in reply.events or [])
    tap = StreamTap(INVOKE, None)
    assert _feed_in_pieces(tap, data, size) == data
    s = tap.summary
    assert tap.parse_error is None
    assert (s.input_tokens, s.output_tokens, s.cache_read_tokens, s.cache_write_tokens) == (
        11, 7, 3, 2)
    assert s.completed and s.stop_reason == "end_turn" and s.text_chars == len("Hello from fake")
    assert s.model == "claude-sonnet-4-5" and tap.first_token_at is not None


def test_tap_takes_tokens_from_invocation_metrics_for_other_models():
    chunks = [bedrock_chunk({"generation": "Hi", "prompt_token_count": 5,
                             "generation_token_count": 1, "stop_reason": None}),
              bedrock_chunk({"generation": " there", "prompt_token_count": None,
                             "generation_token_count": 1, "stop_reason": "stop",
                             "amazon-bedrock-invocationMetrics": {
                                 "inputTokenCount": 5, "outputTokenCount": 2}})]
    tap = StreamTap(INVOKE, None)
    _feed_in_pieces(tap, b"".join(chunks), 5)
    s = tap.summary
    assert (s.input_tokens, s.output_tokens, s.stop_reason, s.completed) == (5, 2, "stop", True)
    assert s.text_chars == len("Hi there")


@pytest.mark.parametrize("size", [3, 4096])
def test_tap_reads_a_converse_stream_with_a_tool_call(size):
    frames = [
        event_message("messageStart", {"role": "assistant"}),
        event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me"}}),
        event_message("contentBlockStart", {"contentBlockIndex": 1, "start": {
            "toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}}),
        event_message("contentBlockDelta", {"contentBlockIndex": 1,
                                            "delta": {"toolUse": {"input": '{"city":'}}}),
        event_message("contentBlockDelta", {"contentBlockIndex": 1,
                                            "delta": {"toolUse": {"input": '"Paris"}'}}}),
        event_message("messageStop", {"stopReason": "tool_use"}),
        event_message("metadata", {"usage": {"inputTokens": 20, "outputTokens": 9,
                                             "cacheReadInputTokens": 4}}),
    ]
    tap = StreamTap(CONVERSE, None)
    _feed_in_pieces(tap, b"".join(frames), size)
    s = tap.summary
    assert (s.input_tokens, s.output_tokens, s.cache_read_tokens) == (20, 9, 4)
    assert s.stop_reason == "tool_use" and s.completed
    assert [(c.id, c.name, c.arguments) for c in s.tool_calls] == [
        ("tooluse_1", "get_weather", '{"city":"Paris"}')]


def test_an_exception_in_the_stream_is_the_summary_error():
    data = (bedrock_chunk({"type": "message_start", "message": {"model": "m", "usage": {}}})
            + exception_message("modelStreamErrorException", "the model broke"))
    tap = StreamTap(INVOKE, None)
    _feed_in_pieces(tap, data, 4096)
    assert tap.summary.error == "the model broke"
    assert tap.summary.error_type == "modelStreamErrorException"
    conv = StreamTap(CONVERSE, None)
    _feed_in_pieces(conv, exception_message("throttlingException", "Too many requests"), 9)
    assert conv.summary.error_type == "throttlingException"


def test_a_corrupt_frame_stops_parsing_but_not_the_bytes():
    frame = bytearray(event_message("chunk", {"bytes": base64.b64encode(b"{}").decode()}))
    frame[-1] ^= 0xFF  # the message CRC no longer matches
    tap = StreamTap(INVOKE, None)
    assert _feed_in_pieces(tap, bytes(frame), 4096) == bytes(frame)
    assert tap.parse_error is not None and "Checksum" in tap.parse_error


def test_the_tail_of_a_broken_stream_is_an_exception_frame():
    error = new_response_error("upstream went away", "api_error", "server_error", 502)
    tail = INVOKE.stream_error_tail(error.body(AWS_ERRORS))
    buffer = EventStreamBuffer()
    buffer.add_data(tail)
    (message,) = list(buffer)
    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "internalServerException"
    assert json.loads(message.payload) == {"message": "upstream went away"}


def test_summaries_of_whole_answers():
    invoke = bedrock_reply(1, "anthropic.claude-3-haiku-20240307-v1:0", "invoke",
                           INVOKE_BODY).body
    s = INVOKE.summarize(invoke)
    assert (s.input_tokens, s.output_tokens, s.model, s.completed) == (
        11, 7, "claude-3-haiku-20240307", True)
    s = CONVERSE.summarize({
        "output": {"message": {"role": "assistant", "content": [
            {"text": "ok"}, {"toolUse": {"toolUseId": "t1", "name": "ls", "input": {"a": 1}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 3, "outputTokens": 4}})
    assert (s.input_tokens, s.output_tokens, s.stop_reason, s.text_chars) == (3, 4, "tool_use", 2)
    assert [(c.id, c.name, c.arguments) for c in s.tool_calls] == [("t1", "ls", '{"a":1}')]
    titan = INVOKE.summarize({"inputTextTokenCount": 4, "results": [
        {"tokenCount": 6, "outputText": "hey", "completionReason": "FINISH"}]})
    assert (titan.input_tokens, titan.output_tokens, titan.stop_reason) == (4, 6, "FINISH")


def test_prompts_and_correlating_ids():
    body = {"messages": [{"role": "user", "content": [{"text": "first"}]},
                         {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t9"}}]},
                         {"role": "user", "content": [{"toolResult": {"toolUseId": "t9"}},
                                                      {"text": "and now?"}]}]}
    assert CONVERSE.last_prompt(body) == "and now?"
    assert CONVERSE.correlating_tool_call_id(body) == "t9"
    anthropic = {"anthropic_version": "bedrock-2023-05-31",
                 "messages": [{"role": "user", "content": "hello"}]}
    assert INVOKE.last_prompt(anthropic) == "hello"


def test_client_credentials():
    sig = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, "
           "SignedHeaders=host;x-amz-date, Signature=" + "a" * 64)
    slot, value = BEDROCK.client_credential(Headers(authorization=sig))
    assert (slot.name, slot.bearer, value) == ("Authorization", False, sig)
    slot, value = BEDROCK.client_credential(Headers(authorization="Bearer bedrock-api-key-1"))
    assert (slot.bearer, value) == (True, "bedrock-api-key-1")
    assert BEDROCK.client_credential(Headers()) is None


def test_aws_error_shape():
    error = new_response_error("slow down", "rate_limit_error", "rate_limit_exceeded", 429,
                               retry_after=2)
    response = error.to_response(AWS_ERRORS)
    assert response.status_code == 429
    assert json.loads(response.content) == {"message": "slow down"}
    assert response.headers["x-amzn-ErrorType"] == "ThrottlingException"
    assert response.headers["Retry-After"] == "2"
    for kind, status, name in [("authentication_error", 401, "UnrecognizedClientException"),
                               ("permission_error", 403, "AccessDeniedException"),
                               ("not_found_error", 404, "ResourceNotFoundException"),
                               ("invalid_request_error", 400, "ValidationException"),
                               ("api_error", 502, "InternalServerException"),
                               ("overloaded_error", 503, "ServiceUnavailableException")]:
        headers = new_response_error("x", kind, None, status).to_response(AWS_ERRORS).headers
        assert headers["x-amzn-ErrorType"] == name


def test_bedrock_errors_pass_and_others_become_the_aws_shape():
    own = json.dumps({"message": "Too many requests, please wait."}).encode()
    assert convert_error("bedrock", AWS_ERRORS, 429, {}, own) is None
    html = b"<html><title>502 Bad Gateway</title></html>"
    converted = json.loads(convert_error("bedrock", AWS_ERRORS, 502,
                                         {"content-type": "text/html"}, html))
    assert converted == {"message": "bedrock returned HTTP 502: 502 Bad Gateway"}
