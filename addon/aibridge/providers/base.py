"""The provider interface: what the bridge needs to know about one provider API.

Two levels, as providers are built:

- `WireApi`: one wire format (OpenAI Chat Completions, OpenAI Responses, Anthropic Messages, ...):
  which requests it bridges, the facts a request carries, how its answers stream and summarise,
  the user's prompt, the text a viewer assembles, the event a broken stream ends with.
- `ProviderApi`: one provider's API as a whole (OpenAI, Anthropic, ...): its wire formats, where
  a credential goes, the shape of its errors, its default paths and its token conventions.

Nothing outside the modules that implement these branches on a provider or a route: the hooks,
admission steps, recording and views call these methods.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl

from mitmproxy.http import Headers

from aibridge.errors.envelope import ErrorShape
from aibridge.providers.jsonfields import UNKNOWN_MODEL, _s, capped_model
from aibridge.providers.stream import StreamAccumulator
from aibridge.providers.texts import TextSlot, strings
from aibridge.providers.tooluse import ToolWire
from aibridge.sse import RawEvent, SSEEvent, SSEParser
from aibridge.summary import ResponseSummary

NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class StreamParser(Protocol):
    """A stream's framing, read incrementally: `sse.SSEParser`, `eventstream.EventStreamParser`."""

    overflowed: bool

    def feed_raw(self, data: bytes) -> list[RawEvent]: ...
    def flush_raw(self) -> list[RawEvent]: ...


@dataclass(frozen=True)
class RequestInfo:
    model: str
    streaming: bool
    correlating_tool_call_id: str | None

    def __post_init__(self) -> None:
        # Whatever API read it: the name reaches records, breaker keys, logs and metric labels.
        object.__setattr__(self, "model", capped_model(self.model))


class WireApi(ABC):
    """One provider API wire format. Instances are stateless and shared."""

    name: ClassVar[str]  # the route kind in records and flow metadata: "chat", "messages", ...
    title: ClassVar[str]  # for people: "OpenAI Chat Completions"
    path: ClassVar[str]  # the POST path it bridges, below the base path (see `match`)
    websocket: ClassVar[bool] = False  # also spoken over a WebSocket, one event per frame
    # A request body without a Content-Type is JSON (Bedrock's InvokeModel default).
    untyped_json: ClassVar[bool] = False
    # The media type of its streamed answers; `stream_parser` reads their framing.
    stream_content_type: ClassVar[str] = "text/event-stream"

    def match(self, method: str, path: str) -> Mapping[str, str] | None:
        """Parameters taken from the path (e.g. a model) when this API bridges `method` `path`,
        else None. `path` is below the provider's base path, without the query. The default
        bridges `POST <path>` and takes nothing from it; an API with the model in its path
        overrides this (and `request_info`)."""
        return NO_PARAMS if method == "POST" and path == self.path else None

    def request_info(self, body: object, params: Mapping[str, str] = NO_PARAMS) -> RequestInfo:
        """Model, streaming flag and the tool-call id whose results this request submits.

        `stream` must be JSON `true`: a string "true" or 1 would make the upstream answer with
        JSON while we expected SSE (or the reverse)."""
        if not isinstance(body, dict):
            return RequestInfo(UNKNOWN_MODEL, False, None)
        return RequestInfo(_s(body.get("model")) or UNKNOWN_MODEL, body.get("stream") is True,
                           self.correlating_tool_call_id(body))

    def streams(self, content_type: str) -> bool:
        """Whether an answer of this media type is this API's stream (tapped as it passes)."""
        return content_type.lower().startswith(self.stream_content_type)

    def stream_parser(self) -> StreamParser:
        """A new parser for one streamed answer's framing: SSE unless the API says otherwise
        (Bedrock's AWS event-stream)."""
        return SSEParser()

    @abstractmethod
    def correlating_tool_call_id(self, body: dict) -> str | None:
        """The id of the tool call whose result this request submits, if it does."""

    @abstractmethod
    def accumulator(self) -> StreamAccumulator:
        """A new accumulator for one streamed response."""

    @abstractmethod
    def summarize(self, body: object) -> ResponseSummary:
        """Summary of a non-streaming 2xx JSON response; `completed` unless it carries an error."""

    @abstractmethod
    def last_prompt(self, body: object) -> str | None:
        """The user's last prompt in a request body; None when there is none."""

    def assembled_text(self, events: list[SSEEvent]) -> dict[str, str]:
        """The streamed output put back together for viewers: "text", "thinking", "refusal".

        The one definition is the API's accumulator collecting the text as it reads the events
        (`StreamAccumulator.collect_text`), as the stream tap does for secret scanning."""
        accumulator = self.accumulator()
        accumulator.collect_text(limit=None)  # the events are in memory already
        for event in events:
            accumulator.feed(event)
        return accumulator.assembled()

    @abstractmethod
    def recognises(self, name: str | None, obj: object, data: str) -> int:
        """How surely one stream event is this API's: 2 sure, 1 a hint, 0 no sign. Used to
        recognise streams the bridge did not handle (`obj` is the parsed data, or None)."""

    def socket_frame_end(self, frame: dict[str, Any]) -> tuple[bool, str | None] | None:
        """For an API spoken over a WebSocket (`websocket`): None while `frame` (a server frame,
        parsed) does not end the response it answers; else (completed, error message)."""
        return None

    def stream_error_tail(self, body: dict[str, Any]) -> bytes:
        """The terminal event a client reads when this API's stream breaks mid-way."""
        data = json.dumps(body, separators=(",", ":"))
        return f"event: error\ndata: {data}\n\n".encode()

    def texts(self, body: dict) -> Iterator[TextSlot]:
        """Every text the request carries to the provider, each replaceable in place (secret
        scanning reads and redacts them; see providers.texts). The default is every string in
        the body; an API module names its fields (system prompt, messages, tool results,
        tool-call arguments) so that findings say where they are."""
        return strings(body, "request field")

    def tool_wire(self) -> ToolWire | None:
        """How this API offers the bridge's own tools (MCP) and hides their calls
        (providers/tooluse.py); None: the bridge offers none on it."""
        return None


