"""The three things hooks cannot do in mitmproxy 12.2, done through a small, checked shim.

1. Errors mitmproxy generates itself (connection refused, DNS, TLS, a closed upstream) are sent
   as an HTML page, and a response set in the `error` hook is ignored on the wire. We wrap the
   HTTP/1 server side's `send` so such an error goes out as the JSON envelope — the one the
   `error` hook prepared for that client connection, or a generic one.
2. A stream that breaks after its headers were sent is simply cut. When the response is
   chunked and not content-encoded, the wrapper ends it with the error event the `error` hook
   prepared (SSE in the route's format) and a clean last chunk, so SDKs raise a readable error.
3. A request head that never ends is buffered whole, however large, until the connection times
   out (mitmproxy marks the spot "FIXME: protect against header size DoS"); no hook runs before
   the head is complete. We wrap the HTTP/1 server side's `read_headers`: past `MAX_RAW_HEAD`
   bytes without the head's end, the client gets a 431 (JSON in its API's shape on a provider
   host) and the connection is closed.

All rely on private mitmproxy API. `problems()` checks the version and the code we replace;
the addon refuses to install the shim (and logs why) when they changed, and a unit test fails.
Provider hosts are served to clients over HTTP/1.1 (see the addon's `tls_clienthello`), so
every bridged request goes through this HTTP/1 path; a request in any other HTTP version is
refused with a JSON error before it goes upstream (admission's `Http1Only`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, http, version
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

logger = logging.getLogger("aibridge")

SUPPORTED = "12.2."
_ORIGINAL_SEND = _http1.Http1Server.send
_ORIGINAL_READ_HEADERS = _http1.Http1Server.read_headers
# Well above the 64 KiB of header content admission's HeaderLimits lets through (the raw head
# adds the request line, separators and line ends): a head this large is refused either way.
MAX_RAW_HEAD = 128 << 10
MAX_DISCARDED = 16 << 20  # what a refused head may still send before the connection closes



@dataclass
class Handover:
    """What the bridge prepared for one client connection's next mitmproxy-made error."""

    generic: Callable[[int, str], http.Response]  # any error, in the connection's API shape
    response: http.Response | None = None  # the answer instead of the HTML error page
    tail: bytes | None = None  # the event that ends a stream cut mid-way


# Called with the client connection when mitmproxy writes an error to it: the handover for a
# bridged connection (taken: it is used once), or None to keep mitmproxy's own behaviour.
Take = Callable[[connection.Client], "Handover | None"]


def problems() -> list[str]:
    found = []
    if not version.VERSION.startswith(SUPPORTED):
        found.append(f"mitmproxy {version.VERSION} is not {SUPPORTED}x")
    try:
        source = inspect.getsource(_ORIGINAL_SEND)
    except (OSError, TypeError):
        source = ""
    if "make_error_response(status, event.message)" not in source:
        found.append("Http1Server.send no longer builds error pages the way we replace")
    from mitmproxy.addons import proxyserver
    from mitmproxy.proxy import server

    try:
        source = inspect.getsource(_ORIGINAL_READ_HEADERS)
    except (OSError, TypeError):
        source = ""
    if "self.buf.maybe_extract_lines()" not in source or "self.state = self.done" not in source:
        found.append("Http1Server.read_headers no longer reads the head the way we guard")
    if not hasattr(server.ConnectionHandler, "close_connection"):
        found.append("ConnectionHandler.close_connection is gone")
    if "self.connections" not in inspect.getsource(proxyserver.Proxyserver):
        found.append("Proxyserver.connections is gone")
    return found


