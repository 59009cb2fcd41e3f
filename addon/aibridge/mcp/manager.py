"""Every configured MCP server, kept in line with the configuration, and the calls requests make.

`configure` (every configuration load) keeps the links whose server set-up did not change and
replaces the others; links run on mitmproxy's event loop from `start` (the `running` hook) until
`close`. `offer` is what the request hook asks (one dictionary lookup per caller while the
tool lists stay the same); `call` runs one tool with the server's timeout and size limit and
always returns an outcome: a failed call is an error the model reads, never a failed request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aibridge.config import McpConfig
from aibridge.intercept import Actor
from aibridge.mcp.catalog import Offer, RemoteTool, ServerRules
from aibridge.mcp.link import ServerLink, Unavailable
from aibridge.mcp.results import cut, render

logger = logging.getLogger("aibridge")

OFFER_CACHE = 4096  # callers whose offer is remembered while the tool lists stay the same
ERROR_LIMIT = 1024  # characters of an error kept for records


@dataclass(frozen=True)
class CallOutcome:
    """How one call of a bridge tool went."""

    server: str
    tool: str  # the server's name for it
    output: str  # what the model reads
    is_error: bool  # the tool failed, or could not be run
    result_bytes: int  # size of the tool's whole result (0 when it gave none)
    duration: float  # seconds
    error: str | None  # why it failed (None when it did not)


class McpManager:
    def __init__(self) -> None:
        self.links: dict[str, ServerLink] = {}
        self.config = McpConfig()
        self._running = False
        self._version = 0  # bumped whenever a tool list changes
        self._offers: dict[Actor, Offer] = {}
        self._offers_version = -1

    @property
    def active(self) -> bool:
        return bool(self.links)

    def configure(self, config: McpConfig, team_key: str, environ: Mapping[str, str]) -> None:
        """Apply a (re)loaded configuration; headers were checked by Settings.load."""
        self.config = config
        wanted = {name: server for name, server in config.servers.items() if server.enabled}
        for name in [n for n in self.links if n not in wanted]:
            self._drop(name)
        for name, server in wanted.items():
            headers = {header: environ.get(variable, "")
                       for header, variable in server.headers_env.items()}
            rules = ServerRules.build(name, server, team_key)
            link = self.links.get(name)
            if link is not None and link.same_as(server, headers):
                if link.rules != rules:
                    link.rules = rules  # who gets the tools and which: applied at the next listing
                    self._changed()
                continue
            if link is not None:
                self._drop(name)
            self.links[name] = ServerLink(
                name, server, headers, rules, connect_timeout=config.connect_timeout,
                refresh_interval=config.refresh_interval, on_change=self._changed)
            if self._running:
                self.links[name].start()
        self._changed()

    def start(self) -> None:
        self._running = True
        for link in self.links.values():
            link.start()

    async def close(self) -> None:
        self._running = False
        links, self.links = list(self.links.values()), {}
        await asyncio.gather(*(link.stop() for link in links), return_exceptions=True)
        self._changed()

    def _drop(self, name: str) -> None:
        link = self.links.pop(name)
        if link.task is not None:
            asyncio.get_running_loop().create_task(link.stop())

    def _changed(self) -> None:
        self._version += 1

    # -- requests ---------------------------------------------------------------------------

    def offer(self, actor: Actor) -> Offer:
        """The tools this caller is offered now (empty when none)."""
        if self._offers_version != self._version:
            self._offers.clear()
            self._offers_version = self._version
        offer = self._offers.get(actor)
        if offer is None:
            tools: list[RemoteTool] = []
            for link in self.links.values():
                if link.tools and link.rules.serves(actor):
                    tools += [t for t in link.tools if link.rules.offers(t.tool)]
            offer = Offer(tuple(tools))
            if len(self._offers) >= OFFER_CACHE:
                self._offers.clear()
            self._offers[actor] = offer
        return offer

    async def call(self, tool: RemoteTool, arguments: str) -> CallOutcome:
        started = time.monotonic()
        link = self.links.get(tool.server)
        limit = link.config.max_result_bytes if link is not None else 4096

        def failed(reason: str) -> CallOutcome:
            return CallOutcome(tool.server, tool.tool,
                               cut(f"AI Bridge could not run {tool.tool}: {reason}", limit),
                               True, 0, time.monotonic() - started, reason[:ERROR_LIMIT])

        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return failed("its arguments are not JSON")
        if not isinstance(args, dict):
            return failed("its arguments are not a JSON object")
        if link is None:
            return failed(f"the MCP server {tool.server} is no longer configured")
        timeout = link.config.call_timeout
        try:
            result = await link.call(tool.tool, args, timeout)
        except TimeoutError:
            return failed(f"no answer within {timeout:g}s")
        except Unavailable as e:
            return failed(f"the MCP server {tool.server} is unavailable ({e})")
        except Exception as e:
            reason = link.clean(f"{type(e).__name__}: {e}")
            logger.warning(f"aibridge: mcp server {tool.server}: call of {tool.tool} failed: "
                           f"{reason}")
            return failed(reason)
        rendered = render(result, limit)
        return CallOutcome(tool.server, tool.tool, rendered.text, rendered.is_error,
                           rendered.size, time.monotonic() - started,
                           rendered.text[:ERROR_LIMIT] if rendered.is_error else None)
