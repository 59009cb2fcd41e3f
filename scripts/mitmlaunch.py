"""Start and stop a real mitmdump (or mitmweb) on a loopback port the kernel picks.

The one launcher of the end-to-end tests (`tests/e2e/harness.py`), `scripts/bench` and
`scripts/soak`. Tests import it as `scripts.mitmlaunch`; the scripts put `scripts/` on
`sys.path` and import `mitmlaunch`.

The proxy listens on `127.0.0.1:0`, so no port is guessed and none can be taken by someone else
between choosing and binding it; the port is read from mitmproxy's own "listening at" log line.
The child's output goes to a log file, which is also what `wait_for_log` reads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Self

MITMDUMP = Path(sys.executable).with_name("mitmdump")
MITMWEB = Path(sys.executable).with_name("mitmweb")
LISTEN_HOST = "127.0.0.1"
# Regular mode logs "HTTP(S) proxy listening at 127.0.0.1:N."; the other modes name themselves:
# "HTTP(S) proxy (upstream mode) listening at 127.0.0.1:N."
LISTENING = re.compile(r"HTTP\(S\) proxy(?: \([^)]*\))? listening at 127\.0\.0\.1:(\d+)")
# Log levels that hide the listening line (it is logged at info).
_QUIET = re.compile(r"termlog_verbosity=(alert|warn|error)")
LOG_TAIL = 4000  # characters of the log quoted in a LaunchError


class LaunchError(RuntimeError):
    """The proxy did not start: it exited, or logged no listening line in time."""


class Mitmdump:
    """One mitmdump process with `script` (optional), `args` and `env` (the child's whole
    environment; None inherits ours), `confdir` (optional) and one `--mode` listener.

    `args`, `script` and `mode` are read by `start()`, so a subclass may change them between
    runs. `ready(log)` is an extra start condition for subclasses (mitmweb's web server).
    """

    def __init__(self, log_path: Path, *, script: str | Path | None = None,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 confdir: Path | None = None, cwd: Path | None = None, mode: str = "regular",
                 program: Path = MITMDUMP, name: str = "mitmdump") -> None:
        self.log_path = log_path
        self.script = None if script is None else str(script)
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.confdir = confdir
        self.cwd = cwd
        self.mode = mode
        self.program = program
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.returncode: int | None = None  # of the last stop(); None when it had to be killed
        self.stop_seconds = 0.0  # from SIGTERM to exit in the last stop()
        self._killed = False
        self._logf: IO[bytes] | None = None

    # -- state -----------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def ca(self) -> str:
        """The CA certificate clients trust (created by mitmproxy in its confdir)."""
        confdir = self.confdir or Path.home() / ".mitmproxy"
        return str(confdir / "mitmproxy-ca-cert.pem")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        return self.log()[-chars:]

    def wait_for_log(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The first match of `pattern` in the log; AssertionError (a test failure) if none
        appears within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if (m := re.search(pattern, self.log())):
                return m
            if time.monotonic() >= deadline:
                raise AssertionError(f"no log line matching {pattern!r} in:\n{self.log_tail()}")
            time.sleep(0.05)

    def ready(self, log: str) -> bool:
        return True

    # -- lifecycle -------------------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [str(self.program)]
        if self.script is not None:
            cmd += ["-s", self.script]
        cmd += ["--mode", f"{self.mode}@{LISTEN_HOST}:0"]
        if self.confdir is not None:
            cmd += ["--set", f"confdir={self.confdir}"]
        return cmd + self.args

    def start(self, timeout: float = 30) -> Self:
        """Start and wait until the proxy listens (and its CA exists); raises LaunchError."""
        if self.alive():
            raise LaunchError(f"{self.name} is already running (pid {self.pid})")
        cmd = self.command()
        if quiet := [a for a in cmd if a in ("-q", "--quiet") or _QUIET.fullmatch(a)]:
            raise LaunchError(f"{self.name}: {quiet[0]!r} hides the 'listening at' log line "
                              "(info) that the launcher reads the port from")
        self._close_log()
        if self.log_path.exists():  # a restart: the last run's log stays for a failing test
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".previous"))
        self._logf = self.log_path.open("wb")
        # A child writing to a file buffers stdout in 8 KiB blocks: the listening line (and any
        # line a test waits for) would only show up much later.
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.cwd)
        self.port = 0
        self.returncode = None
        self.stop_seconds = 0.0
        self._killed = False
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if ((m := LISTENING.search(log)) and Path(self.ca).exists()
                    and self.ready(log)):
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                self._close_log()
                raise LaunchError(f"{self.name} exited with {self.proc.returncode}:\n"
                                  f"{self.log_tail()}")
            if time.monotonic() >= deadline:
                self.stop()
                raise LaunchError(f"{self.name} did not start within {timeout:g}s:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM (mitmdump then runs its addons' shutdown), wait up to `timeout`, else kill.
        Returns the exit status, or None when it had to be killed or never started. Calling
        it again returns the same."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self._killed = True
            self.stop_seconds = time.monotonic() - t0
        self.returncode = None if self._killed else self.proc.returncode
        self._close_log()
        return self.returncode

    def _close_log(self) -> None:
        if self._logf is not None:
            self._logf.close()
            self._logf = None
