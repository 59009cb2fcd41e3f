"""A scriptable fake LLM provider (OpenAI + Anthropic shapes) for end-to-end tests and benchmarks.

The fake is the upstream of a real ``mitmdump`` running the AI Bridge addon. It speaks HTTP/1.1
(plain or TLS) on 127.0.0.1 from an asyncio server that lives in its own daemon thread with its
own event loop, so sync and async tests can drive it alike. Every request is recorded as a
:class:`Seen`; replies are the realistic defaults of the real APIs unless a test scripts one with
:meth:`FakeProvider.enqueue`. The Responses API also answers over WebSocket (``GET
/v1/responses`` or ``/backend-api/codex/responses`` with an upgrade), scripted separately with
:meth:`FakeProvider.enqueue_ws`; the handshake and framing use websockets' sans-I/O
``ServerProtocol`` on the same asyncio streams.

The HTTP handling is a small hand-written parser on asyncio streams rather than h11: the fake
only needs request heads, Content-Length/chunked bodies and ``Expect: 100-continue``, and doing
it directly keeps the per-request cost low for the benchmark.

Usable from the project root as ``from tests.fakeprovider import FakeProvider`` and from scripts
after inserting the project root into ``sys.path``.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import hmac
import http
import json
import logging
import os
import random
import re
import ssl
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Self
from urllib.parse import parse_qs, unquote

import brotli
import trustme
import zstandard
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

log = logging.getLogger(__name__)

ENCODINGS = frozenset({"gzip", "br", "zstd", "deflate"})
TEXT = "Hello from fake"
# The streamed form of TEXT: three deltas, as the brief for the e2e tests expects.
DELTAS = ("Hello", " from", " fake")
# Upper bound for a request head; larger heads get 431 (mirrors common server limits).
MAX_HEAD = 64 * 1024
# Paths that accept a WebSocket upgrade for the Responses API: the platform API and the
# ChatGPT-sign-in backend Codex uses.
WS_PATHS = frozenset({"/v1/responses", "/backend-api/codex/responses"})


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str  # request target including the query string
    headers: list[tuple[str, str]]  # wire order and spelling
    body: bytes
    conn: int = 0  # 1-based number of the connection it arrived on (keep-alive checks)

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive; None when absent."""
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    def header_all(self, name: str) -> list[str]:
        """All values of a header in wire order, case-insensitive."""
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Reply:
    """A scripted reply.

    ``events`` (SSE) wins over ``body``. ``gate`` only applies to SSE: the fake pauses after the
    first event until the gate is set (or ``gate_timeout`` passes, which it records in
    ``FakeProvider.gate_timed_out``). Framing headers (Content-Length, Transfer-Encoding) are
    always computed by the fake; any other default header (Content-Type, request ids) is
    replaced when ``headers`` names it.
    """

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | str | dict | list | None = None  # dict/list => JSON
    events: list[str | bytes] | None = None  # raw SSE event texts, one chunk each
    gate: threading.Event | None = None
    gate_timeout: float = 10.0
    delay: float = 0.0  # seconds before the response headers
    close_after_events: int | None = None  # abort the connection after this many events
    never_respond: bool = False
    encoding: str | None = None  # Content-Encoding to apply: gzip, br, zstd or deflate
    abort: bool = False  # after ``delay``, abort the connection instead of answering
    event_delay: float = 0.0  # seconds between SSE events (a slow, trickling stream)

    def __post_init__(self) -> None:
        # Fail in the test's thread, not later inside the server loop.
        if self.encoding is not None and self.encoding not in ENCODINGS:
            raise ValueError(f"unsupported encoding {self.encoding!r}; use one of {ENCODINGS}")


WsEvent = dict[str, Any] | str | bytes


@dataclass
class WsReply:
    """A scripted answer on the Responses WebSocket (see :meth:`FakeProvider.enqueue_ws`).

    Either a reply to one ``response.create`` frame: ``events`` (dicts are sent as JSON text
    frames, ``str`` as raw text frames, ``bytes`` as binary frames; None means the default
    sequence), ``close_after`` (abort the TCP connection after that many events, no close
    frame; 0 aborts before the first) and ``gate`` (pause after the first event until set, or
    until ``gate_timeout``, recorded in ``FakeProvider.gate_timed_out``).

    Or, with ``reject_status``, a refusal of the next upgrade request: that HTTP status with
    ``reject_body`` (dict/list => JSON; None => an OpenAI-shaped error) and ``reject_headers``,
    no upgrade. The two kinds wait in separate FIFO queues.
    """

    events: list[WsEvent] | None = None
    close_after: int | None = None
    reject_status: int | None = None
    reject_body: bytes | str | dict | list | None = None
    reject_headers: list[tuple[str, str]] = field(default_factory=list)
    gate: threading.Event | None = None
    gate_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.reject_status is not None and (
            self.events is not None or self.close_after is not None or self.gate is not None
        ):
            raise ValueError("reject_status refuses the upgrade: no events/close_after/gate")
        if self.reject_status is not None and self.reject_status < 200:
            raise ValueError("reject_status must be a final status (>= 200)")


def ws_error(
    message: str = "fake error",
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    status: int | None = 400,
    param: str | None = None,
) -> dict[str, Any]:
    """An ``error`` event as the Responses WebSocket sends it, for ``WsReply.events``."""
    error = {"type": type, "code": code, "message": message, "param": param}
    frame: dict[str, Any] = {"type": "error", "error": error}
    if status is not None:
        frame["status"] = status
    return frame


