"""One line per interception (and per passthrough), written outside mitmproxy's log pipeline by
default.

mitmproxy turns every log record into an event for all its addons, which costs about 0.2 ms
per request on a busy proxy (measured with scripts/bench); a plain stream handler costs a few
microseconds, and writing the line to the handler's stream directly (see `_info`) a few less.
`bridge_access_log` picks where the lines go:
`stderr` (default), `event-log` (mitmproxy's log: mitmdump output and mitmweb's event log),
a file path (appended), or `off`.
"""

from __future__ import annotations

import logging
import sys
import time

from aibridge.textsafe import printable

access = logging.getLogger("aibridge.access")
DESTINATIONS = ("stderr", "event-log", "off")
_FORMAT, _DATEFMT = "[%(asctime)s.%(msecs)03d] %(message)s", "%H:%M:%S"
# The handler `configure` made for stderr or a file, and its formatter: `_info` writes plain
# lines to that handler's stream itself, formatted as the formatter would.
_direct: tuple[logging.StreamHandler, logging.Formatter] | None = None


def configure(destination: str) -> None:
    global _direct
    _direct = None
    for handler in list(access.handlers):
        access.removeHandler(handler)
        handler.close()
    access.disabled = destination == "off"
    access.propagate = destination == "event-log"
    access.setLevel(logging.INFO)
    if destination in DESTINATIONS:
        if destination == "stderr":
            _direct = _add(logging.StreamHandler(sys.stderr))
        return
    _direct = _add(logging.FileHandler(destination, encoding="utf-8"))


def _add(handler: logging.StreamHandler) -> tuple[logging.StreamHandler, logging.Formatter]:
    formatter = _Formatter(_FORMAT, _DATEFMT)
    handler.setFormatter(formatter)
    access.addHandler(handler)
    return handler, formatter


def _info(msg: object, *args: object, **kwargs: object) -> None:
    """`access.info`. A plain line goes straight to the stream of the handler `configure` made,
    exactly as that handler would write it, without the LogRecord and the handler chain that
    cost several times the write itself; anything else (arguments, other handlers, filters,
    another formatter, a level that hides it) takes the logging path."""
    direct = _direct
    if (direct is None or args or kwargs or access.disabled or access.filters
            or len(access.handlers) != 1 or access.handlers[0] is not direct[0]
            or direct[0].filters or direct[0].formatter is not direct[1]
            or direct[0].level > logging.INFO or not access.isEnabledFor(logging.INFO)
            or direct[0].stream is None):
        logging.Logger.info(access, msg, *args, **kwargs)
        return
    handler = direct[0]
    now = time.time_ns()  # what LogRecord takes `created` and `msecs` from
    line = (f"[{_time_of_day(now // 1_000_000_000)}.{now % 1_000_000_000 // 1_000_000:03d}] "
            f"{msg!s}{handler.terminator}")
    try:
        stream = handler.stream
        stream.write(line)
        stream.flush()
    except Exception:  # what StreamHandler.emit does when the stream fails
        handler.handleError(access.makeRecord(access.name, logging.INFO, "(unknown file)", 0,
                                              msg, (), None))


access.info = _info  # type: ignore[method-assign]

_clock: list = [None, ""]  # epoch second, its time of day


def _time_of_day(second: int) -> str:
    """`%H:%M:%S` of epoch `second` in local time, as logging.Formatter.formatTime gives it;
    formatted once per second."""
    if second != _clock[0]:
        _clock[1] = time.strftime(_DATEFMT, time.localtime(second))
        _clock[0] = second
    return _clock[1]


class _Formatter(logging.Formatter):
    """Formats the time of day once per second instead of once per line."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt == _DATEFMT and self.converter is time.localtime:
            return _time_of_day(int(record.created))
        return super().formatTime(record, datefmt)


def passthrough(id_: str, actor: str, provider: str, method: str, path: str,
                status: object, credential: str, request_bytes: int, response_bytes: int,
                outcome: str, reason: str | None) -> None:
    """The line of one passthrough request (`credential` is `kind:hint`, never a key)."""
    access.info(printable(
        f"aibridge: passthrough {id_} actor={actor} provider={provider} {method} {path} "
        f"status={status} credential={credential} bytes in={request_bytes} "
        f"out={response_bytes} outcome={outcome}" + (f" reason={reason!r}" if reason else ""),
        limit=2000))
