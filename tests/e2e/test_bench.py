"""`scripts/bench` runs end to end and prints what the README reads from it (no figure is
asserted: tests never judge speed)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.harness import ROOT

BENCH = str(ROOT / "scripts" / "bench")


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BENCH, "--no-json", *args], capture_output=True, text=True,
                          timeout=170, cwd=ROOT)


@pytest.mark.timeout(180)
def test_a_short_run_compares_bare_and_bridge_per_workload() -> None:
    # Short enough that bare mitmdump's CPU may stay under one 10 ms tick: no ratio is owed
    # then, but the run must complete.
    proc = bench("--workloads", "small,sse", "--concurrency", "1", "--rounds", "1",
                 "--requests", "small=30,sse=2", "--events", "20")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # The bridge really bridged: central key swapped in, actor stamped, the stream tapped.
    assert "bridge verified: fake saw Authorization: Bearer sk-bench-cen" in out, out
    assert "bridge SSE verified: /v1/chat/completions stream=true, 20 events relayed" in out
    assert len(re.findall(r"^  bridge/bare: throughput [\d.]+ %.* · CPU/req [+-]\d+ µs "
                          r"\(([+-][\d.]+ %|bare under one tick)\)$", out, re.M)) == 2, out
    lines = re.findall(r"^  bridge CPU/req by thread: event loop \d+ µs .* event-loop "
                       r"sleeps/req [\d.]+ \(bare [\d.]+\)$", out, re.M)
    assert len(lines) == 2, out


@pytest.mark.timeout(120)
def test_bare_buffered_compares_whole_messages_and_refuses_streams() -> None:
    proc = bench("--bare-buffered", "--workloads", "sse")
    assert proc.returncode == 2
    assert "--bare-buffered: with --workloads small, large or both" in proc.stderr
    proc = bench("--bare-buffered", "--workloads", "small", "--concurrency", "1",
                 "--rounds", "1", "--requests", "small=30")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "bare: mitmdump flow_detail=0 lazy (whole messages)" in out, out
    assert re.search(r"^  bridge/bare: throughput [\d.]+ %", out, re.M), out


@pytest.mark.timeout(120)
def test_hooks_mode_times_the_chain_in_the_process() -> None:
    proc = subprocess.run([BENCH, "hooks", "--requests", "20", "--rounds", "1", "--warmup", "2",
                           "--events", "20"], capture_output=True, text=True, timeout=100,
                          cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for recording in ("on ", "off"):
        assert re.search(rf"^  recording {recording}: small +[\d.]+ µs per request · stream +"
                         r"[\d.]+ µs per stream \([\d.]+ µs per event\)$", out, re.M), out
