"""Child processes of the benchmark: the fake provider and the mitmdump instances."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
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


def listening_port(pid: int) -> int | None:
    """The TCP port a process listens on at 127.0.0.1, found via its socket inodes.

    `mitmdump -q` does not log "proxy listening at", so the port bound by `@127.0.0.1:0` is
    read from /proc instead.
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return None
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and inode in inodes and local.startswith("0100007F:"):
                return int(local.split(":")[1], 16)
    return None


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


class Mitmdump:
    """One mitmdump; output goes to a log file, the port comes from /proc."""

    def __init__(self, name: str, args: list[str], confdir: Path, log_path: Path,
                 env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.args = args
        self.confdir = confdir
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ca(self) -> str:
        return str(self.confdir / "mitmproxy-ca-cert.pem")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30) -> Mitmdump:
        mitmdump = Path(sys.executable).with_name("mitmdump")
        cmd = [str(mitmdump), "-q", "--mode", "regular@127.0.0.1:0",
               "--set", f"confdir={self.confdir}", *self.args]
        self._logf = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name}: mitmdump exited with {self.proc.returncode}:\n"
                                 f"{self.log()[-3000:]}")
            port = listening_port(self.proc.pid)
            if port and Path(self.ca).exists():
                self.port = port
                return self
            time.sleep(0.05)
        raise BenchError(f"{self.name}: mitmdump did not listen within {timeout}s:\n"
                         f"{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
            self._logf.close()


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
