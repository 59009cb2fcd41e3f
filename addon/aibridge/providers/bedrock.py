"""Amazon Bedrock's runtime API (`bedrock-runtime.<region>.amazonaws.com`): InvokeModel and
Converse, streamed or not, and the Bedrock provider API they belong to.

Routes, below the root (no base path): `POST /model/{modelId}/invoke`,
`/invoke-with-response-stream`, `/converse` and `/converse-stream`. The model id is one path
segment, URL-encoded by the SDKs (`anthropic.claude-sonnet-4-5-20250929-v1%3A0`, an inference
profile `us.anthropic...`, or a whole ARN with `%3A` and `%2F`); it is recorded decoded. Every
other path (count-tokens, async invoke, guardrails) passes through.

Streams are AWS event-stream (providers.eventstream), not SSE:

- invoke-with-response-stream: `chunk` events whose payload `{"bytes": <base64>}` is one event
  of the model's own stream; for Anthropic models exactly the Messages stream events, the last
  (`message_stop`) carrying `amazon-bedrock-invocationMetrics` (token counts for any model).
- converse-stream: `messageStart`, `contentBlockStart` / `Delta` / `Stop`, `messageStop`
  (stop reason), `metadata` (usage), the event's name in the `:event-type` header.

Either may end with an `exception` message (`throttlingException`, `modelStreamErrorException`,
...). Token convention (Anthropic's): input excludes cache reads and writes, in the invoke
bodies (Anthropic usage) and in Converse (`inputTokens` beside `cacheReadInputTokens`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from mitmproxy.http import Headers

from aibridge.errors.shapes import AWS_ERRORS, aws_error_type
from aibridge.intercept import parse_bearer
from aibridge.providers.anthropic_messages import MESSAGES, MessagesAccumulator
from aibridge.providers.base import (
    NO_PARAMS,
    CredentialSlot,
    ProviderApi,
    RequestInfo,
    StreamParser,
    WireApi,
)
from aibridge.providers.eventstream import (
    CONTENT_TYPE,
    EventStreamParser,
    exception_event,
    exception_message,
)
from aibridge.providers.jsonfields import (
    UNKNOWN_MODEL,
    _d,
    _dumps,
    _idx,
    _last,
    _list,
    _n,
    _role,
    _s,
    _set_error,
    _text,
)
from aibridge.providers.stream import StreamAccumulator
from aibridge.sse import RawEvent
from aibridge.summary import ResponseSummary, ToolCall

# One segment for the model id: an ARN's "/" arrives as %2F (see providers.paths).
_ROUTE = re.compile(r"/model/([^/]+)/(invoke|invoke-with-response-stream|converse|converse-stream)")
_STREAMING = frozenset({"invoke-with-response-stream", "converse-stream"})
METRICS = "amazon-bedrock-invocationMetrics"


def model_id(segment: str) -> str:
    """The model id a path segment names, URL-decoded."""
    return unquote(segment)


class _BedrockWire(WireApi):
    stream_content_type = CONTENT_TYPE
    untyped_json = True  # boto3's invoke_model sends no Content-Type unless asked to
    _actions: frozenset[str]

    def match(self, method: str, path: str) -> Mapping[str, str] | None:
        if method != "POST" or (found := _ROUTE.fullmatch(path)) is None:
            return None
        if found[2] not in self._actions:
            return None
        return MappingProxyType({"model": model_id(found[1]), "action": found[2]})

    def request_info(self, body: object, params: Mapping[str, str] = NO_PARAMS) -> RequestInfo:
        return RequestInfo(params.get("model") or UNKNOWN_MODEL,
                           params.get("action") in _STREAMING,
                           self.correlating_tool_call_id(body) if isinstance(body, dict) else None)

    def recognises(self, name: str | None, obj: object, data: str) -> int:
        return 0  # not SSE: never one of the streams the bridge did not handle

    def stream_error_tail(self, body: dict[str, Any]) -> bytes:
        # The AWS SDKs raise an exception message's type with its message.
        message = _s(body.get("message")) or _s(_d(body.get("error")).get("message")) or "error"
        return exception_message(_exception_name(body), message)


def _exception_name(body: dict[str, Any]) -> str:
    """An event-stream exception type (lower camel case, as Bedrock writes them)."""
    error = _d(body.get("error"))
    name = aws_error_type(_s(error.get("type")), 500)
    return name[:1].lower() + name[1:]


# -- InvokeModel ---------------------------------------------------------------------------------


def _invoke_event(headers: Mapping[str, object], payload: bytes) -> RawEvent | None:
    """A `chunk`'s model event (base64 in `bytes`), or an exception as an error event."""
    if headers.get(":message-type") != "event":
        return exception_event(headers, payload)
    if headers.get(":event-type") != "chunk":
        return None
    try:
        inner = base64.b64decode(_text(_d(json.loads(payload)).get("bytes")), validate=True)
    except ValueError:
        return None, payload, None  # counted as a bad event by the accumulator
    return None, inner, None


