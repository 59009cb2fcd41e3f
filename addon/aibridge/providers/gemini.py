"""The Google Gemini API (`generativelanguage.googleapis.com`): `generateContent` and
`streamGenerateContent` under `/v1beta` (and `/v1`, `/v1alpha`), on `models/{model}` or
`tunedModels/{model}`; everything else (`countTokens`, `models`, `embedContent`, files, cached
contents) passes through with the key swap.

- The model comes from the path (`/v1beta/models/gemini-2.5-flash:streamGenerateContent`); the
  answer names the model that served it in `modelVersion`.
- Streams are SSE with `alt=sse` (what the Google SDKs and Gemini CLI ask for), else one JSON
  array sent element by element (`providers.json_stream`). Every element, and a whole
  `generateContent` answer, is a `GenerateContentResponse`, read by the same code.
- The credential is the `x-goog-api-key` header or the `key=` query parameter. Central keys go in
  the header; a client's `key=` is read (auto and byok modes) and removed from the URL.
- Tool calls are `functionCall` parts (whole, never split across chunks; `id` when the model
  gives one); the correlating id is that of the last `functionResponse` part of the request.
- An invalid key is a 400 (`API_KEY_INVALID`), not a 401: `key_status` tells the key pool.

Token convention (`aibridge.summary`): `input_tokens` = promptTokenCount (cached tokens
included) + toolUsePromptTokenCount; `cache_read_tokens` = cachedContentTokenCount;
`output_tokens` = candidatesTokenCount + thoughtsTokenCount (thoughts are billed as output),
with the thoughts also kept as the extra `output_reasoning`, as OpenAI's reasoning tokens are.
Every streamed chunk carries the usage so far: the last one seen wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from mitmproxy.http import Headers

from aibridge.errors.shapes import GOOGLE_ERRORS
from aibridge.intercept import parse_bearer
from aibridge.providers.assembly import TextAssembly
from aibridge.providers.base import NO_PARAMS, CredentialSlot, ProviderApi, RequestInfo, WireApi
from aibridge.providers.json_stream import GeminiStreamParser
from aibridge.providers.jsonfields import (
    UNKNOWN_MODEL,
    _d,
    _dumps,
    _idx,
    _list,
    _n,
    _put_extra,
    _s,
    _set_error,
)
from aibridge.providers.stream import StreamAccumulator
from aibridge.summary import ResponseSummary, ToolCall

# `/v1beta/models/gemini-2.5-flash:generateContent`; the model id is one path segment.
_ROUTE = re.compile(r"/(v1|v1beta|v1alpha)/(models|tunedModels)/([^/:]+):"
                    r"(generateContent|streamGenerateContent)")
_STREAM = "streamGenerateContent"


def _usage(s: ResponseSummary, usage: dict) -> None:
    """Apply `usageMetadata`; a later chunk's counts replace the earlier ones."""
    prompt = _n(usage.get("promptTokenCount")) + _n(usage.get("toolUsePromptTokenCount"))
    thoughts = _n(usage.get("thoughtsTokenCount"))
    output = _n(usage.get("candidatesTokenCount")) + thoughts
    if prompt:
        s.input_tokens = prompt
    if output:
        s.output_tokens = output
    if cached := _n(usage.get("cachedContentTokenCount")):
        s.cache_read_tokens = cached
    _put_extra(s, "output_reasoning", thoughts)
    _put_extra(s, "tool_use_prompt", usage.get("toolUsePromptTokenCount"))


def _error(s: ResponseSummary, error: dict) -> None:
    code = error.get("code")
    _set_error(s, _s(error.get("message")),
               _s(error.get("status")) or (str(code) if type(code) is int else None))


def _function_call(part: dict) -> ToolCall | None:
    call = part.get("functionCall")
    if not isinstance(call, dict):
        return None
    return ToolCall(_s(call.get("id")) or "", _s(call.get("name")) or "",
                    _dumps(call.get("args", {})))


def _read(s: ResponseSummary, obj: dict, on_output: Any = None,
          assembly: TextAssembly | None = None) -> None:
    """One `GenerateContentResponse` (a whole answer or one streamed chunk) into `s`, its
    output text (thought parts as "thinking") into `assembly` if given."""
    if isinstance(error := obj.get("error"), dict):
        _error(s, error)
        if assembly is not None and "candidates" in obj:  # text beside an error is output
            _read(ResponseSummary(), {k: v for k, v in obj.items() if k != "error"}, None,
                  assembly)
        return
    s.model = _s(obj.get("modelVersion")) or s.model
    s.response_id = _s(obj.get("responseId")) or s.response_id
    for candidate in _list(obj.get("candidates")):
        candidate = _d(candidate)
        for part in _list(_d(candidate.get("content")).get("parts")):
            part = _d(part)
            text = part.get("text")
            if isinstance(text, str):
                if on_output is not None and text:
                    on_output()
                if not part.get("thought"):
                    s.text_chars += len(text)
                    if assembly is not None and text:
                        assembly.add(("text", _idx(candidate.get("index"))), text)
                elif assembly is not None and text:
                    assembly.add(("thinking", _idx(candidate.get("index"))), text)
            elif (call := _function_call(part)) is not None:
                if on_output is not None:
                    on_output()
                s.tool_calls.append(call)
        if finish := _s(candidate.get("finishReason")):
            s.stop_reason = finish
            s.completed = True
    block = _s(_d(obj.get("promptFeedback")).get("blockReason"))
    if block:  # the prompt was refused: an answer with no candidates, complete as it is
        s.stop_reason = block
        s.completed = True
    if isinstance(usage := obj.get("usageMetadata"), dict):
        _usage(s, usage)


