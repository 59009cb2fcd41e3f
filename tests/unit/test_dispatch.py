"""addons/dispatch.py: the chain behind one addon calls the same hooks, in the same order."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from aibridge.addons.chain import chain
from aibridge.addons.dispatch import Dispatch


class Named:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen


class Recorder(Named):
    def request(self, flow) -> None:
        self.seen.append(f"{self.name}.request")


class Async(Recorder):
    async def request(self, flow) -> None:
        self.seen.append(f"{self.name}.request(async)")


class Broken(Recorder):
    def request(self, flow) -> None:
        raise RuntimeError("boom")

    def configure(self, updated) -> None:
        raise exceptions.OptionsError("bad config")


class HeadersOnly(Named):
    def requestheaders(self, flow) -> None:
        self.seen.append(f"{self.name}.requestheaders")


async def test_hooks_run_in_chain_order_and_async_ones_are_awaited():
    seen: list[str] = []
    d = Dispatch([Recorder("a", seen), HeadersOnly("h", seen), Async("b", seen),
                  Recorder("c", seen)])
    await d.request(tflow.tflow())
    assert seen == ["a.request", "b.request(async)", "c.request"]
    assert d.requestheaders.__self__.name == "h"  # one implementation: called directly
    assert not hasattr(d, "response")  # nobody implements it: mitmproxy skips us


def test_an_addon_error_is_logged_and_the_next_addon_still_runs(caplog):
    seen: list[str] = []
    d = Dispatch([Broken("x", seen), Recorder("a", seen), Recorder("b", seen)])
    with caplog.at_level(logging.ERROR, logger="aibridge"):
        d.request(tflow.tflow())
    assert seen == ["a.request", "b.request"]
    assert "Addon error: Broken.request" in caplog.text


def test_a_refused_configuration_still_stops_start_up():
    d = Dispatch([Broken("x", []), HeadersOnly("h", [])])
    with pytest.raises(exceptions.OptionsError):
        d.configure(set())


def test_the_bridge_chain_loads_through_the_dispatcher():
    addons = chain()
    d = Dispatch(addons)
    assert d.chain == addons
    with taddons.context(d) as tctx:  # load() registered every addon's options
        assert "bridge_config" in tctx.options
        assert "bridge_access_log" in tctx.options
    assert callable(d.requestheaders) and callable(d.response) and callable(d.configure)