class InvokeAccumulator(MessagesAccumulator):
    """The model's own events: Anthropic's Messages events as such; any model's token counts
    from the invocation metrics in its last chunk; other models' fields on a best effort."""

    def _handle(self, name: str | None, obj: dict) -> None:
        if "type" in obj or name == "error":
            super()._handle(name, obj)
        else:
            _other_model(self._summary, obj, stream=True)
            if _other_text(obj):
                self._output()
        metrics = obj.get(METRICS)
        if isinstance(metrics, dict):
            s = self._summary
            s.input_tokens = s.input_tokens or _n(metrics.get("inputTokenCount"))
            s.output_tokens = s.output_tokens or _n(metrics.get("outputTokenCount"))
            s.cache_read_tokens = s.cache_read_tokens or _n(metrics.get("cacheReadInputTokenCount"))
            s.cache_write_tokens = (s.cache_write_tokens
                                    or _n(metrics.get("cacheWriteInputTokenCount")))
            s.completed = True  # the last chunk of every model's stream


def _other_text(obj: dict) -> str:
    """Generated text of the non-Anthropic models' invoke shapes (Llama, Titan, Mistral)."""
    if isinstance(text := obj.get("generation") or obj.get("outputText"), str):
        return text
    return "".join(_text(_d(o).get("text")) for o in _list(obj.get("outputs")))


def _other_model(s: ResponseSummary, obj: dict, *, stream: bool) -> None:
    """Usage and stop reason of the other models' invoke bodies or chunks."""
    text = _other_text(obj)
    s.text_chars += len(text)
    if n := _n(obj.get("prompt_token_count")) or _n(obj.get("inputTextTokenCount")):
        s.input_tokens = n
    output = _n(obj.get("generation_token_count")) or _n(obj.get("totalOutputTextTokenCount"))
    if output:
        s.output_tokens = output if not stream else s.output_tokens + output
    stop = (_s(obj.get("stop_reason")) or _s(obj.get("completionReason"))
            or _s(_last(obj.get("outputs")).get("stop_reason")))
    s.stop_reason = stop or s.stop_reason
    for result in _list(obj.get("results")):  # Titan's whole body
        result = _d(result)
        s.text_chars += len(_text(result.get("outputText")))
        s.output_tokens += _n(result.get("tokenCount"))
        s.stop_reason = _s(result.get("completionReason")) or s.stop_reason


class Invoke(_BedrockWire):
    name = "invoke"
    title = "Amazon Bedrock InvokeModel"
    path = "/model/{modelId}/invoke"
    _actions = frozenset({"invoke", "invoke-with-response-stream"})

    def stream_parser(self) -> StreamParser:
        return EventStreamParser(_invoke_event)

    def correlating_tool_call_id(self, body: dict) -> str | None:
        return MESSAGES.correlating_tool_call_id(body)

    def accumulator(self) -> InvokeAccumulator:
        return InvokeAccumulator()

    def summarize(self, body: object) -> ResponseSummary:
        if not isinstance(body, dict):
            return ResponseSummary()
        if body.get("type") in ("message", "error") or "content" in body:
            return MESSAGES.summarize(body)
        if isinstance(body.get("output"), dict):  # Amazon Nova: the Converse shape
            return CONVERSE.summarize(body)
        s = ResponseSummary()
        _other_model(s, body, stream=False)
        s.completed = True
        return s

    def last_prompt(self, body: object) -> str | None:
        if isinstance(body, dict) and isinstance(text := body.get("prompt")
                                                 or body.get("inputText"), str):
            return text or None
        return MESSAGES.last_prompt(body)


# -- Converse ------------------------------------------------------------------------------------


def _converse_event(headers: Mapping[str, object], payload: bytes) -> RawEvent | None:
    if headers.get(":message-type") != "event":
        return exception_event(headers, payload)
    name = headers.get(":event-type")
    return (name if isinstance(name, str) else None), payload, None


def _converse_usage(s: ResponseSummary, usage: dict) -> None:
    for attr, key in (("input_tokens", "inputTokens"), ("output_tokens", "outputTokens"),
                      ("cache_read_tokens", "cacheReadInputTokens"),
                      ("cache_write_tokens", "cacheWriteInputTokens")):
        if n := _n(usage.get(key)):
            setattr(s, attr, n)