class _BadRequest(Exception):
    """A malformed request: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def tls_context_for(hostnames: list[str]) -> tuple[ssl.SSLContext, str]:
    """Create a trustme CA and a server certificate for ``hostnames`` (names or IPs).

    Returns the server-side SSL context (ALPN pinned to http/1.1, as the fake speaks nothing
    else) and the path of a temporary PEM file with the CA certificate, removed at exit.
    """
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hostnames).configure_cert(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    fd, path = tempfile.mkstemp(prefix="fakeprovider-ca-", suffix=".pem")
    os.close(fd)
    ca.cert_pem.write_to_path(path)
    atexit.register(_unlink_quietly, path)
    return ctx, path


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _compressor(encoding: str) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    """(compress one piece and flush it, finish the stream) for a Content-Encoding.

    Flushing after every piece makes each SSE event decodable by the client as it arrives.
    """
    if encoding in ("gzip", "deflate"):
        # wbits 31 = gzip container; 15 = zlib container, which is what HTTP "deflate" means.
        z = zlib.compressobj(wbits=31 if encoding == "gzip" else 15)
        return (lambda data: z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)), z.flush
    if encoding == "br":
        b = brotli.Compressor()
        return (lambda data: b.process(data) + b.flush()), b.finish
    zc = zstandard.ZstdCompressor().compressobj()
    return (lambda data: zc.compress(data) + zc.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)), zc.flush


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _sse(obj: dict[str, Any], event: str | None = None) -> str:
    """One SSE frame: Anthropic/Responses style with an event line, chat style without."""
    if event is None:
        return f"data: {_dumps(obj)}\n\n"
    return f"event: {event}\ndata: {_dumps(obj)}\n\n"


# --- default replies ----------------------------------------------------------------------------
# Each builder gets the request number (for ids), the parsed JSON body ({} if none) and the query
# string, and returns a Reply that goes through the same sender as scripted replies.

RouteBuilder = Callable[[int, dict[str, Any], str], Reply]


def _chat(n: int, req: dict[str, Any], _query: str) -> Reply:
    model = req.get("model") or "gpt-4o"
    base = {
        "id": f"chatcmpl-fake{n}",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "service_tier": "default",
    }
    usage = {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    if req.get("stream") is not True:
        message = {"role": "assistant", "content": TEXT, "refusal": None, "annotations": []}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        body = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return Reply(body=body)

    opts = req.get("stream_options")
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    chunk = {**base, "object": "chat.completion.chunk"}
    if include_usage:
        chunk["usage"] = None  # the real API puts "usage": null on every chunk in this mode

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**chunk, "choices": [c]}

    events = [_sse(choice({"role": "assistant", "content": "", "refusal": None}))]
    events += [_sse(choice({"content": d})) for d in DELTAS]
    events.append(_sse(choice({}, "stop")))
    if include_usage:
        events.append(_sse({**chunk, "choices": [], "usage": usage}))
    events.append("data: [DONE]\n\n")
    return Reply(events=events)


def _responses_done(n: int, req: dict[str, Any]) -> dict[str, Any]:
    """The completed Responses object (non-streaming body and payload of response.completed)."""
    part = {"type": "output_text", "text": TEXT, "annotations": [], "logprobs": []}
    item = {
        "id": f"msg_fake{n}",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    return {
        "id": f"resp_fake{n}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": None,
        "model": req.get("model") or "gpt-4o",
        "output": [item],
        "parallel_tool_calls": True,
        "previous_response_id": req.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": 3},
            "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 18,
        },
        "user": None,
        "metadata": {},
    }


def responses_events(n: int, req: dict[str, Any]) -> list[dict[str, Any]]:
    """The default Responses stream as JSON objects, each with ``type`` and ``sequence_number``.

    The SSE route wraps each in an ``event:``/``data:`` frame; the WebSocket route sends each as
    one text frame, so both transports say the same. ``n`` makes the ids (``resp_fake<n>``,
    ``msg_fake<n>``); ``model``, ``instructions`` and ``previous_response_id`` are echoed from
    ``req``. Public so tests can script variations of the default sequence.
    """
    done = _responses_done(n, req)
    if req.get("generate") is False:
        # A warm-up (Codex sends one before each turn): the response is created and completed
        # at once, with no output and no usage.
        empty = {**done, "output": [], "usage": None}
        return [{**p, "sequence_number": i} for i, p in enumerate([
            {"type": "response.created", "response": {**empty, "status": "in_progress"}},
            {"type": "response.completed", "response": empty}])]
    item = done["output"][0]
    part = item["content"][0]
    pending = {**done, "status": "in_progress", "output": [], "usage": None}
    at = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    payloads: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **at, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **at, "delta": d, "logprobs": []} for d in DELTAS),
        {"type": "response.output_text.done", **at, "text": TEXT, "logprobs": []},
        {"type": "response.content_part.done", **at, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ]
    return [{**p, "sequence_number": i} for i, p in enumerate(payloads)]


def _responses(n: int, req: dict[str, Any], _query: str) -> Reply:
    if req.get("stream") is not True:
        return Reply(body=_responses_done(n, req))
    return Reply(events=[_sse(p, p["type"]) for p in responses_events(n, req)])


def _messages(n: int, req: dict[str, Any], _query: str) -> Reply:
    message = {
        "id": f"msg_fake{n}",
        "type": "message",
        "role": "assistant",
        "model": req.get("model") or "claude-sonnet-4-5",
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 11,
            "output_tokens": 7,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 2,
        },
    }
    if req.get("stream") is not True:
        return Reply(body=message)

    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    payloads: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}
            for d in DELTAS
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    ]
    return Reply(events=[_sse(p, p["type"]) for p in payloads])


def _embeddings(_n: int, req: dict[str, Any], _query: str) -> Reply:
    # Three dimensions per input; base64 is little-endian float32, as the SDK asks by default.
    inputs = req.get("input")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    vector = [0.25, -0.5, 1.0]
    blob = base64.b64encode(struct.pack("<3f", *vector)).decode()
    data = [{"object": "embedding", "index": i,
             "embedding": blob if req.get("encoding_format") == "base64" else vector}
            for i in range(len(inputs))]
    tokens = 5 * len(inputs)
    return Reply(body={"object": "list", "data": data,
                       "model": req.get("model") or "text-embedding-3-small",
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _count_tokens(_n: int, _req: dict[str, Any], _query: str) -> Reply:
    return Reply(body={"input_tokens": 11})


def _models(_n: int, _req: dict[str, Any], _query: str) -> Reply:
    # Fields of both the OpenAI and Anthropic model list shapes, so either SDK parses it.
    created = 1_700_000_000
    ids = [("gpt-4o", "openai"), ("claude-sonnet-4-5", "anthropic")]
    data = [
        {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": owner,
            "type": "model",
            "display_name": model_id,
            "created_at": "2023-11-14T22:13:20Z",
        }
        for model_id, owner in ids
    ]
    return Reply(
        body={
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        }
    )


@lru_cache(maxsize=64)
def _bench_events(count: int, size: int) -> tuple[bytes, ...]:
    """``count`` chat-style events of ``size`` bytes each (padded; never below the bare frame).

    Built once per shape so a benchmark request costs little more than the writes.
    """

    def frame(i: int) -> bytes:
        head = f'data: {{"i":{i},"p":"'
        return (head + "x" * max(0, size - len(head) - 4) + '"}\n\n').encode()

    return tuple(frame(i) for i in range(count))


def _bench_sse(_n: int, _req: dict[str, Any], query: str) -> Reply:
    params = parse_qs(query)
    count = int(params.get("events", ["100"])[0])
    size = int(params.get("size", ["100"])[0])
    return Reply(events=list(_bench_events(count, size)))


_BENCH_SMALL = b'{"ok":true,"bench":1}'


def _bench_small(_n: int, _req: dict[str, Any], _query: str) -> Reply:
    return Reply(body=_BENCH_SMALL)


ROUTES: dict[tuple[str, str], RouteBuilder] = {
    ("POST", "/v1/chat/completions"): _chat,
    ("POST", "/v1/responses"): _responses,
    ("POST", "/v1/messages"): _messages,
    ("POST", "/v1/messages/count_tokens"): _count_tokens,
    ("POST", "/v1/embeddings"): _embeddings,
    ("GET", "/v1/models"): _models,
    ("GET", "/bench/sse"): _bench_sse,
    ("POST", "/bench/sse"): _bench_sse,
    ("GET", "/bench/small"): _bench_small,
    ("POST", "/bench/small"): _bench_small,
}


def _not_found(path: str) -> Reply:
    error = {"message": f"not found: {path}", "type": "not_found_error"}
    return Reply(status=404, body={"error": error})


# --- fault injection ---------------------------------------------------------------------------

# The kinds of fault, in the order a draw is matched against their probabilities.
FAULT_KINDS = ("rate_limit", "server_error", "bad_gateway", "reset", "slow", "trickle", "stall")
FAULT_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages"})
_BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass
class Faults:
    """Opt-in random failures for :class:`FakeProvider` (``FakeProvider(faults=Faults(...))``).

    Each request to one of ``paths`` that would get a *default* reply (scripted replies are
    never touched) draws once from ``rng`` (a ``random.Random(seed)``) and gets at most one
    fault, each with its probability (their sum must be ≤ 1):

    - ``rate_limit``: 429 in the provider's JSON shape with ``retry-after`` (whole seconds drawn
      from ``retry_after``) and a zero ``x-ratelimit-remaining-requests`` /
      ``anthropic-ratelimit-requests-remaining``;
    - ``server_error``: 500 in the provider's JSON shape;
    - ``bad_gateway``: 502 with a CDN's HTML page;
    - ``reset``: streams send the head and ``k`` of their ``n`` events (``0 <= k < n``, so the
      terminal event never arrives) and then abort the connection; other requests are aborted
      without an answer;
    - ``slow``: the normal reply after a first-byte delay drawn from ``slow_delay``;
    - ``trickle``: streams only (else no fault): ``trickle_delay`` seconds between events;
    - ``stall``: no answer at all until the client gives up (``Reply.never_respond``).

    :attr:`counts` says how often each kind (and ``none``) was drawn. The draw happens on the
    fake's event loop thread; read ``counts`` with :meth:`snapshot`.
    """

    rate_limit: float = 0.0
    server_error: float = 0.0
    bad_gateway: float = 0.0
    reset: float = 0.0
    slow: float = 0.0
    trickle: float = 0.0
    stall: float = 0.0
    seed: int | None = None
    retry_after: tuple[int, int] = (1, 3)
    slow_delay: tuple[float, float] = (0.3, 2.0)
    trickle_delay: float = 0.1
    paths: frozenset[str] = FAULT_PATHS
    rng: random.Random = field(init=False, repr=False)
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        probs = [getattr(self, kind) for kind in FAULT_KINDS]
        if any(p < 0 for p in probs) or sum(probs) > 1 + 1e-9:
            raise ValueError(f"fault probabilities must be >= 0 and sum to <= 1: {probs}")
        self.rng = random.Random(self.seed)
        self.counts = dict.fromkeys((*FAULT_KINDS, "none"), 0)
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def draw(self) -> str | None:
        """One draw: the kind of fault for the next request, or None."""
        x = self.rng.random()
        for kind in FAULT_KINDS:
            p = getattr(self, kind)
            if x < p:
                return kind
            x -= p
        return None

    def apply(self, path: str, reply: Reply) -> Reply:
        """``reply`` (the default answer to ``path``) or the fault drawn in its place."""
        if path not in self.paths:
            return reply
        kind = self.draw()
        streaming = reply.events is not None
        if kind == "trickle" and not streaming:
            kind = None
        with self._lock:
            self.counts[kind or "none"] += 1
        anthropic = path == "/v1/messages"
        if kind == "rate_limit":
            seconds = self.rng.randint(*self.retry_after)
            remaining = ("anthropic-ratelimit-requests-remaining" if anthropic
                         else "x-ratelimit-remaining-requests")
            return Reply(status=429, headers=[("retry-after", str(seconds)), (remaining, "0")],
                         body=_fault_error(anthropic, "rate_limit_error", "rate_limit_exceeded",
                                           "Rate limit reached (fake fault)"))
        if kind == "server_error":
            return Reply(status=500, body=_fault_error(anthropic, "api_error", None,
                                                       "Internal server error (fake fault)"))
        if kind == "bad_gateway":
            return Reply(status=502, headers=[("Content-Type", "text/html")],
                         body=_BAD_GATEWAY_HTML)
        if kind == "reset":
            if streaming:
                assert reply.events is not None
                k = self.rng.randrange(len(reply.events))
                return Reply(status=reply.status, headers=reply.headers, events=reply.events,
                             close_after_events=k)
            return Reply(abort=True)
        if kind == "slow":
            reply.delay = self.rng.uniform(*self.slow_delay)
            return reply
        if kind == "trickle":
            reply.event_delay = self.trickle_delay
            return reply
        if kind == "stall":
            return Reply(never_respond=True)
        return reply


def _fault_error(anthropic: bool, type_: str, code: str | None, message: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": type_, "message": message}}
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def tool_call_reply(path: str, name: str, arguments: dict[str, Any], *, stream: bool,
                    call_id: str = "call_fake1", text: str | None = None) -> Reply:
    """An answer that calls the tool ``name`` (after saying ``text``, if given), in the shape of
    the API at ``path`` (/v1/messages, /v1/chat/completions, /v1/responses), streamed or not:
    what a model sends when it wants a tool run. Usage: 11 in, 5 out."""
    args = _dumps(arguments)
    pieces = [args[: len(args) // 2], args[len(args) // 2:]]
    if path == "/v1/messages":
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
        usage = {"input_tokens": 11, "output_tokens": 5, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
        message = {"id": "msg_tool1", "type": "message", "role": "assistant",
                   "model": "claude-sonnet-4-5", "content": blocks, "stop_reason": "tool_use",
                   "stop_sequence": None, "usage": usage}
        if not stream:
            return Reply(body=message)
        events: list[dict[str, Any]] = [{"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}}]
        if text:
            events += [
                {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}},
                {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": text}},
                {"type": "content_block_stop", "index": 0}]
        index = len(blocks) - 1
        events += [
            {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": call_id, "name": name, "input": {}}},
            *({"type": "content_block_delta", "index": index,
               "delta": {"type": "input_json_delta", "partial_json": piece}} for piece in pieces),
            {"type": "content_block_stop", "index": index},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
             "usage": {"output_tokens": 5}},
            {"type": "message_stop"}]
        return Reply(events=[_sse(e, e["type"]) for e in events])
    if path == "/v1/chat/completions":
        base = {"id": "chatcmpl-tool1", "created": int(time.time()), "model": "gpt-4o",
                "system_fingerprint": "fp_fake"}
        usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
        if not stream:
            message = {"role": "assistant", "content": text, "tool_calls": [call],
                       "refusal": None}
            return Reply(body={**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls",
                 "logprobs": None}]})
        chunk = {**base, "object": "chat.completion.chunk"}

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]}

        chunks = [choice({"role": "assistant", "content": text or None, "refusal": None}),
                  choice({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                          "function": {"name": name, "arguments": ""}}]}),
                  *(choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    for piece in pieces),
                  choice({}, "tool_calls"),
                  {**chunk, "choices": [], "usage": usage}]
        return Reply(events=[*(_sse(c) for c in chunks), "data: [DONE]\n\n"])
    item = {"id": "fc_tool1", "type": "function_call", "status": "completed",
            "call_id": call_id, "name": name, "arguments": args}
    output: list[dict[str, Any]] = []
    if text:
        output.append({"id": "msg_tool1", "type": "message", "status": "completed",
                       "role": "assistant", "content": [
                           {"type": "output_text", "text": text, "annotations": []}]})
    output.append(item)
    done = {**_responses_done(0, {}), "id": "resp_tool1", "output": output,
            "usage": {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 16}}
    if not stream:
        return Reply(body=done)
    pending = {**done, "status": "in_progress", "output": [], "usage": None}
    at = len(output) - 1
    payloads: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending}]
    if text:
        message = output[0]
        part = message["content"][0]
        where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        payloads += [
            {"type": "response.output_item.added", "output_index": 0,
             "item": {**message, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": message}]
    payloads += [
        {"type": "response.output_item.added", "output_index": at,
         "item": {**item, "status": "in_progress", "arguments": ""}},
        *({"type": "response.function_call_arguments.delta", "item_id": item["id"],
           "output_index": at, "delta": piece} for piece in pieces),
        {"type": "response.function_call_arguments.done", "item_id": item["id"],
         "output_index": at, "arguments": args},
        {"type": "response.output_item.done", "output_index": at, "item": item},
        {"type": "response.completed", "response": done}]
    return Reply(events=[_sse({**p, "sequence_number": i}, p["type"])
                         for i, p in enumerate(payloads)])


# --- the server ---------------------------------------------------------------------------------


class FakeProvider:
    """The fake provider server. See the module docstring.

    Attributes for tests: ``port``/``url`` once started; ``requests`` (snapshot of every
    :class:`Seen`); ``connections_opened`` (connections that reached HTTP, i.e. after a TLS
    handshake); ``gate_timed_out`` (some ``Reply.gate``/``WsReply.gate`` wait ran out).

    WebSocket: a ``GET`` upgrade on one of :data:`WS_PATHS` is recorded in :attr:`requests`
    like any request and, unless a :class:`WsReply` with ``reject_status`` is queued, answered
    101 (permessage-deflate when offered); ``ws_connections_opened`` counts those.
    :attr:`ws_frames` holds every text frame received, JSON-decoded; each ``response.create``
    is answered with :func:`responses_events` (one text frame per event) or the next queued
    :class:`WsReply`. Other frames are only recorded; a text frame that is not JSON gets an
    ``error`` event back and is recorded as the raw string.

    ``record=False`` keeps :attr:`requests` and :attr:`ws_frames` empty (long benchmarks would
    otherwise grow them without bound); counters and scripted replies work either way.

    ``faults`` (a :class:`Faults`, opt-in) replaces some default replies on the bridged routes
    with random failures; scripted replies and the default without it are unchanged.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, *, record: bool = True,
                 faults: Faults | None = None) -> None:
        self.tls = tls
        self.record = record
        self.faults = faults
        self.port = 0
        self.connections_opened = 0
        self.ws_connections_opened = 0
        self.gate_timed_out = False
        self.bedrock: FakeBedrock | None = None  # set: Bedrock routes verify credentials
        self._lock = threading.Lock()
        self._requests: list[Seen] = []
        self._queue: list[tuple[str | None, Reply, Callable[[dict], bool] | None]] = []
        self._ws_frames: list[Any] = []
        self._ws_queue: list[WsReply] = []  # replies to response.create
        self._ws_rejects: list[WsReply] = []  # refusals of upgrade requests
        self._count = 0  # request number, never reset, so ids stay unique for the fake's life
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._stopped = False

    # -- lifecycle --

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start serving on a free port of 127.0.0.1; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="fakeprovider", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10)
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the thread. Idempotent."""
        if self._loop is None or self._thread is None or self._stopped:
            return
        self._stopped = True
        loop = self._loop
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.tls, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task, writer in list(self._conns.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()

    # -- test-facing state --

    @property
    def requests(self) -> list[Seen]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def ws_frames(self) -> list[Any]:
        """A snapshot of every WebSocket text frame received (JSON-decoded), in arrival order."""
        with self._lock:
            return list(self._ws_frames)

    def clear(self) -> None:
        """Forget seen requests and frames, queued replies (HTTP and WS), a past gate timeout."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._ws_frames.clear()
            self._ws_queue.clear()
            self._ws_rejects.clear()
            self.gate_timed_out = False

    def enqueue(self, reply: Reply, path: str | None = None,
                when: Callable[[dict], bool] | None = None) -> None:
        """Script the reply to the next request (FIFO), or the next one to ``path`` only.

        ``path`` matches the request path without its query string, unless it has one itself.
        ``when`` (given the request's JSON body, {} if none) narrows it further.
        """
        with self._lock:
            self._queue.append((path, reply, when))

    def enqueue_ws(self, reply: WsReply) -> None:
        """Script the answer to the next ``response.create`` on any socket (FIFO), or, when
        ``reply.reject_status`` is set, the refusal of the next WebSocket upgrade request.

        Separate from :meth:`enqueue`: upgrade requests never take HTTP replies and HTTP
        requests never take WebSocket ones.
        """
        with self._lock:
            (self._ws_queue if reply.reject_status is None else self._ws_rejects).append(reply)

    def _take_ws(self, rejects: bool) -> WsReply | None:
        with self._lock:
            queue = self._ws_rejects if rejects else self._ws_queue
            return queue.pop(0) if queue else None

    def _take_reply(self, target: str, body: bytes = b"") -> Reply | None:
        path = target.partition("?")[0]
        with self._lock:
            for i, (want, reply, when) in enumerate(self._queue):
                if (want is None or want in (path, target)) and (
                        when is None or when(_json_object(body))):
                    del self._queue[i]
                    return reply
        return None

    # -- HTTP --

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        self.connections_opened += 1
        conn = self.connections_opened
        try:
            while await self._exchange(reader, writer, conn):
                pass
        except _BadRequest as e:
            log.debug("fakeprovider: bad request on connection %d: %s", conn, e)
            body = _dumps({"error": {"message": str(e), "type": "invalid_request_error"}})
            head = (
                f"HTTP/1.1 {e.status} {_reason(e.status)}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(ConnectionError):
                writer.write(head.encode() + body.encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            log.debug("fakeprovider: connection %d ended: %r", conn, e)
        except Exception:
            log.exception("fakeprovider: unexpected error on connection %d", conn)
        finally:
            del self._conns[task]
            writer.close()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int
    ) -> bool:
        """Read one request and answer it; True when the connection may carry another."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise
            return False  # clean close between requests
        except asyncio.LimitOverrunError as e:
            raise _BadRequest(431, "request head too large") from e
        lines = head.lstrip(b"\r\n")[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, f"bad request line: {lines[0][:100]!r}")
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        length = 0
        chunked = expect_continue = False
        connection = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(400, f"bad header line: {line[:100]!r}")
            value = value.strip(" \t")
            headers.append((name, value))
            lname = name.lower()
            if lname == "content-length":
                try:
                    length = int(value)
                except ValueError as e:
                    raise _BadRequest(400, "bad content-length") from e
            elif lname == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif lname == "expect":
                expect_continue = value.lower() == "100-continue"
            elif lname == "connection":
                connection = value.lower()
        http10 = version == "HTTP/1.0"
        keep_alive = "keep-alive" in connection if http10 else "close" not in connection

        if expect_continue and (chunked or length):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if chunked:
            body = await self._read_chunked(reader)
        elif length:
            body = await reader.readexactly(length)
        else:
            body = b""

        seen = Seen(method, target, headers, body, conn)
        with self._lock:
            self._count += 1
            n = self._count
            if self.record:
                self._requests.append(seen)

        path, _, query = target.partition("?")
        if method == "GET" and path in WS_PATHS and _is_ws_upgrade(seen):
            return await self._upgrade(head, n, reader, writer, keep_alive, http10)
        reply = self._take_reply(target, body)
        bedrock = BEDROCK_ROUTE.fullmatch(path) if method == "POST" else None
        if bedrock is not None and self.bedrock is not None:
            reply = self.bedrock.check(seen, self.url) or reply  # a refusal wins
        if reply is None and bedrock is not None:
            reply = bedrock_reply(n, unquote(bedrock[1]), bedrock[2], _json_object(body))
        if reply is None:
            builder = ROUTES.get((method, path)) or pattern_route(method, path, seen)
            reply = _not_found(path) if builder is None else builder(n, _json_object(body), query)
            if self.faults is not None and builder is not None:
                reply = self.faults.apply(path, reply)
        return await self._send(reply, n, reader, writer, keep_alive, http10)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise asyncio.IncompleteReadError(line, None)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as e:
                raise _BadRequest(400, "bad chunk size") from e
            if size == 0:
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)  # CRLF after the chunk data
        while True:  # trailers, ignored, up to the empty line
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise asyncio.IncompleteReadError(line, None)
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)

    async def _send(
        self,
        reply: Reply,
        n: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep_alive: bool,
        http10: bool,
    ) -> bool:
        """Write ``reply``; True when the connection may carry another request."""
        if reply.never_respond:
            # Hold the socket until the client goes away (EOF) or stop() cancels us.
            while await reader.read(65536):
                pass
            return False
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.abort:
            writer.transport.abort()
            return False

        streaming = reply.events is not None
        # An HTTP/1.0 client cannot take chunked framing: the stream then ends with the close.
        if streaming and http10:
            keep_alive = False
        own = {k.lower() for k, _ in reply.headers}
        defaults = [("request-id", f"req_fake{n}"), ("x-request-id", f"req_fake{n}")]
        defaults.append(("Content-Type", "text/event-stream" if streaming else "application/json"))
        if streaming:
            defaults.append(("Cache-Control", "no-cache"))
        if reply.encoding:
            defaults.append(("Content-Encoding", reply.encoding))
        if not keep_alive:
            defaults.append(("Connection", "close"))
        elif http10:
            defaults.append(("Connection", "keep-alive"))
        headers = [(k, v) for k, v in defaults if k.lower() not in own] + reply.headers
        status_line = f"HTTP/1.1 {reply.status} {_reason(reply.status)}\r\n"

        if not streaming:
            body = _body_bytes(reply.body)
            if reply.encoding:
                step, finish = _compressor(reply.encoding)
                body = step(body) + finish()
            if reply.status not in (204, 304):
                headers.append(("Content-Length", str(len(body))))
            head = status_line + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            return keep_alive

        if not http10:
            headers.append(("Transfer-Encoding", "chunked"))
        head = status_line + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        writer.write(head.encode("latin-1"))
        await writer.drain()
        if reply.close_after_events == 0:
            writer.transport.abort()
            return False
        step = finish = None
        if reply.encoding:
            step, finish = _compressor(reply.encoding)
        assert reply.events is not None
        for i, event in enumerate(reply.events, 1):
            data = event.encode() if isinstance(event, str) else event
            if step is not None:
                data = step(data)
            writer.write(data if http10 else b"%x\r\n%b\r\n" % (len(data), data))
            await writer.drain()
            if reply.close_after_events == i:
                writer.transport.abort()  # a mid-stream break: no terminating chunk
                return False
            if i == 1 and reply.gate is not None:
                await self._wait_gate(reply.gate, reply.gate_timeout)
            if reply.event_delay and i < len(reply.events):
                await asyncio.sleep(reply.event_delay)
        tail = finish() if finish is not None else b""
        if http10:
            writer.write(tail)
        else:
            writer.write((b"%x\r\n%b\r\n" % (len(tail), tail) if tail else b"") + b"0\r\n\r\n")
        await writer.drain()
        return keep_alive

    # -- WebSocket --

    async def _upgrade(
        self,
        head: bytes,
        n: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep_alive: bool,
        http10: bool,
    ) -> bool:
        """Answer an upgrade request; True when the connection may carry another request."""
        reject = self._take_ws(rejects=True)
        if reject is not None:
            assert reject.reject_status is not None
            body = reject.reject_body
            if body is None:
                message = f"upgrade rejected by fake with {reject.reject_status}"
                body = {"error": {"message": message, "type": "fake_error", "code": None}}
            reply = Reply(status=reject.reject_status, body=body, headers=reject.reject_headers)
            return await self._send(reply, n, reader, writer, keep_alive, http10)

        # The head is parsed a second time by websockets' sans-I/O server, which validates the
        # handshake (and answers 400/426/505 itself when it is not a valid one).
        proto = ServerProtocol(extensions=[ServerPerMessageDeflateFactory()], max_size=None)
        proto.receive_data(head.lstrip(b"\r\n"))
        request = next((e for e in proto.events_received() if isinstance(e, Request)), None)
        if request is None:
            await self._ws_flush(proto, writer)
            return False
        response = proto.accept(request)
        response.headers["request-id"] = response.headers["x-request-id"] = f"req_fake{n}"
        proto.send_response(response)
        await self._ws_flush(proto, writer)
        if response.status_code != 101:
            return False
        self.ws_connections_opened += 1
        await self._ws_session(proto, reader, writer)
        return False

    @staticmethod
    async def _ws_flush(proto: ServerProtocol, writer: asyncio.StreamWriter) -> bool:
        """Write what the protocol has queued; False once it asked to end the TCP stream."""
        open_ = True
        for data in proto.data_to_send():
            if data:
                writer.write(data)
            else:
                open_ = False
        await writer.drain()
        return open_

    async def _ws_session(
        self, proto: ServerProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parts: list[bytes] = []
        text = False
        while True:
            data = await reader.read(65536)
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            for frame in proto.events_received():
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    text = frame.opcode is Opcode.TEXT
                    parts = [frame.data]
                elif frame.opcode is Opcode.CONT:
                    parts.append(frame.data)
                else:
                    continue  # ping/pong/close: the protocol object answers those itself
                if not frame.fin or not text or proto.state is not State.OPEN:
                    continue  # binary messages are not part of the API; nor is talk after close
                if not await self._ws_message(b"".join(parts), proto, writer):
                    return
            if not await self._ws_flush(proto, writer) or not data or proto.state is State.CLOSED:
                return

    async def _ws_message(
        self, data: bytes, proto: ServerProtocol, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one client text message; False when the connection was aborted."""
        try:
            frame: Any = json.loads(data)
        except ValueError:
            frame = data.decode(errors="replace")
        with self._lock:
            if self.record:
                self._ws_frames.append(frame)
        if isinstance(frame, str):
            error = ws_error("could not parse the message as JSON", code="invalid_json")
            proto.send_text(_dumps(error).encode())
            return await self._ws_flush(proto, writer)
        if not isinstance(frame, dict) or frame.get("type") != "response.create":
            return True
        with self._lock:
            self._count += 1
            n = self._count
        reply = self._take_ws(rejects=False) or WsReply()
        events = reply.events if reply.events is not None else responses_events(n, frame)
        if reply.close_after == 0:
            writer.transport.abort()
            return False
        for i, event in enumerate(events, 1):
            if isinstance(event, bytes):
                proto.send_binary(event)
            else:
                proto.send_text((event if isinstance(event, str) else _dumps(event)).encode())
            if not await self._ws_flush(proto, writer):
                return False
            if reply.close_after == i:
                writer.transport.abort()  # no close frame: the client sees 1006
                return False
            if i == 1 and reply.gate is not None:
                await self._wait_gate(reply.gate, reply.gate_timeout)
        return True

    async def _wait_gate(self, gate: threading.Event, timeout: float) -> None:
        # Poll rather than block an executor thread: a blocked thread would outlive stop().
        deadline = time.monotonic() + timeout
        while not gate.is_set():
            if time.monotonic() >= deadline:
                self.gate_timed_out = True
                log.debug("fakeprovider: gate timed out after %.1fs", timeout)
                return
            await asyncio.sleep(0.002)


def _is_ws_upgrade(seen: Seen) -> bool:
    tokens = {t.strip().lower() for v in seen.header_all("connection") for t in v.split(",")}
    return "upgrade" in tokens and (seen.header("upgrade") or "").lower() == "websocket"


def _json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or {} when it is empty or anything else."""
    if not body:
        return {}
    try:
        obj = json.loads(body)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _body_bytes(body: bytes | str | dict | list | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return _dumps(body).encode()


# --- Amazon Bedrock ------------------------------------------------------------------------------
# `POST /model/{modelId}/invoke`, `/invoke-with-response-stream`, `/converse`, `/converse-stream`
# as bedrock-runtime answers them: JSON bodies, AWS event-stream frames for streams (encoded here,
# independently of the bridge's code), AWS errors (`x-amzn-ErrorType`, `{"message": ...}`).
# With `FakeProvider.bedrock` set (a FakeBedrock), every /model/ request must carry a SigV4
# signature made with its credentials (recomputed with botocore) or a Bedrock API key it knows.

BEDROCK_ROUTE = re.compile(
    r"/model/([^/]+)/(invoke|invoke-with-response-stream|converse|converse-stream)")
EVENTSTREAM = "application/vnd.amazon.eventstream"
_SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                    r" ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})")


def eventstream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers only)."""
    head = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode()))
                    + v.encode() for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def eventstream_event(event_type: str, payload: dict[str, Any]) -> bytes:
    return eventstream_message({":event-type": event_type, ":content-type": "application/json",
                                ":message-type": "event"}, _dumps(payload).encode())


