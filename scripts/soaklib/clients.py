"""Soak clients: real OpenAI and Anthropic SDK clients in threads, each request classified.

Every request ends in exactly one class:

- ``ok``: a complete answer. Non-streaming: the fake's text and stop reason. Streaming: the
  text, the stop reason and the route's terminal marker (chat ``data: [DONE]``, Responses
  ``response.completed``, Anthropic ``message_stop``).
- ``error``: a well-formed error. An ``APIStatusError`` whose body is JSON (content type
  ``application/json``) with ``error.message`` and ``error.type`` strings (on the Anthropic
  route also ``"type": "error"`` at the top), or, inside a 200 stream, an error event the SDK
  raised (OpenAI ``APIError`` with a ``message``/``type`` body; Anthropic ``event: error``
  with the envelope).
- ``BAD``: anything else: connection errors, read timeouts (hangs), JSON decode errors, a
  stream that ended without its terminal marker or an error, a wrong text, a request slower
  than the hang limit.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import openai

TEXT = "Hello from fake"  # tests.fakeprovider.TEXT
BRIDGED = {"/v1/chat/completions": "chat", "/v1/responses": "responses",
           "/v1/messages": "messages"}
SCENARIOS = [(route, stream) for route in ("chat", "responses", "messages")
             for stream in (False, True)]
MODELS = {"openai": ("gpt-4o", "gpt-4o-mini"), "anthropic": ("claude-sonnet-4-5",
                                                             "claude-haiku-4-5")}
MESSAGES = [{"role": "user", "content": "Say hello (soak test)."}]
RAW_LIMIT = 64 * 1024


@dataclass
class Result:
    route: str
    stream: bool
    cls: str  # ok | error | BAD
    elapsed: float
    kind: str = ""  # for errors: "<status> <type>" or "stream <type>"; for BAD: a short reason
    detail: str = ""  # for BAD: evidence (exception, raw response tail)
    worker: int = -1
    started: float = 0.0  # wall clock (time.time()), to find the request in mitmdump's log
    previous: str = ""  # the same client's previous request: "<scenario> <cls> <kind>"

    @property
    def scenario(self) -> str:
        return f"{self.route}{'/stream' if self.stream else ''}"


class Bad(Exception):
    """The request did not end in a success or a well-formed error."""


class _Tap(httpx2.SyncByteStream):
    """Passes a response's raw bytes through and keeps a copy (up to RAW_LIMIT)."""

    def __init__(self, inner: Any, sink: bytearray) -> None:
        self.inner = inner
        self.sink = sink

    def __iter__(self):
        for chunk in self.inner:
            if len(self.sink) < RAW_LIMIT:
                self.sink += chunk[:RAW_LIMIT - len(self.sink)]
            yield chunk

    def close(self) -> None:
        self.inner.close()


