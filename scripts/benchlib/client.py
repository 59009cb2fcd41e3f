"""A lean HTTP/1.1 benchmark client on raw asyncio streams.

One TCP connection per worker, kept alive; through a proxy it sends CONNECT and then upgrades
the same stream to TLS, so there is exactly one TLS handshake per connection (with the proxy,
or with the fake on the direct path). Requests are pre-built bytes with Content-Length bodies;
responses are read by Content-Length or chunked framing, and SSE responses are counted event by
event as the chunks arrive so the first complete event gets its own timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from benchlib.procs import BenchError

LIMIT = 1 << 20
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)")
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked")
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close")


def client_context(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def build_request(host: str, path: str, body: bytes, *, sse: bool = False) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "User-Agent: aibridge-bench/1\r\n"
            f"Accept: {'text/event-stream' if sse else 'application/json'}\r\n"
            "Content-Type: application/json\r\n"
            "Authorization: Bearer sk-user-placeholder\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass
class Endpoint:
    """Where a client connects: directly to ``port`` (TLS), or via the proxy at ``proxy_port``
    with ``CONNECT connect_target``; ``sni`` is the TLS server name either way."""

    port: int
    sni: str
    ctx: ssl.SSLContext
    proxy_port: int | None = None
    connect_target: str | None = None


class Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, ep: Endpoint) -> Conn:
        if ep.proxy_port is None:
            r, w = await asyncio.open_connection("127.0.0.1", ep.port, ssl=ep.ctx,
                                                 server_hostname=ep.sni, limit=LIMIT)
            return cls(r, w)
        r, w = await asyncio.open_connection("127.0.0.1", ep.proxy_port, limit=LIMIT)
        target = ep.connect_target
        w.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = await r.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200" not in status:
            w.close()
            raise BenchError(f"CONNECT {target} via :{ep.proxy_port} failed: {status!r}")
        await w.start_tls(ep.ctx, server_hostname=ep.sni)
        return cls(r, w)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)

    async def exchange(self, request: bytes, sse: bool) -> tuple[int, int, int, int, bytes]:
        """Send one request and read the whole response.

        Returns (status, t_sent_ns, t_first_event_ns or 0, events, body-or-empty): the body is
        kept only for non-SSE responses; events counts complete SSE events (blank-line ends).
        """
        reader = self.reader
        t_sent = perf_counter_ns()
        self.writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if _CLOSE.search(lower):
            raise BenchError(f"server closed the keep-alive connection: {head[:200]!r}")
        t_first = 0
        events = 0
        if _CHUNKED.search(lower):
            tail = b""
            parts: list[bytes] = []
            while True:
                line = await reader.readline()
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    raise BenchError(f"bad chunk size line {line[:80]!r}") from None
                if size == 0:
                    for _ in range(100):  # trailers up to the blank line
                        line = await reader.readline()
                        if line in (b"\r\n", b"\n"):
                            break
                        if not line:
                            raise BenchError("EOF in chunked trailers")
                    break
                data = (await reader.readexactly(size + 2))[:-2]
                if sse:
                    events += (tail + data).count(b"\n\n")
                    tail = data[-1:]
                    if not t_first and events:
                        t_first = perf_counter_ns()
                else:
                    parts.append(data)
            body = b"" if sse else b"".join(parts)
        else:
            m = _CONTENT_LENGTH.search(lower)
            if m is None:
                raise BenchError(f"response without framing: {head[:200]!r}")
            body = await reader.readexactly(int(m.group(1)))
            if sse:
                events = body.count(b"\n\n")
                t_first = perf_counter_ns() if events else 0
                body = b""
        return status, t_sent, t_first, events, body


@dataclass
class LoadResult:
    latencies_ns: list[int]
    first_event_ns: list[int]
    wall_s: float


async def run_load(conns: list[Conn], request: bytes, n: int, sse: bool,
                   expect_events: int) -> LoadResult:
    """``n`` requests spread over ``conns`` (each worker takes the next until n are done)."""
    latencies: list[int] = []
    first: list[int] = []
    taken = 0

    async def worker(conn: Conn) -> None:
        nonlocal taken
        while taken < n:
            taken += 1
            status, t0, t_first, events, body = await conn.exchange(request, sse)
            t1 = perf_counter_ns()
            if status != 200:
                raise BenchError(f"HTTP {status}: {body[:300]!r}")
            if sse:
                if events != expect_events:
                    raise BenchError(f"SSE: got {events} events, expected {expect_events}")
                first.append(t_first - t0)
            latencies.append(t1 - t0)

    start = perf_counter_ns()
    await _all(worker(c) for c in conns)
    wall = (perf_counter_ns() - start) / 1e9
    return LoadResult(latencies, first, wall)


async def warm_up(conns: list[Conn], request: bytes, count: int, sse: bool,
                  expect_events: int) -> None:
    async def one(conn: Conn) -> None:
        for _ in range(count):
            status, _t0, _tf, events, body = await conn.exchange(request, sse)
            if status != 200:
                raise BenchError(f"warm-up: HTTP {status}: {body[:300]!r}")
            if sse and events != expect_events:
                raise BenchError(f"warm-up: SSE got {events} events, expected {expect_events}")

    await _all(one(c) for c in conns)


async def _all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as tg:
            for coro in coros:
                tg.create_task(coro)
    except ExceptionGroup as eg:
        first = eg.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        raise first from None
