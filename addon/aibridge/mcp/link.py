"""One MCP server: its connection, its tools, and calls to them.

`run` is a background task on mitmproxy's event loop; nothing here is awaited by a request
except `call`. It connects with the official SDK's client over Streamable HTTP (the configured
headers on every request), lists the tools, then waits for a reason to list them again: a
`notifications/tools/list_changed` (on a `subscriptions/listen` stream with servers of the
2026-07-28 protocol, as a plain notification with older ones) or the refresh interval. A server
that cannot be reached, or whose connection drops, offers no tools and is tried again with a
growing delay (up to the refresh interval); it is logged, never a request's failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError

from aibridge.config import McpServerConfig
from aibridge.mcp.catalog import RemoteTool, ServerRules, server_tools

logger = logging.getLogger("aibridge")

FIRST_RETRY = 1.0  # seconds before the first reconnect; doubles up to the refresh interval
MAX_PAGES = 100  # tools/list pages read per listing (a paginator that never ends)


class Unavailable(Exception):
    """The server is not connected: its tools cannot run now."""


class ServerLink:
    def __init__(self, name: str, config: McpServerConfig, headers: Mapping[str, str],
                 rules: ServerRules, *, connect_timeout: float, refresh_interval: float,
                 on_change: Callable[[], None]) -> None:
        self.name = name
        self.config = config
        self.rules = rules
        self._headers = dict(headers)  # secrets from the environment: never logged
        self._connect_timeout = connect_timeout
        self._refresh_interval = refresh_interval
        self._on_change = on_change
        self._client: Client | None = None
        self._changed = asyncio.Event()  # a list_changed notification (older protocol)
        self.tools: tuple[RemoteTool, ...] = ()
        self.listed_at: float | None = None  # time.time() of the last successful listing
        self.error: str | None = None  # why it is down, for logs and tests
        self.task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        """The URL without credentials or query, for log lines."""
        parts = urlsplit(self.config.url)
        return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", "")) + (
            f" (port {parts.port})" if parts.port else "")

    def clean(self, text: str) -> str:
        """`text` without the configured URL (its query may hold a secret)."""
        return text.replace(self.config.url, self.where)

    def same_as(self, config: McpServerConfig, headers: Mapping[str, str]) -> bool:
        return self.config == config and self._headers == dict(headers)

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self.run(), name=f"aibridge mcp {self.name}")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._set_tools(())

    async def call(self, tool: str, arguments: dict[str, Any],
                   timeout: float) -> mcp_types.CallToolResult:
        """Raises Unavailable, TimeoutError, or the SDK's error for a failed call."""
        client = self._client
        if client is None:
            raise Unavailable(self.error or "not connected")
        async with asyncio.timeout(timeout):
            return await client.call_tool(tool, arguments, read_timeout_seconds=timeout)

    # -- the background task ----------------------------------------------------------------

    async def run(self) -> None:
        delay = FIRST_RETRY
        while True:
            try:
                await self._session()
                delay = FIRST_RETRY
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # ExceptionGroups from the SDK's task groups too
                if not isinstance(e, Exception):
                    raise
                self.error = self.clean(_describe(e))
                logger.warning(f"aibridge: mcp server {self.name} at {self.where}: "
                               f"{self.error}; its tools are not offered, retrying in "
                               f"{delay:g}s")
            finally:
                self._client = None
                self._set_tools(())
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(FIRST_RETRY, self._refresh_interval))

    async def _session(self) -> None:
        timeout = httpx2.Timeout(self._connect_timeout, read=None)
        # trust_env=False: the proxy's own HTTPS_PROXY is for clients' traffic, not this.
        async with httpx2.AsyncClient(headers=self._headers, timeout=timeout,
                                      trust_env=False) as http:
            transport = streamable_http_client(self.config.url, http_client=http)
            # read_timeout_seconds bounds the handshake and every listing; calls set their own.
            async with Client(transport, message_handler=self._message,
                              read_timeout_seconds=self._connect_timeout,
                              client_info=mcp_types.Implementation(name="aibridge",
                                                                   version="1")) as client:
                self._client = client
                await self._list(client)
                self.error = None
                logger.info(f"aibridge: mcp server {self.name} at {self.where}: "
                            f"{len(self.tools)} tool(s) offered")
                try:
                    await self._listen(client)
                except ListenNotSupportedError:
                    await self._wait_for_notifications(client)

    async def _listen(self, client: Client) -> None:
        async with client.listen(tools_list_changed=True) as subscription:
            events = aiter(subscription)
            while True:
                with anyio.move_on_after(self._refresh_interval):
                    await anext(events)  # StopAsyncIteration: the server closed the stream
                await self._list(client)

    async def _wait_for_notifications(self, client: Client) -> None:
        while True:
            with anyio.move_on_after(self._refresh_interval):
                await self._changed.wait()
            self._changed.clear()
            await self._list(client)

    async def _message(self, message: object) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._changed.set()

    async def _list(self, client: Client) -> None:
        listed: list[tuple[str, str | None, dict[str, Any]]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            with anyio.fail_after(self._connect_timeout):
                page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            listed += [(t.name, t.description, t.input_schema) for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        self.listed_at = time.time()
        self._set_tools(server_tools(self.rules, listed))

    def _set_tools(self, tools: tuple[RemoteTool, ...]) -> None:
        if tools != self.tools:
            self.tools = tools
            self._on_change()


def _describe(error: BaseException) -> str:
    """A short reason, from the innermost error of a group (never headers: they hold secrets)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error).splitlines()[0][:300] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
