"""The MCP manager against a real MCP server (tests/mcp_server.py, the official SDK over
Streamable HTTP on loopback): tool lists, allow/deny/match, refresh on list_changed, calls with
their timeout and size limit, a server that is down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from aibridge.config import McpConfig
from aibridge.intercept import Actor
from aibridge.mcp.manager import McpManager
from aibridge.mcp.names import injected_name
from tests.mcp_server import McpTestServer

ALICE = Actor("alice", {"Team": "ml"})
BOB = Actor("bob", {"Team": "web"})


@pytest.fixture(scope="module")
def server() -> Iterator[McpTestServer]:
    with McpTestServer() as srv:
        yield srv


def config(url: str, **server: object) -> McpConfig:
    return McpConfig.model_validate({"servers": {"docs": {"url": url, **server}},
                                     "refresh_interval": 30, "connect_timeout": 5})


async def until(check: Callable[[], object], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def started(cfg: McpConfig, env: dict[str, str] | None = None) -> McpManager:
    manager = McpManager()
    manager.configure(cfg, "Team", env or {})
    manager.start()
    return manager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_lists_tools_with_injected_names_and_headers_from_the_environment(server):
    manager = await started(config(server.url, headers_env={"Authorization": "DOCS_TOKEN"}),
                            {"DOCS_TOKEN": "Bearer docs-secret-1"})
    try:
        await until(lambda: manager.offer(ALICE))
        names = {spec.name for spec in manager.offer(ALICE).specs}
        assert {"bmcp_docs_search_docs", "bmcp_docs_delete_page", "bmcp_docs_slow"} <= names
        spec = manager.offer(ALICE).get("bmcp_docs_search_docs").spec
        assert spec.description == "Search the company documentation."
        assert spec.schema["properties"]["query"]["type"] == "string"
        assert any(h.get("authorization") == "Bearer docs-secret-1" for h in server.headers)
    finally:
        await manager.close()


async def test_deny_hides_allow_narrows_and_match_picks_callers(server):
    manager = await started(config(server.url, allow=["search_.*", "delete_page", "slow"],
                                   deny=["delete_.*"], match={"team": "ml"}))
    try:
        await until(lambda: manager.offer(ALICE))
        assert {s.name for s in manager.offer(ALICE).specs} == {
            "bmcp_docs_search_docs", "bmcp_docs_slow"}
        assert not manager.offer(BOB)  # not in team ml
    finally:
        await manager.close()


async def test_calls_run_the_tool_and_keep_to_timeout_and_size(server):
    manager = await started(config(server.url, call_timeout=0.5, max_result_bytes=1000))
    try:
        await until(lambda: manager.offer(ALICE))
        offer = manager.offer(ALICE)
        outcome = await manager.call(offer.get("bmcp_docs_search_docs"), '{"query": "build"}')
        assert outcome.output == "Docs for build: the build uses make."
        assert not outcome.is_error and outcome.error is None and outcome.result_bytes == 36
        big = await manager.call(offer.get("bmcp_docs_big_page"), '{"size": 5000}')
        assert len(big.output.encode()) <= 1000 and "cut by AI Bridge: 1000 of 5000" in big.output
        assert big.result_bytes == 5000
        slow = await manager.call(offer.get("bmcp_docs_slow"), '{"seconds": 5}')
        assert slow.is_error and "within 0.5s" in slow.error
        broken = await manager.call(offer.get("bmcp_docs_broken"), "{}")
        assert broken.is_error and "corrupt" in broken.output
        bad = await manager.call(offer.get("bmcp_docs_search_docs"), "not json")
        assert bad.is_error and "not JSON" in bad.error
        # The connection outlived the timeout.
        again = await manager.call(offer.get("bmcp_docs_search_docs"), '{"query": "x"}')
        assert not again.is_error
    finally:
        await manager.close()


async def test_list_changed_brings_new_tools(server):
    manager = await started(config(server.url))
    try:
        await until(lambda: manager.offer(ALICE))
        await asyncio.to_thread(server.add_tool, "new_lookup")
        await until(lambda: "bmcp_docs_new_lookup" in manager.offer(ALICE))
    finally:
        await manager.close()


async def test_lists_are_refetched_periodically_too(server):
    cfg = McpConfig.model_validate({"servers": {"docs": {"url": server.url}},
                                    "refresh_interval": 0.3, "connect_timeout": 5})
    manager = await started(cfg)
    try:
        await until(lambda: manager.offer(ALICE))
        await asyncio.to_thread(server.add_tool, "quiet_lookup", announce=False)
        await until(lambda: "bmcp_docs_quiet_lookup" in manager.offer(ALICE))
    finally:
        await manager.close()


async def test_a_down_server_offers_nothing_and_comes_back(caplog):
    port = free_port()
    manager = await started(config(f"http://127.0.0.1:{port}/mcp"))
    try:
        await until(lambda: manager.links["docs"].error is not None)
        assert not manager.offer(ALICE)
        assert "mcp server docs" in caplog.text and "retrying" in caplog.text
        srv = McpTestServer()
        srv.port = port
        with srv:
            await until(lambda: manager.offer(ALICE), timeout=15)
    finally:
        await manager.close()


async def test_reload_keeps_unchanged_links_and_replaces_changed_ones(server):
    manager = await started(config(server.url))
    try:
        await until(lambda: manager.offer(ALICE))
        link = manager.links["docs"]
        manager.configure(config(server.url), "Team", {})
        assert manager.links["docs"] is link
        manager.configure(config(server.url, deny=["slow"]), "Team", {})
        assert manager.links["docs"] is not link
        await until(lambda: manager.offer(ALICE) and "bmcp_docs_slow" not in manager.offer(ALICE))
        manager.configure(McpConfig(), "Team", {})
        assert not manager.active and not manager.offer(ALICE)
    finally:
        await manager.close()


def test_injected_names_are_safe_short_and_distinct():
    taken: set[str] = set()
    assert injected_name("docs", "search", taken) == "bmcp_docs_search"
    assert injected_name("docs", "a.b/c", taken) == "bmcp_docs_a_b_c"
    other = injected_name("docs", "a_b_c", taken)
    assert other != "bmcp_docs_a_b_c" and other.startswith("bmcp_docs_a_b_c_")
    long = injected_name("docs", "x" * 100, taken)
    assert len(long) == 64 and long.startswith("bmcp_docs_xxx")
