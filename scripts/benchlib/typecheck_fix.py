"""`scripts/bench --bare-typecheck-fix` loads this into bare mitmdump: it gets the
fix of mitmproxy's message type check that the bridge installs (aibridge/addons/
mitm_typecheck.py), so that bridge and bare compare like for like on that point."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "addon"))

from aibridge.addons import mitm_typecheck

if not mitm_typecheck.install():
    raise RuntimeError(f"typecheck fix not installed: {mitm_typecheck.problems()}")