def eventstream_exception(exception_type: str, message: str) -> bytes:
    return eventstream_message({":exception-type": exception_type,
                                ":content-type": "application/json",
                                ":message-type": "exception"},
                               _dumps({"message": message}).encode())


def bedrock_chunk(event: dict[str, Any]) -> bytes:
    """An invoke-with-response-stream `chunk`: one model event, base64 in `bytes`."""
    return eventstream_event("chunk", {"bytes": base64.b64encode(_dumps(event).encode()).decode()})


def bedrock_error(status: int, exception: str, message: str) -> Reply:
    return Reply(status=status, body={"message": message}, headers=[
        ("x-amzn-ErrorType", f"{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/")])


def _anthropic_name(model_id: str) -> str:
    """The Anthropic model name in a Bedrock model id, inference profile or ARN."""
    name = model_id.rsplit("/", 1)[-1].rsplit("anthropic.", 1)[-1]
    return re.sub(r"-v\d+(:\d+)?$", "", name)


def messages_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The Anthropic Messages stream of a whole text `message` (DELTAS as its text)."""
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}
          for d in DELTAS),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": message["usage"]["output_tokens"]}},
        {"type": "message_stop"},
    ]


def bedrock_reply(n: int, model_id: str, action: str, req: dict[str, Any]) -> Reply:
    """The default answer of a Bedrock runtime route."""
    amzn = [("x-amzn-RequestId", f"fake-request-{n}")]
    if action in ("invoke", "invoke-with-response-stream") and "anthropic." in model_id:
        # Bedrock refuses what its Anthropic models do not take, as the real one does.
        if req.get("anthropic_version") != "bedrock-2023-05-31":
            return bedrock_error(400, "ValidationException", "anthropic_version is required")
        if extra := sorted(set(req) - BEDROCK_ANTHROPIC_FIELDS):
            return bedrock_error(400, "ValidationException",
                                 f"extraneous key [{extra[0]}] is not permitted")
    if action in ("invoke", "invoke-with-response-stream"):
        message = {"id": f"msg_bdrk_fake{n}", "type": "message", "role": "assistant",
                   "model": _anthropic_name(model_id), "content": [{"type": "text", "text": TEXT}],
                   "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 11, "output_tokens": 7,
                             "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2}}
        if action == "invoke":
            return Reply(body=message, headers=[*amzn, ("X-Amzn-Bedrock-Input-Token-Count", "11"),
                                                ("X-Amzn-Bedrock-Output-Token-Count", "7")])
        events = messages_events(message)
        events[-1][METRICS] = {"inputTokenCount": 11, "outputTokenCount": 7,
                               "invocationLatency": 120, "firstByteLatency": 40}
        return Reply(headers=[*amzn, ("Content-Type", EVENTSTREAM)],
                     events=[bedrock_chunk(e) for e in events])
    usage = {"inputTokens": 11, "outputTokens": 7, "totalTokens": 23,
             "cacheReadInputTokens": 3, "cacheWriteInputTokens": 2}
    if action == "converse":
        return Reply(headers=amzn, body={
            "output": {"message": {"role": "assistant", "content": [{"text": TEXT}]}},
            "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 120}})
    frames = [eventstream_event("messageStart", {"role": "assistant"})]
    frames += [eventstream_event("contentBlockDelta",
                                 {"contentBlockIndex": 0, "delta": {"text": d}}) for d in DELTAS]
    frames += [eventstream_event("contentBlockStop", {"contentBlockIndex": 0}),
               eventstream_event("messageStop", {"stopReason": "end_turn"}),
               eventstream_event("metadata", {"usage": usage, "metrics": {"latencyMs": 120}})]
    return Reply(headers=[*amzn, ("Content-Type", EVENTSTREAM)], events=frames)


METRICS = "amazon-bedrock-invocationMetrics"
BEDROCK_ANTHROPIC_FIELDS = frozenset({
    "anthropic_version", "anthropic_beta", "max_tokens", "messages", "system", "temperature",
    "top_p", "top_k", "stop_sequences", "tools", "tool_choice", "thinking", "context_management",
    "metadata", "output_config"})  # Claude Code's Bedrock mode sends these two


@dataclass
class FakeBedrock:
    """The credentials the fake Bedrock accepts: a SigV4 signature made with this key pair
    (recomputed with botocore, region and service from the signature's scope checked against
    `region`), or a Bedrock API key in `api_keys`. `verdicts` says, per request, "ok" or why
    it was refused (403 InvalidSignatureException / UnrecognizedClientException)."""

    access_key: str = ""
    secret_key: str = ""
    token: str | None = None
    region: str = "us-east-1"
    api_keys: tuple[str, ...] = ()
    verdicts: list[str] = field(default_factory=list)

    def check(self, seen: Seen, base_url: str) -> Reply | None:
        why = self._mismatch(seen, base_url)
        self.verdicts.append(why or "ok")
        if why is None:
            return None
        exception = ("UnrecognizedClientException" if "key" in why or "token" in why
                     else "InvalidSignatureException")
        return bedrock_error(403, exception, why)

    def _mismatch(self, seen: Seen, base_url: str) -> str | None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import ReadOnlyCredentials

        auth = seen.header("authorization") or ""
        if auth.startswith("Bearer "):
            return None if auth[7:] in self.api_keys else "The API key is not valid"
        found = _SIGV4.fullmatch(auth)
        if found is None:
            return "Missing or malformed SigV4 Authorization header"
        key_id, date, region, service, signed, signature = found.groups()
        if key_id != self.access_key:
            return "The security token included in the request is invalid (unknown key)"
        if seen.header("x-amz-security-token") != self.token:
            return "The security token included in the request is invalid"
        if region != self.region or service != "bedrock":
            return f"Credential should be scoped to region {self.region}, service bedrock"
        amz_date = seen.header("x-amz-date") or ""
        try:
            at = time.mktime(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) - time.timezone
        except ValueError:
            return "X-Amz-Date missing or malformed"
        if abs(time.time() - at) > 300 or not amz_date.startswith(date):
            return "Signature expired"
        names = signed.split(";")
        if "host" not in names:
            return "host must be signed"
        headers = {}
        for name in names:
            if (value := seen.header(name)) is None:
                return f"signed header {name} is missing"
            headers[name] = value
        request = AWSRequest(method=seen.method, url=base_url + seen.path, headers=headers,
                             data=seen.body)
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(ReadOnlyCredentials(self.access_key, self.secret_key, self.token),
                           service, region)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, signature):
            return ("The request signature we calculated does not match the signature you "
                    "provided.")
        return None


# --- Google Gemini, Azure OpenAI, GitHub Copilot, OpenAI-compatible gateways --------------------
# Routes matched by pattern after the exact ones (`pattern_route`). Gemini answers as
# generativelanguage.googleapis.com does: GenerateContentResponse bodies, SSE with `alt=sse`
# (`\r\n\r\n` between events, no event names), else one JSON array sent element by element,
# Google's error envelope (`gemini_error`, with RetryInfo for 429s) and 403 for a request with no
# API key at all. Azure answers OpenAI's shapes under /openai (deployments need `api-version`),
# naming the model behind a deployment (`AZURE_MODEL`); Copilot OpenAI's shapes at the root.

GEMINI_ROUTE = re.compile(r"/(v1|v1beta|v1alpha)/(models|tunedModels)/([^/:]+)"
                          r"(?::(generateContent|streamGenerateContent|countTokens))?")
GEMINI_MODELS = re.compile(r"/(v1|v1beta|v1alpha)/models")
AZURE_DEPLOYMENT = re.compile(
    r"/openai/deployments/([^/]+)/(chat/completions|responses|embeddings)")
AZURE_MODEL = "gpt-4o-2024-11-20"  # what Azure names the model behind any deployment here
# OpenAI-shaped routes under the prefixes of Azure's v1 API and OpenAI-compatible gateways
# (Groq /openai/v1, OpenRouter /api/v1), and Copilot's root.
OPENAI_SHAPED = re.compile(r"(/openai/v1|/openai|/api/v1|)/(chat/completions|responses|"
                           r"embeddings|models)")
GEMINI_USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 7, "cachedContentTokenCount": 3,
                "thoughtsTokenCount": 2, "totalTokenCount": 20,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 11}]}
GEMINI_JSON = "application/json; charset=UTF-8"


def gemini_error(status: int, message: str, *, retry_delay: str | None = None,
                 reason: str | None = None, details: list[dict[str, Any]] | None = None,
                 headers: list[tuple[str, str]] | None = None) -> Reply:
    """A Gemini API error: Google's envelope, its status name for `status`, an ErrorInfo with
    `reason` and a RetryInfo with `retry_delay` ("37s") when given."""
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
             404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
             504: "DEADLINE_EXCEEDED"}
    extra = list(details or [])
    if reason:
        extra.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                      "domain": "googleapis.com",
                      "metadata": {"service": "generativelanguage.googleapis.com"}})
    if retry_delay:
        extra.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                      "retryDelay": retry_delay})
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": names.get(status, "UNKNOWN")}
    if extra:
        error["details"] = extra
    return Reply(status=status, body={"error": error},
                 headers=[("Content-Type", GEMINI_JSON), *(headers or [])])


def gemini_rate_limited(retry_delay: str = "2s") -> Reply:
    """What a key out of quota gets: 429 RESOURCE_EXHAUSTED, QuotaFailure and RetryInfo."""
    quota = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
         "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}
    return gemini_error(429, "You exceeded your current quota, please check your plan and "
                        "billing details.", retry_delay=retry_delay, details=[quota])


def gemini_chunk(parts: list[dict[str, Any]], *, model: str, n: int,
                 finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GenerateContentResponse (a whole answer or one streamed chunk)."""
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        chunk["usageMetadata"] = usage
    chunk["modelVersion"] = model
    chunk["responseId"] = f"fake-gemini-{n}"
    return chunk


