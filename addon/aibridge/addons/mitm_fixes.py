"""The bridge's fixes to mitmproxy's own code, installed together (by `bridge.py`, and by the
benchmark into bare mitmdump): the message type check (`mitm_typecheck`) and the hook dispatch
(`mitm_dispatch`). Each installs only over the exact mitmproxy code it was written for; what
did not install is said at start-up, since the proxy then runs slower (not differently)."""

from __future__ import annotations

import logging

from aibridge.addons import mitm_dispatch, mitm_typecheck

logger = logging.getLogger("aibridge")
FIXES = {"type check": mitm_typecheck, "hook dispatch": mitm_dispatch}


def install() -> list[str]:
    """Install every fix; one line per fix that stayed out, and why (empty: all installed)."""
    left_out = []
    for name, fix in FIXES.items():
        if not fix.install():
            left_out.append(f"mitmproxy's own {name} runs unchanged: {'; '.join(fix.problems())}")
    return left_out


def install_and_report() -> None:
    for line in install():
        logger.info(f"aibridge: {line}")
