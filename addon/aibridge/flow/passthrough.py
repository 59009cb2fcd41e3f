"""A passthrough's life apart from a bridged request's: its body streamed rather than held when
it is large, its bytes counted, and one record and one access-log line when it ends.

Every passthrough is recorded, whoever's key it carried (a central key or the caller's own: the
row says which), and so is a refusal on a passed-through or denied path. A row per request costs
one small insert on the recorder's thread, nothing on the request path.

Bodies above `STREAM_ABOVE`, or of unknown size (chunked), are streamed to the provider as they
arrive: a file upload or a batch file never sits in the proxy's memory. Smaller ones are held,
so that a central key the provider refuses fails over to the next key transparently (a streamed
body cannot be sent twice; its client is asked to retry instead, see upstream.failover).
"""

from __future__ import annotations

import time

from mitmproxy import http

from aibridge.errors import categories
from aibridge.flow.exchange import Exchange
from aibridge.flow.start import placeholder
from aibridge.ids import new_id
from aibridge.observe import accesslog
from aibridge.observe.reporting import Reporter
from aibridge.providers import DENIED, PASSTHROUGH
from aibridge.recording.records import Passthrough, truncate_utf8
from aibridge.textsafe import storable

STREAM_ABOVE = 1 << 20  # bytes of declared body above which a passthrough body is streamed


class Meter:
    """A stream callable that counts the body bytes it passes on unchanged."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, chunk: bytes) -> bytes:
        self.count += len(chunk)
        return chunk


def recorded(ex: Exchange) -> bool:
    """Whether the flow ends in a passthrough record (bridged ones are interceptions)."""
    return ex.interception is None and ex.match.kind in (PASSTHROUGH, DENIED)


def streams_body(request: http.Request) -> bool:
    """A body to stream rather than hold: chunked, or declared above STREAM_ABOVE, or already
    streamed by mitmproxy's own `stream_large_bodies`."""
    if request.stream:
        return True
    if "transfer-encoding" in request.headers:
        return True
    try:
        return int(request.headers.get("content-length", "0")) > STREAM_ABOVE
    except ValueError:
        return False


def framing(request: http.Request) -> tuple[str | None, bool]:
    """The client's body framing (Content-Length, chunked), read before the headers are rebuilt:
    a streamed body goes upstream before its length is known to the rewrite."""
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    return request.headers.get("content-length"), chunked


def keep_framing(request: http.Request, declared: tuple[str | None, bool]) -> None:
    """Put the client's framing back on rebuilt headers (which counted an empty body)."""
    length, chunked = declared
    if chunked:
        request.headers.pop("content-length", None)
        request.headers["Transfer-Encoding"] = "chunked"
    elif length is not None:
        request.headers["Content-Length"] = length


def ended(reporter: Reporter, flow: http.HTTPFlow, ex: Exchange, *, outcome: str,
          status: int | None, reason: str | None, sent: bool, log: bool = True) -> None:
    """Record the passthrough (and write its access-log line when `log`). `sent`: whether its
    request went upstream (a refusal sent nothing)."""
    provider = ex.provider
    credential = ex.info or placeholder(provider)
    request, response = flow.request, flow.response
    error_type = None
    if outcome != "completed":
        error_type = categories.error_type(
            status=status, overload_status=provider.api.errors.overload_status,
            timed_out=ex.timed_out is not None, cancelled=outcome == "cancelled",
            circuit_open=ex.circuit_open, key_pool_kind=ex.pool_error)
    attempt = ex.credential.attempt if ex.credential is not None else None
    record = Passthrough(
        id=new_id(), started_at=request.timestamp_start, ended_at=time.time(),
        actor_id=ex.caller.actor.id, actor_metadata=dict(ex.caller.actor.metadata),
        provider=provider.name, provider_type=provider.type, method=storable(request.method),
        path=storable(request.path.split("?", 1)[0]), status=status, outcome=outcome,
        error_type=error_type, error_message=truncate_utf8(reason),
        request_bytes=_size(request) if sent else 0,
        response_bytes=_size(response) if response is not None else 0,
        credential_kind=str(credential.kind), credential_hint=credential.hint,
        credential_length=credential.length,
        user_agent=storable(request.headers.get("user-agent", "")) or None,
        key_attempts=attempt.attempts if attempt is not None else 0)
    reporter.passthrough(record)
    if log:
        accesslog.passthrough(record.id, record.actor_id, record.provider, record.method,
                              record.path, status if status is not None else "-",
                              f"{record.credential_kind}:{record.credential_hint}",
                              record.request_bytes, record.response_bytes, outcome, reason)


def _size(message: http.Message) -> int:
    if isinstance(message.stream, Meter):
        return message.stream.count
    return len(message.raw_content or b"")
