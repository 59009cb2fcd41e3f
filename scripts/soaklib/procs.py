"""The soak's child processes: the faulty fake provider and mitmdump with the bridge (started by
scripts/mitmlaunch.py), and a sampler of mitmdump's resident memory and open file descriptors."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mitmlaunch import Mitmdump


class SoakError(Exception):
    """The soak could not run (a process failed to start); exit code 2."""


class FakeProc:
    """soaklib/fakeserver.py in a child process, driven by JSON lines."""

    def __init__(self, root: Path, faults: dict, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(root / "scripts" / "soaklib" / "fakeserver.py"),
             json.dumps(faults)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=root)
        self.port: int = self._read(20)["port"]

    def _read(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            raise SoakError(f"fake provider did not answer within {timeout}s: "
                            f"{self.log_path.read_text(errors='replace')[-2000:]}")
        return json.loads(line)

    def call(self, op: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("quit")
                self.proc.wait(10)
        terminate(self.proc)
        self._log.close()


def bridge_mitmdump(script: Path, workdir: Path, config: Path, env: dict[str, str]) -> Mitmdump:
    """mitmdump with the bridge addon; confdir, log and saved flows in `workdir`."""
    return Mitmdump(workdir / "mitmdump.log", script=script, confdir=workdir / "certs",
                    cwd=workdir, env=env,
                    args=["--set", f"bridge_config={config}",
                          "--set", f"save_stream_file={workdir / 'flows.mitm'}"])


def terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- resource sampling ---------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    rss_kib: int
    fds: int


class Sampler(threading.Thread):
    """Reads a process's VmRSS and open fd count every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> Sample | None:
        rss, fds = rss_kib(self.pid), open_fds(self.pid)
        if rss is None or fds is None:
            return None
        s = Sample(time.monotonic() - self.t0, rss, fds)
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
