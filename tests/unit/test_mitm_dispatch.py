"""mitmproxy's hook dispatch, replaced (addons/mitm_dispatch): the same hooks called in the same
order with the same arguments, the same errors logged and the same exceptions raised as
mitmproxy's own, in every case its code distinguishes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mitmproxy import addonmanager, exceptions, http
from mitmproxy.proxy.layers.http import HttpRequestHeadersHook
from mitmproxy.test import taddons, tflow

from aibridge.addons import mitm_dispatch


@pytest.fixture(autouse=True)
def original_afterwards() -> Iterator[None]:
    yield
    mitm_dispatch.uninstall()


def test_the_pinned_mitmproxy_is_the_one_it_replaces() -> None:
    assert mitm_dispatch.problems() == []
    assert mitm_dispatch.install()
    assert mitm_dispatch.installed()
    assert addonmanager.AddonManager.trigger_event is mitm_dispatch.trigger_event
    mitm_dispatch.uninstall()
    assert not mitm_dispatch.installed()


def test_it_stays_out_when_mitmproxy_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mitm_dispatch, "_DIGEST", "another mitmproxy")
    assert mitm_dispatch.problems() == ["mitmproxy's hook dispatch is not the one this replaces"]
    assert not mitm_dispatch.install()
    assert not mitm_dispatch.installed()


class Hooked:
    """An addon whose `requestheaders` hook does `act` and notes its name."""

    def __init__(self, calls: list[str], name: str, act: Callable[..., Any] | None = None,
                 children: list[object] | None = None) -> None:
        self.calls, self.label, self.act = calls, name, act
        if children is not None:
            self.addons = children

    def requestheaders(self, flow: http.HTTPFlow) -> Any:
        self.calls.append(f"{self.label}({flow.id == FLOW.id})")
        return self.act() if self.act else None

    def __repr__(self) -> str:
        return self.label


class AsyncHooked(Hooked):
    async def requestheaders(self, flow: http.HTTPFlow) -> None:  # type: ignore[override]
        self.calls.append(f"{self.label}:start")
        await asyncio.sleep(0)
        self.calls.append(f"{self.label}:end")


class Attribute:
    """`requestheaders` is not a method: a module (skipped) or anything else (an error)."""

    def __init__(self, value: object, children: list[object] | None = None) -> None:
        self.requestheaders = value
        if children is not None:
            self.addons = children

    def __repr__(self) -> str:
        return f"Attribute({type(self.requestheaders).__name__})"


FLOW = tflow.tflow()


def _boom() -> None:
    raise ValueError("boom")


def _halt() -> None:
    raise exceptions.AddonHalt


def _bad_option() -> None:
    raise exceptions.OptionsError("bad option")


def _resolved_future() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _scenario(calls: list[str], case: str) -> list[object]:
    """The addons of one case, built afresh for each run."""
    if case == "order":
        return [Hooked(calls, "a"),
                Hooked(calls, "parent", children=[
                    Hooked(calls, "child1"),
                    Attribute(json, children=[Hooked(calls, "grandchild")]),  # no hook, children
                    Hooked(calls, "child2", children=[])]),
                Attribute(json),
                Hooked(calls, "z")]
    if case == "async":
        return [AsyncHooked(calls, "async"), Hooked(calls, "future", _resolved_future),
                Hooked(calls, "parent", children=[AsyncHooked(calls, "async-child")]),
                Hooked(calls, "z")]
    if case == "error":
        return [Hooked(calls, "a"),
                Hooked(calls, "failing", _boom, children=[Hooked(calls, "skipped-child")]),
                Hooked(calls, "parent", children=[Hooked(calls, "failing-child", _boom),
                                                  Hooked(calls, "skipped-sibling")]),
                Attribute(5), Hooked(calls, "z")]
    if case == "halt":
        return [Hooked(calls, "a"),
                Hooked(calls, "parent", children=[Hooked(calls, "halting", _halt)]),
                Hooked(calls, "after-halt")]
    if case == "options":
        return [Hooked(calls, "a"), Hooked(calls, "bad", _bad_option), Hooked(calls, "after")]
    if case == "grows":
        children: list[object] = []
        late = Hooked(calls, "added-during-the-walk")
        return [Hooked(calls, "parent", lambda: children.append(late), children=children),
                Hooked(calls, "z")]
    raise AssertionError(case)


CASES = ["order", "async", "error", "halt", "options", "grows"]


async def _run(case: str, fast: bool, sync: bool,
               caplog: pytest.LogCaptureFixture) -> tuple:
    """What one dispatch did: the calls, what was logged (message and the first frame of its
    traceback), and what reached the caller."""
    if fast:
        assert mitm_dispatch.install()
    else:
        mitm_dispatch.uninstall()
    calls: list[str] = []
    caplog.clear()
    raised = None
    with taddons.context() as tctx:
        manager = tctx.master.addons
        for addon in _scenario(calls, case):
            manager.chain.append(addon)  # no load/configure: only the dispatch is compared
        event = HttpRequestHeadersHook(FLOW)
        try:
            if sync:
                manager.trigger(event)
            else:
                await manager.trigger_event(event)
        except Exception as e:
            raised = f"{type(e).__name__}: {e}"
    logged = [(r.getMessage(), _first_frame(r)) for r in caplog.records
              if r.name == "mitmproxy.addonmanager"]
    return calls, logged, raised


def _first_frame(record: logging.LogRecord) -> str | None:
    """Where the logged traceback starts: the addon's function when the addon raised; the
    dispatch's own code (which differs, by design) when the dispatch refused a handler."""
    tb = record.exc_info[2] if record.exc_info else None
    if tb is None:
        return None
    code = tb.tb_frame.f_code
    return code.co_name if code.co_filename == __file__ else "dispatch"


