"""A real MCP server for the tests: built with the official `mcp` SDK (`MCPServer`), served over
Streamable HTTP by uvicorn on a free port of 127.0.0.1, in a daemon thread with its own event
loop (like tests/fakeprovider.py), so sync and async tests and a mitmdump subprocess can use it.

Tools (a company's docs service, in miniature):
- `search_docs(query)`: "Docs for <query>: the build uses make." (the answer tests look for)
- `delete_page(page)`: what a `deny` rule is there to hide
- `big_page(size)`: `size` characters of text (the bridge's result limit)
- `slow(seconds)`: sleeps first (the bridge's call timeout)
- `broken()`: raises (a tool error the model is told about)

`add_tool(name)` registers one more tool and announces it (`notifications/tools/list_changed`
on `subscriptions/listen`). Every call is kept in `calls`, every request's headers in `headers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any, Self

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged

ANSWER = "Docs for {query}: the build uses make."
CONFIG = "[default]\nregion = eu-west-1\naws_access_key_id = AKIAZ7Q3XWERTYUIOPLK\n"


class McpTestServer:
    def __init__(self, name: str = "company-docs") -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self._bus = InMemorySubscriptionBus()
        self.server = MCPServer(name, subscriptions=self._bus, log_level="WARNING")
        self._register()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._uvicorn: uvicorn.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _register(self) -> None:
        calls = self.calls

        @self.server.tool(description="Search the company documentation.")
        def search_docs(query: str) -> str:
            calls.append(("search_docs", {"query": query}))
            return ANSWER.format(query=query)

        @self.server.tool(description="Delete a documentation page.")
        def delete_page(page: str) -> str:
            calls.append(("delete_page", {"page": page}))
            return f"deleted {page}"

        @self.server.tool(description="A long page.")
        def big_page(size: int) -> str:
            calls.append(("big_page", {"size": size}))
            return "x" * size

        @self.server.tool(description="Answers after a while.")
        async def slow(seconds: float) -> str:
            calls.append(("slow", {"seconds": seconds}))
            await asyncio.sleep(seconds)
            return "finally"

        @self.server.tool(description="The deployment configuration.")
        def read_config() -> str:
            calls.append(("read_config", {}))
            return CONFIG

        @self.server.tool(description="Always fails.")
        def broken() -> str:
            calls.append(("broken", {}))
            raise ToolError("the docs index is corrupt")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))  # 0 at first start, the same port again after
        self.port = self._sock.getsockname()[1]
        app = self._recording(self.server.streamable_http_app())
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._uvicorn = uvicorn.Server(config)
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None and self._uvicorn is not None
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(started.set)
            self._loop.run_until_complete(self._uvicorn.serve(sockets=[self._sock]))

        self._thread = threading.Thread(target=run, name="mcp-test-server", daemon=True)
        self._thread.start()
        started.wait(10)
        deadline = time.monotonic() + 10
        while not self._uvicorn.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self._uvicorn.started, "the MCP test server did not start"
        return self

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._thread = self._uvicorn = self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _recording(self, app: Any) -> Any:
        headers = self.headers

        async def recording(scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                headers.append({k.decode("latin-1").lower(): v.decode("latin-1")
                                for k, v in scope.get("headers", [])})
            await app(scope, receive, send)
        return recording

    # -- changes -----------------------------------------------------------------------------

    def add_tool(self, name: str, text: str = "added", *, announce: bool = True) -> None:
        """A new tool, announced to every `subscriptions/listen` stream (unless not)."""
        calls = self.calls

        def added() -> str:
            calls.append((name, {}))
            return text

        self.server.add_tool(added, name=name, description=f"The tool {name}.")
        if not announce:
            return
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._bus.publish(ToolsListChanged()),
                                         self._loop).result(10)
