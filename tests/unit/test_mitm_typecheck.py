"""mitmproxy's message type check, replaced (addons/mitm_typecheck): the same verdicts as
mitmproxy's own for good and bad field values, and no reference cycles left per message."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from aibridge.addons import mitm_typecheck


@pytest.fixture
def installed() -> Iterator[None]:
    assert mitm_typecheck.problems() == []  # the pinned mitmproxy is the one it replaces
    assert mitm_typecheck.install()
    try:
        yield
    finally:
        mitm_typecheck.uninstall()


def _build(kind: str, **fields: object) -> object:
    """A request or response with `fields` changed; the check runs in __post_init__."""
    base = tutils.treq() if kind == "request" else tutils.tresp()
    values = {f: getattr(base.data, f) for f in base.data.__dataclass_fields__}
    values.update(fields)
    return type(base.data)(**values)


CASES = [
    ("request", {}),
    ("request", {"content": None, "trailers": None, "timestamp_end": None}),
    ("request", {"trailers": http.Headers(x=b"1"), "timestamp_end": 5}),  # int for a float
    ("request", {"content": "text"}),  # str where bytes or None
    ("request", {"trailers": {}}),  # a dict is no Headers
    ("request", {"port": "443"}),
    ("request", {"port": True}),  # a bool is an int, for mitmproxy too
    ("request", {"timestamp_start": None}),
    ("request", {"method": "GET"}),
    ("response", {}),
    ("response", {"status_code": 200.0}),
    ("response", {"reason": None}),
    ("response", {"headers": None}),
]


def _verdict(kind: str, fields: dict) -> str:
    try:
        _build(kind, **fields)
    except TypeError as e:
        return f"TypeError: {e}"
    return "ok"


@pytest.mark.parametrize(("kind", "fields"), CASES)
def test_same_verdict_as_mitmproxy(installed: None, kind: str, fields: dict) -> None:
    fast = _verdict(kind, fields)
    mitm_typecheck.uninstall()
    assert fast == _verdict(kind, fields)


def _cycles_per_message() -> float:
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            _build("request", content=None, trailers=None, timestamp_end=None)
            _build("response", trailers=None)
        return gc.collect() / 100
    finally:
        gc.enable()


def test_building_messages_leaves_no_cycles(installed: None) -> None:
    assert _cycles_per_message() == 0
    mitm_typecheck.uninstall()
    assert _cycles_per_message() > 5  # what mitmproxy's own check leaves for the collector