class GenerateContentAccumulator(StreamAccumulator):
    """Chunks without event names, each a `GenerateContentResponse`."""

    def _handle(self, name: str | None, obj: dict) -> None:
        _read(self._summary, obj, self._output, self._assembly)


class GenerateContent(WireApi):
    """`models/{model}:generateContent`, answered with one JSON body (or an SSE stream when a
    client asks `alt=sse` of it)."""

    name = "generate_content"
    title = "Gemini generateContent"
    path = ":generateContent"
    method = "generateContent"

    def match(self, method: str, path: str) -> Mapping[str, str] | None:
        found = _ROUTE.fullmatch(path) if method == "POST" else None
        if found is None or found[4] != self.method:
            return None
        return MappingProxyType({"model": found[3], "version": found[1]})

    def request_info(self, body: object, params: Mapping[str, str] = NO_PARAMS) -> RequestInfo:
        correlating = self.correlating_tool_call_id(body) if isinstance(body, dict) else None
        return RequestInfo(params.get("model") or UNKNOWN_MODEL, self.method == _STREAM,
                           correlating)

    def correlating_tool_call_id(self, body: dict) -> str | None:
        # The results of a turn come back together in the last content; any one id links them.
        contents = _list(body.get("contents"))
        for part in reversed(_list(_d(contents[-1]).get("parts")) if contents else []):
            response = _d(part).get("functionResponse")
            if isinstance(response, dict) and (call_id := _s(response.get("id"))):
                return call_id
        return None

    def accumulator(self) -> GenerateContentAccumulator:
        return GenerateContentAccumulator()

    def summarize(self, body: object) -> ResponseSummary:
        s = ResponseSummary()
        if isinstance(body, list):  # a whole JSON-array stream read at once
            for element in body:
                if isinstance(element, dict):
                    _read(s, element)
            return s
        if not isinstance(body, dict):
            return s
        _read(s, body)
        if s.error is None:
            s.completed = True
        return s

    def last_prompt(self, body: object) -> str | None:
        # The last user turn with text; tool results (functionResponse parts) are not prompts.
        contents = body.get("contents") if isinstance(body, dict) else None
        if not isinstance(contents, list):
            return None
        for content in reversed(contents):
            if not isinstance(content, dict) or content.get("role", "user") != "user":
                continue
            texts = [part["text"] for part in _list(content.get("parts"))
                     if isinstance(part, dict) and isinstance(part.get("text"), str)
                     and not part.get("thought")]
            if texts:
                return texts[-1] or None
        return None

    def recognises(self, name: str | None, obj: object, data: str) -> int:
        if isinstance(obj, dict) and (isinstance(obj.get("candidates"), list)
                                      or isinstance(obj.get("usageMetadata"), dict)):
            return 2
        return 0

    def stream_error_tail(self, body: dict[str, Any]) -> bytes:
        # Gemini's SSE has no event names: an error is a data line like any chunk.
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


class StreamGenerateContent(GenerateContent):
    """`models/{model}:streamGenerateContent`: SSE with `alt=sse`, else a JSON array."""

    name = "stream_generate_content"
    title = "Gemini streamGenerateContent"
    path = ":streamGenerateContent"
    method = _STREAM

    def streams(self, content_type: str) -> bool:
        return super().streams(content_type) or content_type.lower().startswith(
            "application/json")

    def stream_parser(self) -> GeminiStreamParser:
        return GeminiStreamParser()


GENERATE_CONTENT = GenerateContent()
STREAM_GENERATE_CONTENT = StreamGenerateContent()
_API_KEY = CredentialSlot("x-goog-api-key", query="key")
_BEARER = CredentialSlot("Authorization", bearer=True)


class GeminiApi(ProviderApi):
    type = "gemini"
    apis = (GENERATE_CONTENT, STREAM_GENERATE_CONTENT)
    credential = _API_KEY
    errors = GOOGLE_ERRORS
    base_path = ""  # the version is part of each route: /v1beta/..., /v1/...
    prices_id = "google"

    def key_status(self, status: int, body: bytes | None) -> int:
        # Google refuses a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
        if status == 400 and body and b"API_KEY_INVALID" in body:
            return 401
        return status

    def client_credential(self, headers: Headers) -> tuple[CredentialSlot, str] | None:
        # An API key, else an OAuth access token (Vertex-style clients), passed on as BYOK.
        api_key = headers.get("x-goog-api-key", "").strip()
        if api_key:
            return _API_KEY, api_key
        token = parse_bearer(headers.get("authorization"))
        return (_BEARER, token) if token else None


GEMINI = GeminiApi()
