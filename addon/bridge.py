"""mitmproxy entry point: `mitmdump -s addon/bridge.py --set bridge_config=aibridge.toml`."""

import sys
from pathlib import Path

# Works from any directory and without installing the package: the package sits beside us.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aibridge.addons.core import Bridge

addons = [Bridge()]

# The SSE content view for mitmweb/mitmdump (events, assembled text, tool calls, usage).
from aibridge.observe import contentview  # noqa: E402

contentview.register()
