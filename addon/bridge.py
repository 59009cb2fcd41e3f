"""mitmproxy entry point: `mitmdump -s addon/bridge.py --set bridge_config=aibridge.toml`.

The bridge is this ordered chain of addons, one concern each; docs/architecture.md draws it.
"""

import sys
from pathlib import Path

# Works from any directory and without installing the package: the package sits beside us.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aibridge.addons import mitm_fixes
from aibridge.addons.chain import chain
from aibridge.addons.dispatch import Dispatch
from aibridge.observe import contentview, secretsview

# mitmproxy's per-message type check (same verdicts without its exception cycles) and hook
# dispatch (the same calls without its per-addon machinery); a fix that does not fit this
# mitmproxy is left out, and the log says so.
mitm_fixes.install_and_report()

# One addon for mitmproxy to walk, calling the chain's hooks in order (addons/dispatch.py).
addons = [Dispatch(chain())]

# The SSE content view for mitmweb/mitmdump (events, assembled text, tool calls, usage).
contentview.register()
# The Secrets content view: a request body with the redacted secrets marked.
secretsview.register()