def gemini_stream(chunks: list[dict[str, Any]], *, sse: bool) -> Reply:
    """Chunks as Gemini streams them: SSE events, or the pieces of one JSON array."""
    if sse:
        return Reply(events=[f"data: {_dumps(c)}\r\n\r\n" for c in chunks])
    pieces = [("[" if i == 0 else "\r\n,") + json.dumps(c, indent=2) + "\n"
              for i, c in enumerate(chunks)]
    return Reply(events=[*pieces, "]"], headers=[("Content-Type", GEMINI_JSON)])


def _gemini_key(seen: Seen, query: str) -> str | None:
    return seen.header("x-goog-api-key") or (parse_qs(query).get("key") or [None])[0]


def _gemini(n: int, req: dict[str, Any], query: str, found: re.Match[str], seen: Seen) -> Reply:
    model, method = found[3], found[4]
    if _gemini_key(seen, query) is None and seen.header("authorization") is None:
        return gemini_error(403, "Method doesn't allow unregistered callers (callers without "
                            "established identity). Please use API Key or other form of API "
                            "consumer identity to call this API.", reason="API_KEY_INVALID")
    if method is None:
        return Reply(body=_gemini_model(model), headers=[("Content-Type", GEMINI_JSON)])
    if method == "countTokens":
        return Reply(body={"totalTokens": 11, "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 11}]}, headers=[("Content-Type", GEMINI_JSON)])
    if method == "generateContent":
        config = req.get("generationConfig")
        config = config if isinstance(config, dict) else {}
        text = TEXT
        if config.get("responseMimeType") == "application/json":  # JSON mode, as asked
            text = _dumps(schema_example(config.get("responseJsonSchema")
                                         or config.get("responseSchema") or {}))
        return Reply(body=gemini_chunk([{"text": text}], model=model, n=n, finish="STOP",
                                       usage=GEMINI_USAGE),
                     headers=[("Content-Type", GEMINI_JSON)])
    partial = {"promptTokenCount": 11, "totalTokenCount": 11}
    chunks = [gemini_chunk([{"text": d}], model=model, n=n, usage=partial) for d in DELTAS[:-1]]
    chunks.append(gemini_chunk([{"text": DELTAS[-1]}], model=model, n=n, finish="STOP",
                               usage=GEMINI_USAGE))
    return gemini_stream(chunks, sse="alt=sse" in query.split("&"))


def schema_example(schema: Any) -> Any:
    """A small value that fits a Gemini response schema (OpenAPI types, any case): what a model
    in JSON mode answers, e.g. to Gemini CLI's model-routing classifier."""
    if not isinstance(schema, dict):
        return None
    if isinstance(enum := schema.get("enum"), list) and enum:
        return enum[0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        return {name: schema_example(sub) for name, sub in properties.items()
                if name in required or not required}
    if kind == "array":
        return [schema_example(schema.get("items"))] if schema.get("items") else []
    return {"string": "fake", "integer": 1, "number": 1, "boolean": False}.get(kind)


def _gemini_model(model: str) -> dict[str, Any]:
    return {"name": f"models/{model}", "version": "001", "displayName": model,
            "description": "A fake Gemini model", "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536, "temperature": 1, "topP": 0.95, "topK": 64,
            "supportedGenerationMethods": ["generateContent", "countTokens"]}


def _gemini_models(_n: int, _req: dict[str, Any], _query: str, _found: re.Match[str],
                   _seen: Seen) -> Reply:
    return Reply(body={"models": [_gemini_model("gemini-2.5-flash"),
                                  _gemini_model("gemini-2.5-pro")]},
                 headers=[("Content-Type", GEMINI_JSON)])


def azure_error(status: int, message: str, *, code: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> Reply:
    """An Azure OpenAI error: OpenAI's envelope with the status as the code, as Azure sends."""
    return Reply(status=status, headers=headers or [],
                 body={"error": {"code": code or str(status), "message": message}})


def _azure(n: int, req: dict[str, Any], query: str, found: re.Match[str], seen: Seen) -> Reply:
    if "api-version" not in parse_qs(query):
        return azure_error(404, "Resource not found")
    if seen.header("api-key") is None and seen.header("authorization") is None:
        return azure_error(401, "Access denied due to missing subscription key. Make sure to "
                           "include subscription key when making requests to an API.")
    builder = {"chat/completions": _chat, "responses": _responses,
               "embeddings": _embeddings}[found[2]]
    return builder(n, {**req, "model": AZURE_MODEL}, query)


def _openai_shaped(n: int, req: dict[str, Any], query: str, found: re.Match[str],
                   seen: Seen) -> Reply:
    prefix, route = found[1], found[2]
    if prefix == "" and seen.header("authorization") is None:  # Copilot: a token, always
        return Reply(status=401, body={"error": {"message": "unauthorized: no token",
                                                 "code": "unauthorized"}})
    if prefix == "/openai" and route != "responses" and route != "models":
        return _not_found(found[0])  # Azure has these only per deployment or under /openai/v1
    if prefix.startswith("/openai") and route != "models" and seen.header("api-key") is None \
            and seen.header("authorization") is None:
        return azure_error(401, "Access denied due to missing subscription key.")
    if prefix == "/openai" and route == "responses":
        if "api-version" not in parse_qs(query):
            return azure_error(404, "Resource not found")
        req = {**req, "model": AZURE_MODEL}
    if prefix == "" and route == "models":
        return _copilot_models()
    builder = {"chat/completions": _chat, "responses": _responses, "embeddings": _embeddings,
               "models": _models}[route]
    return builder(n, req, query)


def _copilot_models() -> Reply:
    """Copilot's model list: OpenAI's list with Copilot's capabilities, limits and policy."""
    def model(model_id: str, name: str, vendor: str, default: bool) -> dict[str, Any]:
        return {"id": model_id, "name": name, "object": "model", "vendor": vendor,
                "version": model_id, "preview": False, "model_picker_enabled": True,
                "model_picker_category": "versatile", "is_chat_default": default,
                "is_chat_fallback": default, "policy": {"state": "enabled", "terms": ""},
                "billing": {"is_premium": False, "multiplier": 0},
                "supported_endpoints": ["/chat/completions", "/responses"],
                "capabilities": {"family": model_id, "object": "model_capabilities",
                                 "type": "chat", "tokenizer": "o200k_base",
                                 "limits": {"max_context_window_tokens": 128000,
                                            "max_output_tokens": 16384,
                                            "max_prompt_tokens": 128000},
                                 "supports": {"streaming": True, "tool_calls": True,
                                              "parallel_tool_calls": True, "vision": False}}}
    return Reply(body={"object": "list", "data": [
        model("gpt-4.1", "GPT-4.1", "Azure OpenAI", True),
        model("claude-sonnet-4.5", "Claude Sonnet 4.5", "Anthropic", False)]})


PatternBuilder = Callable[[int, dict[str, Any], str, "re.Match[str]", Seen], Reply]
PATTERN_ROUTES: list[tuple[str, re.Pattern[str], PatternBuilder]] = [
    ("POST", GEMINI_ROUTE, _gemini),
    ("GET", GEMINI_ROUTE, _gemini),
    ("GET", GEMINI_MODELS, _gemini_models),
    ("POST", AZURE_DEPLOYMENT, _azure),
    ("POST", OPENAI_SHAPED, _openai_shaped),
    ("GET", OPENAI_SHAPED, _openai_shaped),
]


def pattern_route(method: str, path: str, seen: Seen) -> RouteBuilder | None:
    """The builder for a path the exact ROUTES do not name, if a pattern route takes it."""
    for want, pattern, builder in PATTERN_ROUTES:
        if want == method and (found := pattern.fullmatch(path)) is not None:
            return lambda n, req, query, b=builder, f=found: b(n, req, query, f, seen)
    return None
