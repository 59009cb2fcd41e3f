"""Start-up refusals are one clear line: a real `mitmdump` that refuses to start prints a single
`aibridge: …` line on stderr (what is wrong and how to fix it) and exits non-zero, with no
traceback and none of mitmproxy's own "Addon error" / "Error logged during startup" lines.

The same problem after start-up (an option changed in mitmweb) must not end the proxy: the
change is refused and the running settings stay.

Every process listens on loopback only. The open-proxy case listens on `127.1`: the kernel
reads it as 127.0.0.1, but it is no IP address the guard can prove is loopback, so the guard
treats it as shared, exactly as it does 0.0.0.0 (asserted below, so the test cannot pass
vacuously if the guard changes).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from aibridge.observe import health

pytestmark = pytest.mark.timeout(120)

# Self-contained on purpose (no harness launcher): these processes must be started on a chosen
# listen address and are expected to exit by themselves, never to reach "listening at".
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "addon" / "bridge.py"
MITMDUMP = Path(sys.executable).with_name("mitmdump")
MITMWEB = Path(sys.executable).with_name("mitmweb")
LISTENING = re.compile(r"HTTP\(S\) proxy(?: \([^)]*\))? listening at ")
OPENAI_KEY = "sk-central-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-central-0123456789abcdefgh"
EXIT_WAIT = 30.0  # seconds mitmdump gets to refuse and exit (imports take ~1-2 s)
# What mitmproxy prints when an addon error escapes to it: none of it may appear.
NOISE = ("Traceback", "Addon error", "error in script", "Error logged during startup")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return f"exit status {self.status}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def run_mitmdump(tmp_path: Path, config: str, *, listen_host: str = "127.0.0.1",
                 unset: tuple[str, ...] = ()) -> Outcome:
    """Start mitmdump with the bridge and this config; it is expected to exit by itself."""
    (tmp_path / "aibridge.toml").write_text(config)
    base = {**os.environ, "AIBRIDGE_DATA_DIR": str(tmp_path / "data"),
            "AIBRIDGE_OPENAI_KEYS": OPENAI_KEY, "AIBRIDGE_ANTHROPIC_KEYS": ANTHROPIC_KEY}
    for name in unset:
        base.pop(name, None)
    cmd = [str(MITMDUMP), "-s", str(SCRIPT), "--mode", f"regular@{listen_host}:{free_port()}",
           "--set", f"confdir={tmp_path / 'certs'}",
           "--set", f"bridge_config={tmp_path / 'aibridge.toml'}"]
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=base, cwd=tmp_path)
        try:
            status = proc.wait(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail(f"mitmdump did not exit within {EXIT_WAIT}s:\n"
                        f"{out_path.read_text(errors='replace')}"
                        f"{err_path.read_text(errors='replace')}")
    return Outcome(status, out_path.read_text(errors="replace"),
                   err_path.read_text(errors="replace"))


def assert_one_line_refusal(outcome: Outcome, fragment: str) -> str:
    """Non-zero exit; stderr is exactly one `aibridge:` line that names the problem, and no
    other line of stdout or stderr mentions it; no traceback or mitmproxy error noise."""
    assert outcome.status > 0, outcome.describe()
    mentions = [line for line in outcome.output.splitlines() if fragment in line]
    assert len(mentions) == 1, outcome.describe()
    assert mentions[0].startswith("aibridge: "), outcome.describe()
    assert outcome.stderr.splitlines() == mentions, outcome.describe()
    for noise in NOISE:
        assert noise not in outcome.output, outcome.describe()
    return mentions[0]


def test_open_proxy_refusal_is_one_line_and_nothing_listens(tmp_path: Path) -> None:
    shared = "127.1"
    assert health.open_proxy_problem(
        health.listen_addresses([f"regular@{shared}:8080"], "", 8080)) is not None
    outcome = run_mitmdump(tmp_path, "[recording]\nenabled = false\n", listen_host=shared)
    line = assert_one_line_refusal(outcome, "refusing to run an open proxy")
    assert "allow_open_proxy" in line and "actors_file" in line  # says how to fix it
    assert not LISTENING.search(outcome.output), \
        "the refused proxy must not have been listening, even briefly:\n" + outcome.describe()


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    outcome = run_mitmdump(tmp_path, '[providers.openai\ncredentials = "centralized"\n')
    line = assert_one_line_refusal(outcome, "is not valid TOML")
    assert "aibridge.toml" in line and re.search(r"line \d+", line)  # where to look


def test_unknown_config_key_is_one_line(tmp_path: Path) -> None:
    outcome = run_mitmdump(tmp_path, "[recording]\nenabled = false\nno_such_setting = 1\n")
    line = assert_one_line_refusal(outcome, "no_such_setting")
    assert "aibridge.toml" in line


def test_centralized_without_keys_is_one_line(tmp_path: Path) -> None:
    outcome = run_mitmdump(tmp_path, '[providers.openai]\ncredentials = "centralized"\n',
                           unset=("AIBRIDGE_OPENAI_KEYS",))
    line = assert_one_line_refusal(outcome, "AIBRIDGE_OPENAI_KEYS")
    assert line.startswith("aibridge: provider 'openai'") and "keys_file" in line


# -- after start-up the same problem is refused without ending the proxy -------------------------


class Mitmweb:
    """A headless mitmweb with the bridge, driven through its REST API (no browser)."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        (tmp_path / "aibridge.toml").write_text(config)
        self.dir = tmp_path
        self.password = "startup-errors-test-password"
        self.web_port = 0
        self.log_path = tmp_path / "mitmweb.log"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = EXIT_WAIT) -> Mitmweb:
        for _attempt in range(3):  # the free web port may be taken before mitmweb binds it
            self.web_port = free_port()
            env = {**os.environ, "PYTHONUNBUFFERED": "1",
                   "AIBRIDGE_DATA_DIR": str(self.dir / "data"),
                   "AIBRIDGE_OPENAI_KEYS": OPENAI_KEY, "AIBRIDGE_ANTHROPIC_KEYS": ANTHROPIC_KEY}
            cmd = [str(MITMWEB), "-s", str(SCRIPT), "--mode", "regular@127.0.0.1:0",
                   "--web-host", "127.0.0.1", "--web-port", str(self.web_port),
                   "--no-web-open-browser", "--set", f"web_password={self.password}",
                   "--set", f"confdir={self.dir / 'certs'}",
                   "--set", f"bridge_config={self.dir / 'aibridge.toml'}"]
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env, cwd=self.dir)
            web = f"Web server listening at http://127.0.0.1:{self.web_port}/"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if LISTENING.search(self.log()) and web in self.log():
                    return self
                time.sleep(0.05)
            self.stop()
            if "address already in use" not in self.log().lower():
                break
        pytest.fail(f"mitmweb did not start (exit status {self.proc.returncode}):\n{self.log()}")

    def put_options(self, **options: str) -> tuple[int, str]:
        """PUT /options as mitmweb's UI does: password as bearer token, and the XSRF cookie
        echoed in a header (tornado only checks that the two match)."""
        xsrf = "startup-errors-test-xsrf"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/options", data=json.dumps(options).encode(),
            method="PUT", headers={"Content-Type": "application/json",
                                   "Authorization": f"Bearer {self.password}",
                                   "Cookie": f"_mitmproxy_xsrf={xsrf}", "X-XSRFToken": xsrf})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def test_a_bad_config_after_start_up_is_refused_and_the_proxy_keeps_running(
        tmp_path: Path) -> None:
    web = Mitmweb(tmp_path, "[recording]\nenabled = false\n")
    try:
        web.start()
        (tmp_path / "bad.toml").write_text("[providers.openai\n")
        status, body = web.put_options(bridge_config=str(tmp_path / "bad.toml"))
        assert status == 400 and "aibridge: " in body and "is not valid TOML" in body, body
        time.sleep(1.0)  # an exit would come right after the refused change
        assert web.proc is not None and web.proc.poll() is None, f"mitmweb exited:\n{web.log()}"
        status, body = web.put_options(bridge_config=str(tmp_path / "aibridge.toml"))
        assert status == 200, body  # still alive and reconfigurable
    finally:
        web.stop()
