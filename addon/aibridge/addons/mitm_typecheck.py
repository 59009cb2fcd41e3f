"""mitmproxy's type check of every HTTP message it builds, with the same verdicts for much less.

Unless Python runs with -O, mitmproxy checks each field of every request and response it
creates (`MessageData.__post_init__` calls `utils.typecheck.check_option_type`). For a field
that may be None (content, trailers, timestamp_end) that check tries each member of the union
and catches the TypeError the first one raises, after formatting its message. Each caught
exception keeps a traceback whose frames keep the exception: a reference cycle that only the
garbage collector frees. Requests and responses leave about a dozen such cycles each, and
collecting them, with the checks themselves, cost the proxy ≈ 130 µs of CPU per small request
in `scripts/bench` — more than any piece of the bridge's own work.

`install()` puts a check in front that asks `isinstance` against the classes the annotation
names and accepts what they accept; anything else goes to mitmproxy's own check, which accepts
or raises exactly as before. It installs only when the original is the one this was written
against (checked by its source), and not at all under -O, where there is no check to speed up.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from mitmproxy import http
from mitmproxy.utils import typecheck

_ORIGINAL: Callable[[Any], None] | None = getattr(http.MessageData, "__post_init__", None)
_EXPECTED = "typecheck.check_option_type(field.name, val, field.type)"
# Per message class: (field name, the classes its annotation names, the annotation).
_PLANS: dict[type, tuple[tuple[str, tuple[type, ...], Any], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, tuple[type, ...], Any], ...]:
    hints = typing.get_type_hints(cls)
    plan = []
    for field in dataclasses.fields(cls):
        annotation = hints.get(field.name, field.type)
        members = (typing.get_args(annotation)
                   if typing.get_origin(annotation) in (typing.Union, types.UnionType)
                   else (annotation,))
        # Only plain classes: for them `isinstance` is the whole of mitmproxy's verdict.
        plan.append((field.name, tuple(m for m in members if isinstance(m, type)
                                       and typing.get_origin(m) is None), field.type))
    return tuple(plan)


def _check(self: http.MessageData) -> None:
    cls = type(self)
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _plan(cls)
    for name, classes, annotation in plan:
        value = getattr(self, name)
        if not isinstance(value, classes):
            typecheck.check_option_type(name, value, annotation)  # accepts or raises as before


def problems() -> list[str]:
    """Why `install` would leave mitmproxy's check alone (empty: it installs)."""
    if _ORIGINAL is None:
        return ["mitmproxy checks no message types (Python runs with -O)"]
    try:
        source = inspect.getsource(_ORIGINAL)
    except (OSError, TypeError):
        source = ""
    if _EXPECTED not in source:
        return ["mitmproxy's MessageData.__post_init__ is not the one this replaces"]
    return []


def install() -> bool:
    """Put the fast check in place (idempotent); False when `problems()` says why not."""
    if problems():
        return False
    http.MessageData.__post_init__ = _check  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    if _ORIGINAL is not None:
        http.MessageData.__post_init__ = _ORIGINAL  # type: ignore[method-assign]
