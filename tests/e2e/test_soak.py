"""The 30-second fault and soak run: `scripts/soak --seconds 30 --clients 6` must pass.

Six SDK client threads (chat, responses, messages; streaming and not) go through a real
mitmdump with the bridge to a fake provider that injects 429s, 500s, HTML 502s, resets, slow
and stalled answers. See scripts/soak.py for what is checked; on failure the script's output
(printed below) names the BAD requests and keeps the work directory as evidence.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.harness import ROOT


@pytest.mark.timeout(180)
def test_soak_30_seconds() -> None:
    proc = subprocess.run([str(ROOT / "scripts" / "soak"), "--seconds", "30", "--clients", "6"],
                          capture_output=True, text=True, timeout=150, cwd=ROOT)
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, out[-6000:]
    assert "RESULT: PASS" in out
    assert re.search(r"^PASS  BAD requests: 0$", out, re.M)
    m = re.search(r"^PASS  records: interceptions (\d+), ended (\d+), unended 0, "
                  r"ends without interception 0$", out, re.M)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) > 100, out[-3000:]
    assert re.search(r"^PASS  records: interceptions (\d+) = bridged requests sent \1$", out,
                     re.M)
    assert re.search(r"^PASS  memory: RSS MiB ", out, re.M)
    assert re.search(r"^PASS  open fds: ", out, re.M)
    assert re.search(r"^PASS  mitmdump: exit 0 ", out, re.M)
    # The faults really happened and came back as well-formed errors.
    faults = re.search(r"^faults injected by the fake: (.*)$", out, re.M)
    assert faults and all(k in faults.group(1) for k in ("429", "500 JSON", "502 HTML", "reset"))
    errors = re.search(r"^well-formed errors seen by clients: (.*)$", out, re.M)
    assert errors and "429 rate_limit_error" in errors.group(1)
    assert "502 api_error" in errors.group(1) and "stream api_error" in errors.group(1)
