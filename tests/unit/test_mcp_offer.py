"""The core's request-side step of the MCP tool loop (addons/tool_rounds.offer): what goes
upstream when the caller has tools."""

from __future__ import annotations

import json
from types import SimpleNamespace

from mitmproxy.test import tflow, tutils

from aibridge.addons import tool_rounds
from aibridge.config import McpConfig
from aibridge.mcp.catalog import Offer, RemoteTool
from aibridge.providers.anthropic_messages import MESSAGES
from aibridge.providers.tooluse import ToolSpec
from aibridge.streaming.tool_loop import Aliases

TOOL = RemoteTool("docs", "search", ToolSpec("bmcp_docs_search", "Search.", {"type": "object"}))
OFFER = Offer((TOOL,))


def setup(body: dict, *, streaming: bool = False, strip: bool = False,
          offer: Offer = OFFER, problems: list[str] | None = None):
    mcp = SimpleNamespace(active=True, offer=lambda actor: offer, config=McpConfig())
    runtime = SimpleNamespace(mcp=mcp, reporter=None, tool_aliases=Aliases(), secret_scan=None,
                              splice_problems=problems or [])
    ex = SimpleNamespace(interception=SimpleNamespace(streaming=streaming, id="i-1"),
                         api=MESSAGES, provider=SimpleNamespace(strip_client_identity=strip),
                         caller=SimpleNamespace(actor="alice"), tool_loop=None)
    flow = tflow.tflow(req=tutils.treq(content=json.dumps(body).encode(), method=b"POST"))
    return runtime, flow, ex


def sent(flow) -> dict:
    return json.loads(flow.request.content)


def test_the_tools_are_appended_to_what_goes_upstream():
    body = {"messages": [], "stream": True}
    runtime, flow, ex = setup(body, streaming=True)
    tool_rounds.offer(runtime, flow, ex, body)
    assert ex.tool_loop is not None
    assert [t["name"] for t in sent(flow)["tools"]] == ["bmcp_docs_search"]
    assert flow.request.headers["accept-encoding"] == "identity"  # the stream is spliced
    assert "tools" not in body  # what was recorded stays as the client sent it


def test_a_caller_without_tools_sends_the_request_as_it_was():
    body = {"messages": []}
    runtime, flow, ex = setup(body, offer=Offer(()))
    before = flow.request.content
    tool_rounds.offer(runtime, flow, ex, body)
    assert ex.tool_loop is None and flow.request.content == before


def test_streams_get_no_tools_when_later_rounds_could_not_reach_the_client():
    body = {"messages": [], "stream": True}
    runtime, flow, ex = setup(body, streaming=True, problems=["mitmproxy changed"])
    tool_rounds.offer(runtime, flow, ex, body)
    assert ex.tool_loop is None and "tools" not in sent(flow)


def test_stripped_client_identity_stays_stripped():
    body = {"messages": [], "metadata": {"user_id": "user-123"}}
    runtime, flow, ex = setup(body, strip=True)
    flow.request.content = json.dumps({"messages": []}).encode()  # as privacy left it
    tool_rounds.offer(runtime, flow, ex, body)
    assert "metadata" not in sent(flow) and "bmcp_docs_search" in flow.request.text


def test_the_private_mitmproxy_api_for_spliced_streams_is_there():
    """What addons/client_writer relies on; when it changes, streams get no MCP tools (and
    the start-up log says why) rather than a broken body."""
    from aibridge.addons import client_writer

    assert client_writer.problems() == []