@dataclass(frozen=True)
class CredentialSlot:
    """Where a provider credential travels: a header, as `Bearer <key>` or the bare key. The
    bridge sets it and scrubs it from flows and logs.

    `query` names a URL query parameter clients may send the credential in instead (Gemini's
    `?key=`). It is read there (`ProviderApi.query_credential`) but never forwarded: the
    credential goes upstream in the header, and the parameter is removed from the request
    target, so a key in a URL reaches no provider log, flow, view or record."""

    name: str
    bearer: bool = False
    query: str | None = None

    def value(self, secret: str) -> str:
        return f"Bearer {secret}" if self.bearer else secret


class ProviderApi(ABC):
    """One provider's API: its wire formats and everything they share."""

    type: ClassVar[str]  # the `type` of a provider in the configuration
    apis: ClassVar[tuple[WireApi, ...]]
    credential: ClassVar[CredentialSlot]  # where central keys go
    errors: ClassVar[ErrorShape]  # how bridge-made errors look on this provider's routes
    base_path: ClassVar[str] = "/v1"
    passthrough: ClassVar[tuple[str, ...]] = ("/",)  # below base_path: forwarded with the key swap
    extra_passthrough: ClassVar[tuple[str, ...]] = ()  # absolute: the clients' side endpoints
    # Usage convention: whether `input_tokens` already counts cached tokens.
    input_includes_cache: ClassVar[bool] = True
    # A header the provider takes from configuration only (billing isolation), never the client.
    workspace_header: ClassVar[str | None] = None
    # Path parameters may hold an escaped slash (`%2F`), kept as it is (providers.paths).
    slash_escapes: ClassVar[bool] = False
    # The AWS service name when central AWS credentials sign requests (SigV4, Bedrock's
    # "bedrock"); None for APIs that take keys only.
    signs: ClassVar[str | None] = None
    # Only the callers' own credentials (GitHub Copilot tokens): no central keys.
    byok_only: ClassVar[bool] = False
    # The genai-prices provider to price with when no host of the provider names one.
    prices_id: ClassVar[str | None] = None

    @abstractmethod
    def client_credential(self, headers: Headers) -> tuple[CredentialSlot, str] | None:
        """The caller's own credential (where it was, the secret), if it sent one."""

    def key_status(self, status: int, body: bytes | None) -> int:
        """The upstream status as the key pool reads it (401/403: the key was refused, 429: it
        is rate-limited). `body` is the decoded error body of a 400 or 429, else None. Most
        APIs say it with the status; one that refuses a key otherwise maps it here."""
        return status

    def query_credential(self, query: str) -> tuple[CredentialSlot, str] | None:
        """The caller's own credential in the URL query (`credential.query`), if it sent one
        there; consulted when the headers carry none. `query` is the raw query string."""
        name = self.credential.query
        if not name or not query:
            return None
        for key, value in parse_qsl(query, keep_blank_values=False):
            if key == name and value.strip():
                return self.credential, value.strip()
        return None

    def region_of(self, host: str | None) -> str | None:
        """The region a host of this API names, for APIs whose requests are signed (SigV4)."""
        return None

    def bridged(self, method: str, path: str) -> tuple[WireApi, Mapping[str, str]] | None:
        """The wire format that bridges `method` `path` (below base_path, no query)."""
        for api in self.apis:
            params = api.match(method, path)
            if params is not None:
                return api, params
        return None

    def websocket_api(self, path: str) -> WireApi | None:
        """The wire format a WebSocket handshake on `path` (below base_path) opens."""
        for api in self.apis:
            if api.websocket and api.match("POST", path) is not None:
                return api
        return None