@dataclass
class Worker:
    """One client thread: an OpenAI and an Anthropic SDK client through the proxy."""

    index: int
    proxy_url: str
    ca: str
    token: str
    seed: int
    request_timeout: float
    max_retries: int
    results: list[Result] = field(default_factory=list)
    sent: Counter = field(default_factory=Counter)  # bridged HTTP requests sent, per route
    raw: bytearray = field(default_factory=bytearray)  # raw body of the last response

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        hooks = {"request": [self._on_request], "response": [self._on_response]}
        common = {"proxy": self.proxy_url, "verify": ssl.create_default_context(cafile=self.ca),
                  "event_hooks": hooks}
        timeout = httpx2.Timeout(self.request_timeout, connect=10)
        self.openai = openai.OpenAI(
            api_key="sk-soak-client-placeholder", max_retries=self.max_retries,
            timeout=timeout, http_client=openai.DefaultHttpxClient(**common))
        # In "auto" mode an API key equal to the caller's proxy token means "central key".
        self.anthropic = anthropic.Anthropic(
            api_key=self.token, max_retries=self.max_retries, timeout=timeout,
            http_client=anthropic.DefaultHttpxClient(**common))

    def _on_request(self, request: httpx2.Request) -> None:
        route = BRIDGED.get(request.url.path)
        if route is not None and request.method == "POST":
            self.sent[route] += 1

    def _on_response(self, response: httpx2.Response) -> None:
        self.raw = bytearray()
        response.stream = _Tap(response.stream, self.raw)

    def close(self) -> None:
        self.openai.close()
        self.anthropic.close()

    def run(self, deadline: float, stop: threading.Event) -> None:
        try:
            while time.monotonic() < deadline and not stop.is_set():
                route, stream = self.rng.choice(SCENARIOS)
                result = self.one(route, stream)
                self.results.append(result)
                if result.kind.startswith(("429 ", "503 ")):
                    # Without SDK retries, pause like a polite client would: local rejections
                    # (all keys cooling, circuit open) take ~3 ms and would flood the mix.
                    stop.wait(self.rng.uniform(0.05, 0.3))
        finally:
            self.close()

    # -- one request -------------------------------------------------------------------------

    def one(self, route: str, stream: bool) -> Result:
        provider = "anthropic" if route == "messages" else "openai"
        model = self.rng.choice(MODELS[provider])
        self.raw = bytearray()
        started = time.time()
        t0 = time.monotonic()
        try:
            CALLS[route, stream](self, model)
            cls, kind, detail = "ok", "", ""
        except Bad as e:
            cls, kind, detail = "BAD", str(e), self._evidence()
        except (openai.APITimeoutError, anthropic.APITimeoutError) as e:
            cls, kind, detail = "BAD", "timeout (hang)", self._evidence(e)
        except (openai.APIConnectionError, anthropic.APIConnectionError) as e:
            cls, kind, detail = "BAD", f"connection error: {_cause(e)}", self._evidence(e)
        except (openai.APIStatusError, anthropic.APIStatusError) as e:
            cls, kind, detail = self._status_error(e, route)
        except (openai.APIError, anthropic.APIError) as e:  # an SSE error event (OpenAI SDK)
            cls, kind, detail = self._stream_error(e.body, route, anthropic_shape=False)
        except Exception as e:
            cls, kind = "BAD", f"{type(e).__name__}: {str(e)[:200]}"
            detail = self._evidence(e)
        elapsed = time.monotonic() - t0
        if cls != "BAD" and elapsed > self.request_timeout:
            cls, kind, detail = "BAD", f"took {elapsed:.1f}s (hang limit " \
                                       f"{self.request_timeout:g}s)", self._evidence()
        prev = self.results[-1] if self.results else None
        previous = f"{prev.scenario} {prev.cls} {prev.kind}".strip() if prev else ""
        return Result(route, stream, cls, elapsed, kind, detail, self.index, started, previous)

    def _status_error(self, e: openai.APIStatusError | anthropic.APIStatusError,
                      route: str) -> tuple[str, str, str]:
        status = e.response.status_code
        if status < 400:  # Anthropic SDK: `event: error` inside a 200 stream
            return self._stream_error(e.body, route, anthropic_shape=True)
        ctype = e.response.headers.get("content-type", "")
        try:
            body = json.loads(e.response.content)
        except ValueError:
            return "BAD", f"{status} with a non-JSON body ({ctype})", self._evidence(e)
        if "application/json" not in ctype:
            return "BAD", f"{status} JSON with content type {ctype!r}", self._evidence(e)
        err = body.get("error") if isinstance(body, dict) else None
        if not _well_formed(err):
            return "BAD", f"{status} JSON without error.message/error.type", self._evidence(e)
        if route == "messages" and body.get("type") != "error":
            return "BAD", f"{status} Anthropic error without top-level type", self._evidence(e)
        return "error", f"{status} {err['type']}", ""

    def _stream_error(self, body: object, route: str, *,
                      anthropic_shape: bool) -> tuple[str, str, str]:
        err = body.get("error", body) if isinstance(body, dict) else None
        if not _well_formed(err):
            return "BAD", "stream error event without message/type", self._evidence()
        if anthropic_shape and not (isinstance(body, dict) and body.get("type") == "error"):
            return "BAD", "Anthropic stream error without top-level type", self._evidence()
        return "error", f"stream {err['type']}", ""

    def _evidence(self, exc: BaseException | None = None) -> str:
        parts = []
        if exc is not None:
            parts.append("".join(traceback.format_exception_only(exc)).strip()[:500])
            if (cause := _cause(exc)) != type(exc).__name__:
                parts.append(f"cause: {cause}")
            response = getattr(exc, "response", None)
            if isinstance(response, httpx2.Response):
                parts.append(f"status {response.status_code} headers "
                             f"{dict(response.headers)}"[:800])
        if self.raw:
            parts.append(f"raw response tail: {bytes(self.raw[-1200:])!r}")
        return "\n".join(parts)


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    if inner is None:
        return type(e).__name__
    return f"{type(inner).__name__}: {str(inner)[:200]}"


