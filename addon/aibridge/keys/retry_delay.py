"""How long a provider key should rest, from the upstream response headers (docs/behaviour.md §6.3).

Pure functions. `headers` is any mapping with `.items()` (mitmproxy `http.Headers`, httpx headers
or a plain dict); names are matched case-insensitively here so a plain dict works too. `now` is
wall-clock epoch seconds, injected so tests need no real clock.

Sources, in order of trust for a 429: `retry-after-ms`, `Retry-After` (seconds, decimal or
HTTP-date), Google's `RetryInfo` in the error body (`"retryDelay": "37s"`, a protobuf Duration;
Gemini sends no header), then the providers' own reset headers: Anthropic's
`anthropic-ratelimit-*-reset` (RFC 3339 timestamps) and OpenAI's
`x-ratelimit-reset-{requests,tokens}` (Go durations, `6m0s`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from mitmproxy.http import Headers

from aibridge.errors.envelope import parse_retry_after

DEFAULT_COOLDOWN = 60.0
MIN_COOLDOWN = 1.0
MAX_COOLDOWN = 3600.0

# (remaining header, reset header, reset format); a remaining of 0 means "wait for this reset".
_ANTHROPIC_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")
_OPENAI_KINDS = ("requests", "tokens")
_LIMITS: tuple[tuple[str, str, bool], ...] = (
    *((f"anthropic-ratelimit-{k}-remaining", f"anthropic-ratelimit-{k}-reset", True)
      for k in _ANTHROPIC_KINDS),
    *((f"x-ratelimit-remaining-{k}", f"x-ratelimit-reset-{k}", False) for k in _OPENAI_KINDS),
)

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}
# Longest unit names first so "ms" is not read as "m" followed by garbage.
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|h|m|s)")
_GO_DURATION = re.compile(rf"\+?(?:{_GO_PART.pattern})+")


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go `time.Duration` string (`1s`, `6m0s`, `120ms`, `1h2m3.5s`); None if invalid.

    Negative durations are refused: a reset in the past tells us nothing.
    """
    text = text.strip()
    if text in ("0", "+0"):  # Go's one unit-less form
        return 0.0
    if not _GO_DURATION.fullmatch(text):
        return None
    seconds = sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(text))
    return seconds if math.isfinite(seconds) else None


_LIMIT_NAMES = frozenset(name.encode() for limit in _LIMITS for name in limit[:2])


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Lowercase name -> value; for mitmproxy `Headers` only the `_LIMITS` names (the only ones
    looked up), read in one pass over the raw fields instead of a lookup per header name."""
    if type(headers) is Headers:
        found: dict[str, str] = {}
        for name, value in headers.fields:
            if not name.isascii():  # str.lower() may fold it into an ASCII name: the long way
                break
            name = name.lower()
            if name in _LIMIT_NAMES:
                key, text = name.decode(), value.decode("utf-8", "surrogateescape")
                # Repeated fields fold as `Headers[name]` folds them.
                found[key] = f"{found[key]}, {text}" if key in found else text
        else:
            return found
    return {k.lower(): v for k, v in headers.items()}


def _rfc3339_delay(text: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:  # RFC 3339 always carries an offset; assume UTC if a proxy lost it
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def _reset(value: str | None, rfc3339: bool, now: float) -> float | None:
    """Seconds until a reset header's moment (≤ 0 if already past); None if absent or garbage."""
    if value is None:
        return None
    delay = _rfc3339_delay(value, now) if rfc3339 else parse_go_duration(value)
    return delay if delay is not None and math.isfinite(delay) else None


def reset_delay(headers: Mapping[str, str], now: float) -> float | None:
    """The soonest positive delay among the provider reset headers; None if there is none."""
    h = _lower(headers)
    delays = [d for _, reset, rfc in _LIMITS if (d := _reset(h.get(reset), rfc, now) or 0) > 0]
    return min(delays, default=None)


def clamp(seconds: float, minimum: float = MIN_COOLDOWN, maximum: float = MAX_COOLDOWN) -> float:
    """Bound a cooldown: sub-second hints would hammer the provider, absurd ones park a key."""
    return min(max(seconds, minimum), maximum)


RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
# A protobuf Duration in JSON: seconds with up to nine decimals and an "s".
_DURATION = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)s\s*")
MAX_ERROR_BODY = 64 * 1024  # an error body longer than this is not read for a retry delay


def parse_duration(text: object) -> float | None:
    """Seconds in a protobuf Duration (`"37s"`, `"0.5s"`); None if it is not one."""
    if not isinstance(text, str) or not (match := _DURATION.fullmatch(text)):
        return None
    return float(match[1])


def retry_info_delay(body: bytes | None) -> float | None:
    """The `retryDelay` of Google's `RetryInfo` error detail in an error body (the envelope
    `{"error": {"details": [...]}}`, or that envelope as the one element of a JSON array, as a
    Gemini stream answers); None when the body has none (or is no such JSON)."""
    if not body or len(body) > MAX_ERROR_BODY:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    error = doc.get("error") if isinstance(doc, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and detail.get("@type") == RETRY_INFO:
            delay = parse_duration(detail.get("retryDelay"))
            if delay is not None and math.isfinite(delay):
                return delay
    return None


def cooldown_after_429(headers: Mapping[str, str], now: float, *, body: bytes | None = None,
                       default: float = DEFAULT_COOLDOWN, minimum: float = MIN_COOLDOWN,
                       maximum: float = MAX_COOLDOWN) -> float:
    """How long a key rests after a 429: the explicit retry hint (headers, then the body's
    `RetryInfo`), else the reset headers, else `default`; always clamped to `minimum` …
    `maximum`. `body` is the decoded error body, if read."""
    delay = parse_retry_after(headers, now=datetime.fromtimestamp(now, UTC))
    if delay <= 0:
        delay = retry_info_delay(body) or 0.0
    if delay <= 0:
        delay = reset_delay(headers, now) or default
    return clamp(delay, minimum, maximum)


def _exhausted(value: str | None) -> bool:
    try:
        return value is not None and int(value.strip()) <= 0
    except ValueError:
        return False


def quota_exhausted_for(headers: Mapping[str, str], now: float, *,
                        default: float = DEFAULT_COOLDOWN, minimum: float = MIN_COOLDOWN,
                        maximum: float = MAX_COOLDOWN) -> float | None:
    """When a rate-limit-remaining header says 0, how long until that limit resets (clamped;
    `default` if its reset header is missing); None while quota remains.

    Lets the pool skip a key before the provider answers 429. With several limits spent, the
    latest reset wins: the key is of no use until all of them have refilled.
    """
    h = _lower(headers)
    delays = [default if (d := _reset(h.get(reset), rfc, now)) is None else d
              for remaining, reset, rfc in _LIMITS if _exhausted(h.get(remaining))]
    # A reset already past (clock skew) still gets the minimum rest, not the long default.
    return clamp(max(delays), minimum, maximum) if delays else None
