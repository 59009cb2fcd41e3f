"""Request bodies and the scripted SSE stream; deterministic, built once per shape."""

from __future__ import annotations

import json
from functools import lru_cache

MODEL = "gpt-4o"
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven",
         "tired", "engineers", "review", "streaming", "proxies", "latency", "budgets", "keys",
         "tokens", "and", "careful", "benchmarks", "on", "loopback")


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def small_body() -> bytes:
    """A typical short chat request (~150 bytes)."""
    return _dumps({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 16,
    })


def _text(n: int, seed: int) -> str:
    out: list[str] = []
    size = 0
    i = seed
    while size < n:
        w = WORDS[i % len(WORDS)]
        out.append(w)
        size += len(w) + 1
        i += 7
    return " ".join(out)[:n]


def large_body(total_bytes: int) -> bytes:
    """A multi-turn conversation whose JSON body is ``total_bytes`` long (± a few bytes)."""
    turn = 2000
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a helpful assistant for a benchmark."}]
    base = len(_dumps({"model": MODEL, "messages": messages}))
    overhead = len(_dumps({"role": "assistant", "content": ""})) + 1
    remaining = total_bytes - base
    i = 0
    while remaining > overhead:
        n = min(turn, remaining - overhead)
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": _text(n, i)})
        remaining -= n + overhead
        i += 1
    if messages[-1]["role"] != "user":
        messages[-1]["role"] = "user"
    return _dumps({"model": MODEL, "messages": messages})


def sse_body() -> bytes:
    return _dumps({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a fox."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    })


@lru_cache(maxsize=8)
def sse_events(count: int) -> tuple[bytes, ...]:
    """``count`` events of a realistic OpenAI chat stream (``data: [DONE]`` is the last one).

    Role chunk, content deltas, finish chunk, usage chunk (stream_options.include_usage), DONE;
    every chunk carries "usage": null as the real API does in that mode.
    """
    if count < 4:
        raise ValueError("an SSE stream needs at least 4 events")
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": MODEL, "system_fingerprint": "fp_bench", "service_tier": "default",
            "usage": None}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _dumps({**base, "choices": [c]}) + b"\n\n"

    deltas = count - 4
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": " " + WORDS[i % len(WORDS)]}) for i in range(deltas)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 14, "completion_tokens": deltas, "total_tokens": 14 + deltas,
             "prompt_tokens_details": {"cached_tokens": 0}}
    events.append(b"data: " + _dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return tuple(events)
