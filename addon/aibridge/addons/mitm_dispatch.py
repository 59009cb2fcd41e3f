"""mitmproxy's hook dispatch, with the same calls in the same order for much less.

For every event (each of a request's four hooks, the `update` event mitmproxy sends after each
of them, every log line's deprecated `add_log`), mitmproxy's `AddonManager` walks every addon
it has loaded — about forty in mitmdump, most of them without the hook — and for each one
enters a generator-based context manager, creates and awaits a coroutine and runs two nested
generators before it asks `getattr`. That machinery, not the hooks, cost ≈ 300 µs of CPU per
small request in `scripts/bench`: a quarter of bare mitmdump's whole work per request.

`install()` replaces `AddonManager.trigger_event` and `trigger` with plain loops that keep
every rule of the originals: the chain is walked afresh each time, depth first through each
addon's `addons` (so scripts that reload, and children added during the walk, are seen as
before), async hooks are awaited, an attribute that is a module is skipped and any other
uncallable one is an error, an exception ends that top-level addon's turn and is logged as
"Addon error" on mitmproxy's logger, `AddonHalt` ends the event, and `OptionsError` reaches
the caller. It installs only over the exact code it was written against (checked by a digest
of the originals' source), otherwise leaves mitmproxy alone.
"""

from __future__ import annotations

import hashlib
import inspect
import types
from typing import Any

from mitmproxy import addonmanager, exceptions, hooks

_MANAGER = addonmanager.AddonManager
_ORIGINAL_TRIGGER_EVENT = _MANAGER.trigger_event
_ORIGINAL_TRIGGER = _MANAGER.trigger
# The code whose behaviour the replacements repeat; any change to it and they stay out.
_REPLACED = (_MANAGER.trigger_event, _MANAGER.trigger, _MANAGER.invoke_addon,
             _MANAGER.invoke_addon_sync, _MANAGER._iter_hooks, addonmanager.traverse,
             addonmanager.safecall, addonmanager.cut_traceback)
_DIGEST = "1c7dd007e2ae094962ca22408d2fb8d1b1db9e13ab22fca70d12781f45ab2f3b"


def _source_digest() -> str:
    digest = hashlib.sha256()
    for function in _REPLACED:
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()


def _handler(addon: object, name: str) -> Any:
    """The addon's hook `name`, or None; an attribute of that name that is a module is no hook
    (`from mitmproxy import log` in an addon), anything else uncallable is an error."""
    func = getattr(addon, name, None)
    if not func:
        return None
    if callable(func):
        return func
    if isinstance(func, types.ModuleType):
        return None
    raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")


async def _walk_async(addons: Any, name: str, event: hooks.Hook) -> None:
    # Iterating the list itself, not a copy: a child added during the walk is called, as before.
    for addon in addons:
        if (func := _handler(addon, name)) is not None:
            result = func(*event.args())
            if result is not None and inspect.isawaitable(result):
                await result
        if hasattr(addon, "addons"):
            await _walk_async(addon.addons, name, event)


def _walk_sync(addons: Any, name: str, event: hooks.Hook) -> None:
    for addon in addons:
        if (func := _handler(addon, name)) is not None:
            if inspect.iscoroutinefunction(func):
                raise exceptions.AddonManagerError(
                    f"Async handler {name} ({addon}) cannot be called from sync context")
            func(*event.args())
        if hasattr(addon, "addons"):
            _walk_sync(addon.addons, name, event)


async def trigger_event(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    """`AddonManager.trigger_event`: the event across all addons, awaiting async hooks."""
    if not isinstance(event, hooks.Hook):  # the original's assertion, logged per addon
        return await _ORIGINAL_TRIGGER_EVENT(self, event)
    name = event.name
    for addon in self.chain:
        try:
            # Most addons have neither the hook nor children: for them no coroutine is made.
            if getattr(addon, name, None) or hasattr(addon, "addons"):
                await _walk_async((addon,), name, event)
        except exceptions.AddonHalt:
            return
        except Exception as e:
            _failed(e)


def trigger(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    """`AddonManager.trigger`: the event across all addons, synchronously."""
    if not isinstance(event, hooks.Hook):
        return _ORIGINAL_TRIGGER(self, event)
    name = event.name
    for addon in self.chain:
        try:
            _walk_sync((addon,), name, event)
        except exceptions.AddonHalt:
            return
        except Exception as e:
            _failed(e)


_OWN_FRAMES = {f.__code__ for f in (trigger_event, trigger, _handler, _walk_async, _walk_sync)}


def _failed(error: Exception) -> None:
    """An addon's turn ended in `error`. As mitmproxy's `safecall`: an `OptionsError` reaches
    the caller; anything else is logged, its traceback starting at the addon's own code."""
    if isinstance(error, exceptions.OptionsError):
        raise error
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code in _OWN_FRAMES:
        tb = tb.tb_next
    addonmanager.logger.error(f"Addon error: {error}",
                              exc_info=(type(error), error, tb or error.__traceback__))


def problems() -> list[str]:
    """Why `install` would leave mitmproxy's dispatch alone (empty: it installs)."""
    try:
        digest = _source_digest()
    except (OSError, TypeError):
        return ["the source of mitmproxy's addon manager cannot be read"]
    if digest != _DIGEST:
        return ["mitmproxy's hook dispatch is not the one this replaces"]
    return []


def install() -> bool:
    """Put the plain loops in place (idempotent); False when `problems()` says why not."""
    if problems():
        return False
    _MANAGER.trigger_event = trigger_event  # type: ignore[method-assign]
    _MANAGER.trigger = trigger  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    _MANAGER.trigger_event = _ORIGINAL_TRIGGER_EVENT  # type: ignore[method-assign]
    _MANAGER.trigger = _ORIGINAL_TRIGGER  # type: ignore[method-assign]


def installed() -> bool:
    return _MANAGER.trigger_event is trigger_event

