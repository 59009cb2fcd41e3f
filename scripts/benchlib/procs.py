"""The benchmark's fake provider process and CPU accounting (mitmdump: scripts/mitmlaunch.py)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure that makes the run invalid (exit code 1)."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idling since boot (/proc/stat, proc(5))."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK  # guest time is already in user time


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per thread of a process (tid -> seconds); threads that ended are gone."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            out[int(task.name)] = cpu_seconds_of(task / "stat")
    return out


def loop_sleeps(pid: int) -> int:
    """How often the main thread (mitmproxy's event loop) has blocked — waited for data, a
    timer or the GIL: its voluntary context switches (/proc/<pid>/task/<pid>/status)."""
    with open(f"/proc/{pid}/task/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def cpu_seconds_of(stat: Path) -> float:
    data = stat.read_bytes()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class FakeProc:
    """tests.fakeprovider.FakeProvider in a child process (see benchlib/fakeserver.py)."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(root / "scripts" / "benchlib" / "fakeserver.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=root)
        self.log_path = log_path
        hello = self._read(timeout=20)
        self.port: int = hello["port"]
        self.ca: str = hello["ca"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        # The child writes exactly one line per command, so nothing sits in the reader's buffer
        # while select() waits on the pipe.
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise BenchError(f"fake provider did not answer within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            raise BenchError(f"fake provider exited ({self.proc.returncode}): "
                             f"{self.log_path.read_text(errors='replace')[-2000:]}")
        return json.loads(line)

    def call(self, op: str, **kw: object) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._read(timeout=30)
        if not answer.get("ok", True):
            raise BenchError(f"fake provider: {op}: {answer.get('error')}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
                self.proc.wait(10)
            except Exception:
                pass
        _terminate(self.proc)
        self._log.close()


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
