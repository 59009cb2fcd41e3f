"""The fake provider in its own process, driven by JSON lines on stdin (one reply line each).

Running it apart from the benchmark client keeps the two off one GIL: on a 2-core machine a
shared interpreter would add lock hand-over delays to every request and blur the direct path.

Start: prints {"port": N, "ca": "/path/ca.pem"}. Commands ({"op": ...}):
  enqueue_sse {n, events, path}  script n identical chat streams of `events` events
  record {on}                    switch request recording on or off
  last                           method, path, headers and JSON keys of the last recorded request
  clear                          forget recorded requests and queued replies
  quit
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from benchlib.payloads import sse_events  # noqa: E402
from tests.fakeprovider import FakeProvider, Reply, tls_context_for  # noqa: E402

HOSTNAMES = ["localhost", "127.0.0.1", "api.openai.com"]


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tls, ca = tls_context_for(HOSTNAMES)
    fake = FakeProvider(tls, record=True).start()
    out = sys.stdout

    def reply(obj: object) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"port": fake.port, "ca": ca})
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "enqueue_sse":
                events = list(sse_events(int(cmd["events"])))
                for _ in range(int(cmd["n"])):
                    fake.enqueue(Reply(events=events), cmd.get("path"))
                reply({"ok": True})
            elif op == "record":
                fake.record = bool(cmd["on"])
                reply({"ok": True})
            elif op == "last":
                seen = fake.requests
                if not seen:
                    reply({"ok": False, "error": "no request recorded"})
                    continue
                s = seen[-1]
                try:
                    keys = sorted(s.json())
                except ValueError:
                    keys = []
                reply({"ok": True, "method": s.method, "path": s.path, "headers": s.headers,
                       "json_keys": keys, "body_len": len(s.body), "count": len(seen)})
            elif op == "clear":
                fake.clear()
                reply({"ok": True})
            elif op == "quit":
                reply({"ok": True})
                break
            else:
                reply({"ok": False, "error": f"unknown op {op!r}"})
    finally:
        fake.stop()
        Path(ca).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