def install(take: Take) -> list[str]:
    """Wrap Http1Server.send; returns the problems that prevented it (empty = installed).
    Connections `take` knows nothing of keep mitmproxy's own error pages."""
    found = problems()
    if found:
        return found

    def send(self: _http1.Http1Server, event):
        # A plain function handing back the original generator: the usual events pay for one
        # isinstance, not for a second generator frame around every command they yield.
        if not isinstance(event, ResponseProtocolError):
            return _ORIGINAL_SEND(self, event)
        handover = take(self.conn)
        if handover is None:
            return _ORIGINAL_SEND(self, event)
        return send_error(self, event, handover)

    def send_error(self: _http1.Http1Server, event: ResponseProtocolError, handover: Handover):
        client = self.conn
        if not (client.state & connection.ConnectionState.CAN_WRITE):
            return
        status = event.code.http_status_code()
        response, tail = handover.response, handover.tail
        if not self.response and status is not None:
            response = response or handover.generic(status, event.message)
            # We close the connection next: say so, or a keep-alive client may already have
            # sent its next request into a socket that is about to be reset.
            response.headers["Connection"] = "close"
            yield commands.SendData(client, http1.assemble_response(response))
        elif self.response and tail is not None and _is_plain_chunked(self.response):
            yield commands.SendData(client, b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
        yield commands.CloseConnection(client)

    def read_headers(self: _http1.Http1Server, event: events.ConnectionEvent):
        yield from _ORIGINAL_READ_HEADERS(self, event)
        if getattr(self.state, "__func__", None) is read_headers \
                and isinstance(event, events.DataReceived) and len(self.buf) > MAX_RAW_HEAD:
            # Still no end of the head (the original takes a complete one off the buffer).
            handover = take(self.conn)
            message = f"request head larger than {MAX_RAW_HEAD >> 10} KiB"
            response = (handover.generic(431, message) if handover is not None
                        else http.Response.make(431, message))
            response.headers["Connection"] = "close"
            self.buf = type(self.buf)()  # refused: the buffered head goes
            yield commands.SendData(self.conn, http1.assemble_response(response))
            yield commands.Log(f"{self.conn.peername}: {message}; closing the connection")
            self.state = _discard_rest_of_head(self)

    _http1.Http1Server.send = send  # type: ignore[method-assign]
    _http1.Http1Server.read_headers = read_headers  # type: ignore[method-assign]
    return []


def _discard_rest_of_head(layer: _http1.Http1Server) -> Callable[[events.Event], Any]:
    """After the 431: read and drop the rest of the head, then close. Closing at once, with
    the client still sending, would reset the connection before it reads why; dropping keeps
    memory flat, and `MAX_DISCARDED` bounds the wait for a head that never ends."""
    seen, tail = 0, b""

    def discard(event: events.Event):
        nonlocal seen, tail
        if isinstance(event, events.DataReceived):
            window, layer.buf = tail + bytes(layer.buf), type(layer.buf)()
            seen += len(window) - len(tail)
            # The head ends with an empty line: "\r\n\r\n" or "\n\n".
            if seen < MAX_DISCARDED and b"\n\r\n" not in window and b"\n\n" not in window:
                tail = window[-2:]
                return
        yield commands.CloseConnection(layer.conn)
        layer.state = layer.done

    return discard


def close_server_connection(proxyserver: object, flow: http.HTTPFlow) -> bool:
    """Close the flow's upstream connection (an upstream timeout); mitmproxy then reports the
    flow as failed through the normal error path."""
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    if handler is None:
        return False
    # While connecting (TCP or TLS) the flow does not know its server connection yet; the
    # client's handler does. HTTP/1 has one request in flight per client connection.
    address = (flow.request.host, flow.request.port)
    servers = [conn for conn in list(handler.transports)
               if conn is flow.server_conn or getattr(conn, "address", None) == address]
    for conn in servers:
        if conn is not flow.client_conn:
            handler.close_connection(conn)
    return bool(servers)


def _is_plain_chunked(response: http.Response) -> bool:
    return ("chunked" in response.headers.get("transfer-encoding", "").lower()
            and response.headers.get("content-encoding", "identity").lower() == "identity")