@pytest.mark.parametrize("sync", [False, True], ids=["trigger_event", "trigger"])
@pytest.mark.parametrize("case", CASES)
async def test_same_calls_logs_and_exceptions_as_mitmproxy(
        case: str, sync: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    original = await _run(case, False, sync, caplog)
    replaced = await _run(case, True, sync, caplog)
    assert replaced == original
    calls, logged, raised = original
    assert calls  # the case did something to compare
    if case == "error":
        assert "skipped-child(True)" not in calls and "skipped-sibling(True)" not in calls
        assert ("Addon error: boom", "requestheaders") in logged  # starts at the addon's code
        assert calls[-1] == "z(True)"
    if case == "halt":
        assert "after-halt(True)" not in calls
    if case == "options":
        assert raised == "OptionsError: bad option"
    if case == "async" and sync:
        assert any("cannot be called from sync context" in message for message, _ in logged)


async def test_a_hook_that_is_no_hook_object_goes_to_mitmproxy(
        caplog: pytest.LogCaptureFixture) -> None:
    """Not a Hook: the original's assertion fails inside its error handling (logged per addon);
    the replacement hands such a call to the original rather than guess."""
    caplog.set_level(logging.ERROR)
    logged = []
    for fast in (False, True):
        if fast:
            assert mitm_dispatch.install()
        caplog.clear()
        with taddons.context() as tctx:
            tctx.master.addons.chain.append(Hooked([], "a"))
            await tctx.master.addons.trigger_event("requestheaders")  # type: ignore[arg-type]
            tctx.master.addons.trigger("requestheaders")  # type: ignore[arg-type]
        logged.append([r.getMessage() for r in caplog.records
                       if r.name == "mitmproxy.addonmanager"])
    assert logged[0] and logged[1] == logged[0]


def test_both_fixes_install_together_and_a_misfit_is_said(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from aibridge.addons import mitm_fixes, mitm_typecheck
    try:
        assert mitm_fixes.install() == []
        assert mitm_dispatch.installed()
        mitm_dispatch.uninstall()
        monkeypatch.setattr(mitm_dispatch, "_DIGEST", "another mitmproxy")
        caplog.set_level(logging.INFO, logger="aibridge")
        mitm_fixes.install_and_report()
        assert not mitm_dispatch.installed()
        assert ("aibridge: mitmproxy's own hook dispatch runs unchanged: mitmproxy's hook "
                "dispatch is not the one this replaces") in caplog.messages
        assert not any("type check" in m for m in caplog.messages)
    finally:
        mitm_typecheck.uninstall()
