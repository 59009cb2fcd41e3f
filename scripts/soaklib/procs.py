"""The soak's child processes: the faulty fake provider and mitmdump with the bridge, and a
sampler of mitmdump's resident memory and open file descriptors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LISTENING = re.compile(r"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)")


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


class Mitmdump:
    """mitmdump with the bridge addon; its output goes to a log file."""

    def __init__(self, script: Path, workdir: Path, config: Path, env: dict[str, str]) -> None:
        self.script = script
        self.workdir = workdir
        self.config = config
        self.env = env
        self.confdir = workdir / "certs"
        self.log_path = workdir / "mitmdump.log"
        self.flows_path = workdir / "flows.mitm"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.returncode: int | None = None
        self.stop_seconds = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ca(self) -> str:
        return str(self.confdir / "mitmproxy-ca-cert.pem")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60) -> Mitmdump:
        mitmdump = Path(sys.executable).with_name("mitmdump")
        cmd = [str(mitmdump), "-s", str(self.script),
               "--mode", "regular@127.0.0.1:0", "--set", f"confdir={self.confdir}",
               "--set", f"bridge_config={self.config}",
               "--set", f"save_stream_file={self.flows_path}"]
        self._logf = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (m := LISTENING.search(self.log())) and Path(self.ca).exists():
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise SoakError(f"mitmdump exited with {self.proc.returncode}:\n"
                                f"{self.log()[-3000:]}")
            time.sleep(0.05)
        self.kill()
        raise SoakError(f"mitmdump did not start within {timeout}s:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (mitmdump flushes the recorder on shutdown), then wait; kill on timeout."""
        if self.proc is None:
            return None
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = None  # did not stop by itself
                self.stop_seconds = time.monotonic() - t0
                self._logf.close()
                return None
        self.stop_seconds = time.monotonic() - t0
        self.returncode = self.proc.returncode
        self._logf.close()
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            with contextlib.suppress(Exception):
                self._logf.close()


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
