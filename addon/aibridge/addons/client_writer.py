"""The client's side of a streamed response, for the tool loop's later rounds.

mitmproxy streams a response through the flow's `response.stream` callable while the upstream
sends; when the first round's body has ended it calls the `response` hook, and once the hook
returns it ends the client's body (HTTP/1.1: the last chunk). The tool loop
(streaming/tool_loop.py) writes its later rounds in between, from that async hook, framed as
mitmproxy frames the body (chunked, or raw until the connection closes; provider hosts are
served over HTTP/1.1 only, see the core's `tls_clienthello`), encrypted by the connection's own
TLS layer, to the connection's writer. While a hook runs, mitmproxy's layers for that
connection are paused, so nothing else writes to it in between.

This relies on private mitmproxy API (the proxy server's connection handlers, their transports
and layers, also used by `mitm_shim`); `problems()` says what changed, and the bridge then
offers its tools on non-streaming requests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator

from mitmproxy import connection, http
from mitmproxy.proxy import commands, layer
from mitmproxy.proxy.layers import tls

from aibridge.addons import mitm_shim

_MAX_DEPTH = 64  # layers between a connection's root and its client TLS layer are few


def problems() -> list[str]:
    found = mitm_shim.problems()
    from mitmproxy.proxy import server

    source = inspect.getsource(server.ConnectionHandler)
    if "self.transports" not in source or "_drain_lock" not in source:
        found.append("ConnectionHandler.transports or its drain lock is gone")
    if "self.tls.sendall(data)" not in inspect.getsource(tls.TLSLayer.send_data):
        found.append("TLSLayer.send_data no longer encrypts what it is given")
    return found


class ClientWriter:
    def __init__(self, tls_layer: tls.ClientTLSLayer, writer: asyncio.StreamWriter,
                 drain_lock: asyncio.Lock | None, chunked: bool) -> None:
        self._tls = tls_layer
        self._writer = writer
        self._lock = drain_lock or asyncio.Lock()
        self._chunked = chunked

    def write(self, data: bytes) -> bool:
        """Queue `data` as part of the body; False when the client is gone."""
        client = self._tls.conn
        if self._writer.is_closing() or not (client.state & connection.ConnectionState.CAN_WRITE):
            return False
        if data:
            framed = b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data
            for command in self._tls.send_data(framed):
                if isinstance(command, commands.SendData):
                    self._writer.write(command.data)
        return True

    async def drain(self) -> None:
        with contextlib.suppress(OSError):  # a gone client shows in the next write
            async with self._lock:  # mitmproxy's own drains hold it too
                await self._writer.drain()


def for_flow(proxyserver: object, flow: http.HTTPFlow) -> ClientWriter | None:
    """The writer of the flow's (TLS) client connection, or None when it cannot be found."""
    client = flow.client_conn
    handler = getattr(proxyserver, "connections", {}).get(client.id)
    io = getattr(handler, "transports", {}).get(client) if handler is not None else None
    writer = getattr(io, "writer", None)
    if not isinstance(writer, asyncio.StreamWriter) or flow.response is None:
        return None
    tls_layer = next((found for found in _layers(getattr(handler, "layer", None))
                      if isinstance(found, tls.ClientTLSLayer) and found.conn is client), None)
    if tls_layer is None:
        return None
    chunked = "chunked" in flow.response.headers.get("transfer-encoding", "").lower()
    return ClientWriter(tls_layer, writer, getattr(handler, "_drain_lock", None), chunked)


def _layers(root: object) -> Iterator[layer.Layer]:
    """Every layer reachable from `root`: through attributes, bound handlers, HTTP streams."""
    seen: set[int] = set()
    pending: list[tuple[object, int]] = [(root, 0)]
    while pending:
        obj, depth = pending.pop()
        if not isinstance(obj, layer.Layer) or id(obj) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(obj))
        yield obj
        for value in vars(obj).values():
            if isinstance(value, dict):
                pending += [(v, depth + 1) for v in value.values()]
            else:
                pending.append((getattr(value, "__self__", value), depth + 1))