class ConverseAccumulator(StreamAccumulator):
    """Converse stream events, named by their `:event-type` header."""

    def _handle(self, name: str | None, obj: dict) -> None:
        s = self._summary
        if name == "contentBlockDelta":
            delta = _d(obj.get("delta"))
            key = (_idx(obj.get("contentBlockIndex")),)
            if isinstance(text := delta.get("text"), str):
                self._output()
                s.text_chars += len(text)
                if self._assembly is not None:
                    self._assembly.add(("text", key[0]), text)
                return
            if self._assembly is not None and isinstance(
                    thinking := _d(delta.get("reasoningContent")).get("text"), str):
                self._assembly.add(("thinking", key[0]), thinking)
            if isinstance(tool := delta.get("toolUse"), dict):
                self._output()
                self._append_args(key, _text(tool.get("input")))
            elif delta:
                self._output()  # reasoning and other output
        elif name == "contentBlockStart":
            tool = _d(_d(obj.get("start")).get("toolUse"))
            if tool:
                self._start_tool((_idx(obj.get("contentBlockIndex")),),
                                 ToolCall(_s(tool.get("toolUseId")) or "",
                                          _s(tool.get("name")) or "", ""))
        elif name == "messageStop":
            s.stop_reason = _s(obj.get("stopReason")) or s.stop_reason
            s.completed = True
        elif name == "metadata":
            _converse_usage(s, _d(obj.get("usage")))
        elif name == "error" or obj.get("type") == "error":
            error = _d(obj.get("error"))
            _set_error(s, _s(error.get("message")), _s(error.get("type")))


def _converse_text(content: object) -> str | None:
    texts = [block["text"] for block in _list(content)
             if isinstance(block, dict) and isinstance(block.get("text"), str)]
    return texts[-1] if texts else None


class Converse(_BedrockWire):
    name = "converse"
    title = "Amazon Bedrock Converse"
    path = "/model/{modelId}/converse"
    _actions = frozenset({"converse", "converse-stream"})

    def stream_parser(self) -> StreamParser:
        return EventStreamParser(_converse_event)

    def correlating_tool_call_id(self, body: dict) -> str | None:
        for block in reversed(_list(_last(body.get("messages")).get("content"))):
            result = _d(_d(block).get("toolResult"))
            if tool_id := _s(result.get("toolUseId")):
                return tool_id
        return None

    def accumulator(self) -> ConverseAccumulator:
        return ConverseAccumulator()

    def summarize(self, body: object) -> ResponseSummary:
        s = ResponseSummary()
        if not isinstance(body, dict):
            return s
        for block in _list(_d(_d(body.get("output")).get("message")).get("content")):
            block = _d(block)
            if isinstance(text := block.get("text"), str):
                s.text_chars += len(text)
            elif isinstance(tool := block.get("toolUse"), dict):
                s.tool_calls.append(ToolCall(_s(tool.get("toolUseId")) or "",
                                             _s(tool.get("name")) or "",
                                             _dumps(tool.get("input", {}))))
        s.stop_reason = _s(body.get("stopReason"))
        _converse_usage(s, _d(body.get("usage")))
        s.completed = True
        return s

    def last_prompt(self, body: object) -> str | None:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages or _role(messages[-1]) != "user":
            return None
        return _converse_text(messages[-1].get("content"))


INVOKE = Invoke()
CONVERSE = Converse()

# Bedrock API keys (`AWS_BEARER_TOKEN_BEDROCK`) travel as a bearer token; a SigV4 signature is
# the whole Authorization header (with X-Amz-Date and X-Amz-Security-Token beside it).
BEARER = CredentialSlot("Authorization", bearer=True)
SIGNATURE = CredentialSlot("Authorization")
SIGV4_SCHEME = "AWS4-HMAC-SHA256"


class BedrockApi(ProviderApi):
    """Amazon Bedrock's runtime: central AWS credentials sign each request (SigV4, see
    upstream.sigv4) unless central Bedrock API keys are configured, which go as bearer tokens."""

    type = "bedrock"
    apis = (INVOKE, CONVERSE)
    credential = BEARER
    errors = AWS_ERRORS
    base_path = ""
    passthrough = ("/",)
    signs = "bedrock"
    slash_escapes = True  # model ARNs
    prices_id = "aws"  # genai-prices' Bedrock table
    input_includes_cache = False  # Anthropic's convention, and Converse's

    def region_of(self, host: str | None) -> str | None:
        return region_of(host)

    def client_credential(self, headers: Headers) -> tuple[CredentialSlot, str] | None:
        value = headers.get("authorization", "").strip()
        if value.startswith(SIGV4_SCHEME + " "):
            return SIGNATURE, value  # passed on untouched (credentials = "byok")
        token = parse_bearer(value)
        return (BEARER, token) if token else None


BEDROCK = BedrockApi()

_REGION = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")


def region_of(host: str | None) -> str | None:
    """The AWS region a Bedrock runtime host name is in, if it is one."""
    found = _REGION.fullmatch(host.lower().rstrip(".")) if host else None
    return found[1] if found else None
