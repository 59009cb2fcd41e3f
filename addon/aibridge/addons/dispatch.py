"""The chain as one mitmproxy addon: each hook calls the chain's implementations in order.

mitmproxy delivers every event by walking each addon and its children (`traverse`), looking up
the hook on each, and calling it with freshly built arguments inside its own error guard. With
the bridge's dozen addons that walk costs more per request than several of the hooks
themselves, and it happens for events none of them handles. Behind this one addon mitmproxy
sees a single child, which has exactly the hooks some addon of the chain implements; each such
hook calls those implementations directly, in chain order, with the arguments built once.

What stays as mitmproxy does it: async implementations are awaited in order; `OptionsError`
(a refused configuration) and `AddonHalt` propagate. What is better: an unexpected exception in
one addon is logged ("Addon error", as mitmproxy does) and the next addon still gets the event,
where mitmproxy's script loader would skip the rest of the chain.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

# The modules that declare hooks, so that the registry below is complete.
from mitmproxy import addonmanager, exceptions, hooks, log  # noqa: F401
from mitmproxy.proxy import layer, server_hooks  # noqa: F401
from mitmproxy.proxy.layers import dns, modes, tcp, tls, udp, websocket  # noqa: F401
from mitmproxy.proxy.layers.http import _hooks  # noqa: F401

logger = logging.getLogger("aibridge")
PASS_THROUGH = (exceptions.AddonHalt, exceptions.OptionsError)


class Dispatch:
    def __init__(self, chain: Sequence[object]) -> None:
        self.chain = list(chain)
        for name in sorted(hooks.all_hooks):
            implementations = [getattr(addon, name) for addon in self.chain
                               if callable(getattr(addon, name, None))]
            if implementations:
                setattr(self, name, _dispatcher(name, implementations))

    def __repr__(self) -> str:
        return f"Dispatch({', '.join(type(a).__name__ for a in self.chain)})"


def _failed(name: str, implementation: Callable[..., Any]) -> None:
    owner = type(getattr(implementation, "__self__", implementation)).__name__
    logger.exception(f"Addon error: {owner}.{name}")


def _dispatcher(name: str, implementations: list[Callable[..., Any]]) -> Callable[..., Any]:
    if len(implementations) == 1:
        return implementations[0]  # nothing to walk: mitmproxy calls it directly
    if any(inspect.iscoroutinefunction(f) for f in implementations):
        async def dispatch_async(*args: Any) -> None:
            for implementation in implementations:
                try:
                    result = implementation(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
                except PASS_THROUGH:
                    raise
                except Exception:
                    _failed(name, implementation)
        dispatch_async.__name__ = name
        return dispatch_async

    def dispatch(*args: Any) -> None:
        for implementation in implementations:
            try:
                implementation(*args)
            except PASS_THROUGH:
                raise
            except Exception:
                _failed(name, implementation)
    dispatch.__name__ = name
    return dispatch
