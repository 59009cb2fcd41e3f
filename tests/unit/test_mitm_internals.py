"""The shim over mitmproxy's private HTTP/1 error path must fail loudly when mitmproxy changes."""

import functools
import json

import pytest
from mitmproxy import connection, http
from mitmproxy.options import Options
from mitmproxy.proxy import commands
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import ErrorCode, _http1
from mitmproxy.proxy.layers.http._events import ResponseHeaders, ResponseProtocolError
from mitmproxy.test import tflow

from aibridge.addons import mitm_shim as mitm_internals
from aibridge.errors import proxy_failures as failures
from aibridge.errors.envelope import OPENAI_ERRORS
from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.providers.catalog import wire_api


def test_the_mitmproxy_internals_we_wrap_are_still_there():
    assert mitm_internals.problems() == []


def test_chat_tail_is_a_data_error_then_done():
    tail = wire_api("chat").stream_error_tail({"error": {"message": "cut"}})
    assert tail == b'data: {"error":{"message":"cut"}}\n\ndata: [DONE]\n\n'


def test_messages_and_responses_tails_are_error_events():
    body = {"type": "error", "error": {"type": "api_error", "message": "cut"}}
    for route in ("messages", "responses"):
        tail = wire_api(route).stream_error_tail(body)
        event, data = tail.decode().strip().split("\n")
        assert event == "event: error"
        assert json.loads(data.removeprefix("data: ")) == body


def test_generic_error_is_json_both_sdks_parse():
    response = failures.generic(502, "Cannot connect", ANTHROPIC_ERRORS)
    body = json.loads(response.content)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"] == "proxy: Cannot connect"


def test_generic_error_in_the_openai_shape_has_no_top_level_type():
    response = failures.generic(502, "Cannot connect", OPENAI_ERRORS)
    body = json.loads(response.content)
    assert response.status_code == 502
    assert "type" not in body
    assert body["error"]["message"] == "proxy: Cannot connect"


def test_client_cancel_is_not_a_failure():
    assert failures.is_client_cancel("Client disconnected.")
    assert not failures.is_client_cancel("server closed connection")


# --- the installed wrapper around Http1Server.send -------------------------------------


def install(monkeypatch: pytest.MonkeyPatch, take) -> None:
    # Set first, so that monkeypatch puts mitmproxy's own method back after the test.
    monkeypatch.setattr(_http1.Http1Server, "send", mitm_internals._ORIGINAL_SEND)
    assert mitm_internals.install(take) == []


def http1_server(response: http.Response | None = None) -> _http1.Http1Server:
    client = tflow.tclient_conn()
    client.state = connection.ConnectionState.OPEN
    server = _http1.Http1Server(Context(client, Options()))
    server.response = response
    return server


def refused() -> ResponseProtocolError:
    return ResponseProtocolError(1, "Connection refused", ErrorCode.CONNECT_FAILED)


def sent(cmds: list) -> list[tuple[type, object, bytes | None]]:
    return [(type(c), c.connection, getattr(c, "data", None)) for c in cmds]


def streaming() -> http.Response:
    return http.Response.make(
        200, b"", {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})


@pytest.mark.parametrize("response", [None, streaming()], ids=["before-headers", "mid-stream"])
def test_a_connection_take_knows_nothing_of_keeps_mitmproxys_behaviour(monkeypatch, response):
    taken = []

    def take(client: connection.Client) -> None:
        taken.append(client)
        return None

    install(monkeypatch, take)
    server = http1_server(response)
    got = list(server.send(refused()))
    assert taken == [server.conn]
    assert sent(got) == sent(list(mitm_internals._ORIGINAL_SEND(server, refused())))
    if response is None:  # mitmproxy's HTML error page, then the connection closes
        assert sent(got) == [
            (commands.SendData, server.conn, _http1.make_error_response(502, "Connection refused")),
            (commands.CloseConnection, server.conn, None),
        ]
    else:  # the stream is simply cut
        assert sent(got) == [(commands.CloseConnection, server.conn, None)]


def test_other_events_never_ask_for_a_handover(monkeypatch):
    taken = []
    install(monkeypatch, taken.append)
    server = http1_server()
    event = ResponseHeaders(1, http.Response.make(200, b"ok"), end_stream=False)
    got = list(server.send(event))
    assert taken == []
    assert [type(c) for c in got] == [commands.SendData]


def test_a_taken_connection_gets_the_generic_json_error(monkeypatch):
    handover = mitm_internals.Handover(functools.partial(failures.generic, shape=ANTHROPIC_ERRORS))
    install(monkeypatch, lambda client: handover)
    server = http1_server()
    got = list(server.send(refused()))
    assert [type(c) for c in got] == [commands.SendData, commands.CloseConnection]
    head, body = got[0].data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 502 ")
    assert b"\r\nConnection: close" in head
    assert json.loads(body) == json.loads(
        failures.generic(502, "Connection refused", ANTHROPIC_ERRORS).content)


def test_a_prepared_response_replaces_the_error_page(monkeypatch):
    prepared = http.Response.make(504, b'{"error":{"message":"timeout"}}',
                                  {"Content-Type": "application/json"})
    handover = mitm_internals.Handover(
        functools.partial(failures.generic, shape=OPENAI_ERRORS), response=prepared)
    install(monkeypatch, lambda client: handover)
    server = http1_server()
    got = list(server.send(refused()))
    assert [type(c) for c in got] == [commands.SendData, commands.CloseConnection]
    head, body = got[0].data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 504 ")
    assert b"\r\nConnection: close" in head
    assert body == b'{"error":{"message":"timeout"}}'


def test_a_stream_cut_mid_way_ends_with_the_prepared_tail(monkeypatch):
    tail = wire_api("chat").stream_error_tail({"error": {"message": "cut"}})
    handover = mitm_internals.Handover(
        functools.partial(failures.generic, shape=OPENAI_ERRORS), tail=tail)
    install(monkeypatch, lambda client: handover)
    server = http1_server(streaming())
    got = list(server.send(refused()))
    assert sent(got) == [
        (commands.SendData, server.conn, b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail)),
        (commands.CloseConnection, server.conn, None),
    ]
