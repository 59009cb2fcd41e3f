"""`scripts/bench --bare-mitm-fixes` loads this into bare mitmdump: it gets the two fixes to
mitmproxy's own code that the bridge installs (aibridge/addons/mitm_fixes.py: the message type
check and the hook dispatch), so that bridge and bare compare like for like: what is left
between them is the bridge's own work."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "addon"))

from aibridge.addons import mitm_fixes

if left_out := mitm_fixes.install():
    raise RuntimeError("; ".join(left_out))
