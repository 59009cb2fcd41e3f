"""Start-up refusals: one `aibridge: …` line on stderr and a non-zero exit, never a traceback.

What mitmproxy 12.2 does on its own when an addon's `configure` raises `OptionsError` while
`mitmdump -s addon/bridge.py` loads the script: `Script.loadscript` catches it and logs
"error in script …" with the full traceback (on stdout, via termlog); the proxy servers are
then bound anyway (an open proxy on 0.0.0.0 really listens for a moment); only afterwards does
the errorcheck addon notice the logged error, print "Error logged during startup, exiting..."
on stderr and `sys.exit(1)`.

So a refusal at start-up is done the way errorcheck itself ends mitmproxy: the one line goes to
stderr and `SystemExit` is raised. Raised from `configure`, it passes through `loadscript`
(which catches `Exception` only) and stops the event loop before any server is bound and before
any other part of the addon starts. Exit status 78 is sysexits' EX_CONFIG; a systemd unit can
stop restarting on it with `RestartPreventExitStatus=78`.

After start-up (an option changed in mitmweb or the console) the same problem must not end
the proxy: it becomes `OptionsError`, mitmproxy rolls the option change back and reports it,
and the old settings stay. (The file-watching hot reload never comes here: it catches its own
errors and logs them.) "Start-up" is exactly the window in which
mitmproxy itself would exit on an error logged: while the errorcheck addon's log handler is
installed (from the master's construction until just after the `running` hook). No errorcheck
addon (unit tests with `taddons`, custom masters) means never start-up: the old behaviour.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, TextIO

from mitmproxy import ctx, exceptions

from aibridge.config import ConfigError

PREFIX = "aibridge: "
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: a configuration error

_PREFIXES = re.compile(r"^(?:\s*aibridge:\s*)+", re.IGNORECASE)
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_SPACES = re.compile(r"[ \t\f\v]+")


class StartupRefused(SystemExit):
    """Ends mitmproxy at start-up. `line` has already been written to stderr by `refuse`."""

    def __init__(self, line: str) -> None:
        super().__init__(EXIT_CONFIG)
        self.line = line


# -- pure ----------------------------------------------------------------------------------------


def refusal_line(message: object) -> str:
    """`message` as exactly one line that starts with `aibridge: ` (no doubled prefix)."""
    text = _PREFIXES.sub("", str(message).strip())
    text = _SPACES.sub(" ", _LINE_BREAKS.sub("; ", text)).strip(" ;")
    return PREFIX + (text or "start-up refused (no reason given)")


def refusal(message: object, *, starting: bool) -> StartupRefused | exceptions.OptionsError:
    """What to raise for a configuration problem: at start-up, end the process; later (a hot
    change of options), an `OptionsError` so mitmproxy rolls back and the old settings stay."""
    line = refusal_line(message)
    return StartupRefused(line) if starting else exceptions.OptionsError(line)


# -- mitmproxy-facing ----------------------------------------------------------------------------


def is_starting(master: Any) -> bool:
    """True while mitmproxy would still exit on an error logged (its errorcheck window)."""
    if master is None:
        return False
    errorcheck = master.addons.get("errorcheck")
    handler = getattr(errorcheck, "logger", None)
    return handler is not None and handler in logging.getLogger().handlers


def refuse(message: object, *, master: Any = None, stream: TextIO | None = None) -> NoReturn:
    """Refuse the configuration: at start-up write the one line to stderr and exit non-zero
    (`StartupRefused`); later raise `OptionsError` (mitmproxy keeps the old options)."""
    if master is None:
        master = getattr(ctx, "master", None)
    error = refusal(message, starting=is_starting(master))
    if isinstance(error, StartupRefused):
        out = stream if stream is not None else sys.stderr
        with suppress(OSError, ValueError):  # stderr closed: the exit status still says it
            print(error.line, file=out, flush=True)
    raise error from None


@contextmanager
def refusing(master: Any = None) -> Iterator[None]:
    """Wrap a (re)configuration: a `ConfigError` or `OptionsError` inside becomes `refuse(...)`.
    Only for `configure`; the file-watching reload catches its errors itself and never exits."""
    try:
        yield
    except (ConfigError, exceptions.OptionsError) as e:
        refuse(e, master=master)
