"""The name a server's tool goes by in a request: `bmcp_<server>_<tool>`.

Provider APIs take tool names of at most 64 characters from `[A-Za-z0-9_-]`; MCP tool names may
be longer and hold `.` or `/`. Other characters become `_`, and a name still too long (or taken
by another tool of the same server after that) ends in a short hash of the original, so every
tool keeps a stable name of its own. The bridge never parses the name back: it looks it up.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "bmcp_"
MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def injected_name(server: str, tool: str, taken: set[str]) -> str:
    """A name for `tool` of `server` not in `taken` (which it is added to)."""
    name = f"{PREFIX}{server}_{_UNSAFE.sub('_', tool)}"
    if len(name) > MAX_NAME or name in taken:
        digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}_{digest}"
    taken.add(name)
    return name
