"""One line per interception, written outside mitmproxy's log pipeline by default.

mitmproxy turns every log record into an event for all its addons, which costs about 0.2 ms
per request on a busy proxy (measured with scripts/bench); a plain stream handler costs a few
microseconds. `bridge_access_log` picks where the lines go:
`stderr` (default), `event-log` (mitmproxy's log: mitmdump output and mitmweb's event log),
a file path (appended), or `off`.
"""

from __future__ import annotations

import logging
import sys

access = logging.getLogger("aibridge.access")
DESTINATIONS = ("stderr", "event-log", "off")


def configure(destination: str) -> None:
    for handler in list(access.handlers):
        access.removeHandler(handler)
        handler.close()
    access.disabled = destination == "off"
    access.propagate = destination == "event-log"
    access.setLevel(logging.INFO)
    if destination in DESTINATIONS:
        if destination == "stderr":
            _add(logging.StreamHandler(sys.stderr))
        return
    _add(logging.FileHandler(destination, encoding="utf-8"))


def _add(handler: logging.Handler) -> None:
    handler.setFormatter(logging.Formatter("[%(asctime)s.%(msecs)03d] %(message)s", "%H:%M:%S"))
    access.addHandler(handler)