def _well_formed(err: object) -> bool:
    return (isinstance(err, dict) and isinstance(err.get("message"), str) and
            bool(err["message"]) and isinstance(err.get("type"), str) and bool(err["type"]))


def _expect(cond: bool, why: str) -> None:
    if not cond:
        raise Bad(why)


# -- the calls: each returns normally only on a complete answer ------------------------------------


def _chat(w: Worker, model: str) -> None:
    r = w.openai.chat.completions.create(model=model, messages=MESSAGES)
    _expect(r.choices[0].message.content == TEXT, f"chat: wrong text {r.choices!r:.200}")
    _expect(r.choices[0].finish_reason == "stop", "chat: no finish_reason stop")


def _chat_stream(w: Worker, model: str) -> None:
    text, finish, usage = [], None, None
    for chunk in w.openai.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                                  stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text.append(c.delta.content or "")
            finish = c.finish_reason or finish
    _expect(b"data: [DONE]" in w.raw, "chat stream ended without data: [DONE] or an error")
    _expect("".join(text) == TEXT and finish == "stop" and usage is not None,
            f"chat stream incomplete: text {''.join(text)!r}, finish {finish}, usage {usage}")


def _responses(w: Worker, model: str) -> None:
    r = w.openai.responses.create(model=model, input="Say hello (soak test).")
    _expect(r.status == "completed" and r.output_text == TEXT,
            f"responses: status {r.status}, text {r.output_text!r}")


def _responses_stream(w: Worker, model: str) -> None:
    text, last = [], None
    for event in w.openai.responses.create(model=model, input="Say hello (soak test).",
                                           stream=True):
        last = event.type
        if event.type == "response.output_text.delta":
            text.append(event.delta)
    _expect(last == "response.completed",
            f"responses stream ended after {last!r} without response.completed or an error")
    _expect("".join(text) == TEXT, f"responses stream: wrong text {''.join(text)!r}")


def _messages(w: Worker, model: str) -> None:
    r = w.anthropic.messages.create(model=model, max_tokens=16, messages=MESSAGES)
    _expect(r.content and r.content[0].text == TEXT and r.stop_reason == "end_turn",
            f"messages: content {r.content!r:.200}, stop {r.stop_reason}")


def _messages_stream(w: Worker, model: str) -> None:
    text, last, stop = [], None, None
    for event in w.anthropic.messages.create(model=model, max_tokens=16, messages=MESSAGES,
                                             stream=True):
        last = event.type
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text.append(event.delta.text)
        elif event.type == "message_delta":
            stop = event.delta.stop_reason
    _expect(last == "message_stop",
            f"messages stream ended after {last!r} without message_stop or an error")
    _expect("".join(text) == TEXT and stop == "end_turn",
            f"messages stream: text {''.join(text)!r}, stop {stop}")


CALLS = {("chat", False): _chat, ("chat", True): _chat_stream,
         ("responses", False): _responses, ("responses", True): _responses_stream,
         ("messages", False): _messages, ("messages", True): _messages_stream}
