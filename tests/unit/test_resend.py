"""The re-send client leaves through the same corporate proxy as mitmproxy's own connections."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
from mitmproxy import http
from mitmproxy.addons.upstream_auth import UpstreamAuth
from mitmproxy.options import Options
from mitmproxy.test import taddons

from aibridge.upstream import resend


def options(*modes: str, upstream_auth: str | None = None) -> Options:
    # Real options, with the upstream_auth option the default addon declares in mitmdump.
    with taddons.context(UpstreamAuth()) as tctx:
        tctx.options.update(mode=list(modes), upstream_auth=upstream_auth)
        return tctx.options


@pytest.mark.parametrize(("modes", "expected"), [
    (["regular"], None),
    (["regular@127.0.0.1:0", "socks5@1080"], None),
    (["upstream:http://corp.example:3128"], "http://corp.example:3128"),
    (["upstream:https://corp.example"], "https://corp.example:443"),
    (["upstream:corp.example:3128@127.0.0.1:0"], "http://corp.example:3128"),  # listen part
    (["upstream:http://[::1]:3128@8080"], "http://[::1]:3128"),
    (["regular@8081", "upstream:http://10.0.0.1:8888@8080"], "http://10.0.0.1:8888"),
])
def test_upstream_proxy_url_from_modes(modes, expected):
    assert resend.upstream_proxy_url(options(*modes)) == expected


def test_upstream_auth_becomes_proxy_credentials():
    opts = options("upstream:http://corp.example:3128", upstream_auth="svc@corp:p:w/d")
    # Percent-encoded, so '@', ':' and '/' in the secret cannot change the host.
    assert resend.upstream_proxy_url(opts) == "http://svc%40corp:p%3Aw%2Fd@corp.example:3128"


def test_upstream_auth_is_ignored_without_upstream_mode():
    assert resend.upstream_proxy_url(options("regular", upstream_auth="u:p")) is None


def test_options_without_upstream_auth_addon():
    # A bare Options (no UpstreamAuth addon loaded) has no upstream_auth option at all.
    opts = Options(mode=["upstream:http://corp.example:3128"])
    assert resend.upstream_proxy_url(opts) == "http://corp.example:3128"


async def test_new_client_sends_through_the_proxy():
    """A plain-HTTP upstream goes to the proxy in absolute form, with the URL's credentials."""
    heads: list[bytes] = []

    async def corp_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await reader.readexactly(length)
        heads.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(corp_proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with resend.new_client(False, 5, proxy=f"http://svc:s%40cret@127.0.0.1:{port}"
                                     ) as client:
            request = http.Request.make("POST", "http://api.openai.com/v1/chat/completions",
                                        b"{}", {"authorization": "Bearer k0"})
            response = await resend.resend(client, request, "authorization", "Bearer k1")
    finally:
        server.close()
        await server.wait_closed()
    assert response.status_code == 200
    assert response.content == b"{}"
    request_line, *fields = heads[0].decode().strip().split("\r\n")
    assert request_line == "POST http://api.openai.com/v1/chat/completions HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (f.partition(": ") for f in fields)}
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"svc:s@cret").decode()
    assert headers["authorization"] == "Bearer k1"


def test_new_client_without_proxy_ignores_the_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere:1")
    monkeypatch.setenv("HTTP_PROXY", "http://elsewhere:1")
    monkeypatch.setenv("ALL_PROXY", "http://elsewhere:1")
    client = resend.new_client(False, 5)
    # trust_env=False: no proxy transport was mounted from the environment.
    assert all(transport is None for transport in client._mounts.values())
