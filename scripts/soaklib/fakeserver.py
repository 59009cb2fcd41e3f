"""The fake provider with random faults, in its own process (off the clients' GIL).

Usage: fakeserver.py '<json Faults keyword arguments>'. Prints {"port": N} once listening
(plain HTTP on 127.0.0.1), then answers JSON-line commands on stdin, one line each:
  stats   {"ok": true, "faults": {kind or "none": count}} (bridged requests only)
  quit    stops the server and exits
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fakeprovider import FakeProvider, Faults  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    for name in ("retry_after", "slow_delay"):
        if name in options:
            options[name] = tuple(options[name])
    faults = Faults(**options)
    fake = FakeProvider(record=False, faults=faults).start()

    def reply(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"port": fake.port})
    try:
        for line in sys.stdin:
            op = json.loads(line).get("op")
            if op == "stats":
                reply({"ok": True, "faults": faults.snapshot()})
            elif op == "quit":
                reply({"ok": True})
                break
            else:
                reply({"ok": False, "error": f"unknown op {op!r}"})
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
