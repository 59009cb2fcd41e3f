"""Strings that came from a client or a provider, made safe for logs, comments and saved flows.

JSON may carry lone surrogates (`"\\ud800"`) that cannot be encoded, and control characters that
would forge log lines or drive a terminal.
"""

from __future__ import annotations

from typing import Any


def storable(text: str) -> str:
    """Encodable as UTF-8 (what saved flows and databases need), otherwise unchanged."""
    if text.isascii():  # most text, and no copy to find out
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(text: str, limit: int = 200) -> str:
    """One safe line: control characters escaped, cut at `limit`."""
    text = storable(text)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256
                       else f"\\u{ord(c):04x}" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


def storable_tree(value: Any) -> Any:
    """`storable` applied to every string in nested dicts and lists (flow metadata)."""
    if isinstance(value, str):
        return value if value.isascii() else storable(value)
    if isinstance(value, dict):
        # Inline for the common leaves: this runs on every interception's metadata.
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and not key.isascii():
                key = storable(key)
            if isinstance(item, str):
                out[key] = item if item.isascii() else storable(item)
            elif isinstance(item, dict | list | tuple):
                out[key] = storable_tree(item)
            else:
                out[key] = item
        return out
    if isinstance(value, list | tuple):
        return [storable_tree(v) for v in value]
    return value
