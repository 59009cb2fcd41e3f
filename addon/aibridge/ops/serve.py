"""`aibridge serve --workers N [mitmdump args…]`: N bridge processes as one gateway.

One mitmdump process uses one core. `serve` starts N of them on loopback ports, each with the
same mitmdump arguments (so one confdir: one CA; one `bridge_config`: one config file, which
each worker watches, so an edit reaches all of them; one recording database), behind HAProxy
(Debian's `haproxy`, TCP mode) on the public listen address. HAProxy checks each worker with
`GET /healthz` on its port (the bridge answers an origin-form request itself) and sends new
connections only to the workers that answer; a connection refused by a worker that just died
is re-dispatched to another.

HAProxy puts a PROXY protocol v2 header before each connection's bytes (`send-proxy-v2`,
its health checks too) and the workers read it from HAProxy's address only
(`bridge_proxy_protocol`, addons/proxy_protocol.py), so each worker sees the client's own
address: the failed-login limits, the per-address connection cap and the records use it.

A worker that exits on its own is started again (after 1 s, doubling up to 30 s while it keeps
dying), on the same port; HAProxy takes it back once its health check passes. SIGTERM (or
Ctrl-C) stops HAProxy from accepting and each worker drains as `mitmdump` does on its own
(`shutdown_grace`), then everything has exited.

State that must hold across workers (key cooldowns, circuit breakers, failed logins, budgets,
rate limits) needs `[state] url` (Redis); without it each worker keeps its own, and `serve`
says so at start.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aibridge.config import ConfigError, load_config

BRIDGE_SCRIPT = Path(__file__).resolve().parents[2] / "bridge.py"
RESTART_FIRST, RESTART_MAX = 1.0, 30.0  # seconds before restarting a worker that died
HEALTHY_AFTER = 60.0  # seconds a restarted worker must live before its back-off resets
START_TIMEOUT = 60.0  # seconds for a worker to answer /healthz at start
RESERVED = {"--mode", "-m", "--listen-host", "--listen-port", "-p"}
BALANCER = "127.0.0.1"  # the address HAProxy connects to the workers from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", "-w", type=_positive, default=os.cpu_count() or 1,
                        help="bridge processes (default: one per core)")
    parser.add_argument("--listen-host", default="",
                        help="the public address HAProxy listens on (default: all interfaces)")
    parser.add_argument("--listen-port", type=int, default=8080,
                        help="the public port (default: 8080)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="where haproxy.cfg and its control socket go (default: a "
                             "temporary directory removed on exit)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="write each worker's output to <dir>/worker-N.log and HAProxy's "
                             "to <dir>/haproxy.log (default: this process's stdout/stderr)")
    parser.add_argument("--haproxy", default=None,
                        help="the haproxy program (default: haproxy on PATH or /usr/sbin)")
    parser.add_argument("--maxconn", type=_positive, default=20_000,
                        help="connections HAProxy accepts in all (default: 20000)")
    parser.add_argument("mitmdump_args", nargs=argparse.REMAINDER,
                        help="arguments for every worker's mitmdump, after `--` (e.g. "
                             "--set bridge_config=aibridge.toml --set confdir=certs); "
                             "-s addon/bridge.py is added when no -s is given")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# -- pure parts ---------------------------------------------------------------------------

def haproxy_config(*, listen_host: str, listen_port: int, workers: Sequence[int],
                   per_source: int, maxconn: int, control: Path) -> str:
    """HAProxy in TCP mode in front of the workers' loopback ports.

    Each connection to a worker begins with a PROXY protocol v2 header naming the client
    (`send-proxy-v2`; health checks send a LOCAL one, `check-send-proxy`). Each worker caps the
    open connections per client address (`[auth] max_connections_per_address`); the stick table
    applies the same cap to all workers together.
    """
    bind = f"[{listen_host}]" if ":" in listen_host else listen_host
    servers = "\n".join(
        f"    server w{i + 1} {BALANCER}:{port} check send-proxy-v2 check-send-proxy "
        "inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down"
        for i, port in enumerate(workers))
    return f"""# Written by `aibridge serve`: regenerated at every start, do not edit.
global
    maxconn {maxconn}
    stats socket {control} mode 600 level admin
    hard-stop-after 60s
    log stderr format raw local0 notice

defaults
    mode tcp
    log global
    timeout connect 2s
    # LLM requests may think for minutes before a first byte; the bridge's own idle and
    # upstream timeouts are the real bounds.
    timeout client 30m
    timeout server 30m
    timeout tunnel 30m
    retries 3
    option redispatch 1

frontend aibridge
    bind {bind}:{listen_port}
    stick-table type ip size 200k expire 30m store conn_cur
    tcp-request connection track-sc0 src
    tcp-request connection reject if {{ sc0_conn_cur gt {per_source} }}
    default_backend workers

backend workers
    # A refused connection takes the worker out at once (it died); the health check brings
    # it back when it answers /healthz again.
    balance leastconn
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host aibridge.health
    http-check expect status 200
{servers}
"""


def worker_args(mitmdump_args: Sequence[str], port: int) -> list[str]:
    args = list(mitmdump_args)
    if args[:1] == ["--"]:
        args = args[1:]
    if "-s" not in args and "--scripts" not in args:
        args = ["-s", str(BRIDGE_SCRIPT), *args]
    # HAProxy's PROXY header is believed from its address only (a header from any other
    # address closes that connection; a local client without one keeps its own address).
    return [*args, "--set", f"bridge_proxy_protocol={BALANCER}",
            "--listen-host", "127.0.0.1", "--listen-port", str(port)]


def refusal(mitmdump_args: Sequence[str], listen_host: str) -> str | None:
    """Why these arguments cannot be served (a listener of their own, an open proxy)."""
    for arg in mitmdump_args:
        if arg.split("=", 1)[0] in RESERVED or arg.startswith("mode="):
            return (f"{arg}: the workers listen on loopback ports serve chooses; give the "
                    "public address with serve's own --listen-host/--listen-port")
    config = _setting(mitmdump_args, "bridge_config")
    try:
        bridge, _ = load_config(config)
    except ConfigError as e:
        return str(e)
    if _loopback(listen_host) or bridge.auth.allow_open_proxy \
            or bridge.auth.actors_file is not None or bridge.auth.oidc is not None:
        return None
    return (f"refusing to run an open proxy on {listen_host or '0.0.0.0'}: HAProxy would "
            "expose workers that need no credentials. Add actors ([auth] actors_file), listen "
            "on loopback (--listen-host 127.0.0.1), or set [auth] allow_open_proxy = true")


def _setting(args: Sequence[str], name: str) -> str | None:
    found = None
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--set" and i + 1 < len(args) else \
            arg[len("--set="):] if arg.startswith("--set=") else None
        if value is not None and value.startswith(f"{name}="):
            found = value.split("=", 1)[1]
    return found


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fitting_maxconn(wanted: int) -> int:
    """HAProxy needs two descriptors per connection (client and worker side), within the
    hard limit on open files it may raise itself to."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (hard - 100) // 2))


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """`count` distinct free loopback ports for the workers, none of them in `avoid` (the
    public listen port: HAProxy binds it only once the workers answer, so until then the
    system could hand it to a worker). Each port stays bound until all are chosen, so no two
    are the same; each avoided one is skipped at most once, so this ends."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in avoid:
                ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def healthy(port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> bool:
    """Whether the worker (or HAProxy) on `port` answers `GET /healthz` with 200."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


# -- processes ----------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Children get SIGTERM if serve itself is killed (Linux; elsewhere nothing happens)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Worker:
    number: int
    port: int
    command: list[str]
    log: IO[bytes] | None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_FIRST
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT
                                     if self.log is not None else None,
                                     preexec_fn=_die_with_parent)
        self.started = time.monotonic()
        self.restart_at = None


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="aibridge-serve-"))
        self.own_run_dir = args.run_dir is None
        self.workers: list[Worker] = []
        self.haproxy: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    def say(self, line: str) -> None:
        print(f"aibridge serve: {line}", file=sys.stderr, flush=True)

    def _log(self, name: str) -> IO[bytes] | None:
        if self.args.log_dir is None:
            return None
        self.args.log_dir.mkdir(parents=True, exist_ok=True)
        f = (self.args.log_dir / name).open("ab")
        self._logs.append(f)
        return f

    def run(self) -> int:
        args = self.args
        haproxy = args.haproxy or shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if haproxy is None:
            self.say("haproxy not found: install Debian's haproxy (apt-get install haproxy, or "
                     "scripts/system-package haproxy haproxy)")
            return 1
        if problem := refusal(args.mitmdump_args, args.listen_host):
            self.say(problem)
            return 78
        config, _ = load_config(_setting(args.mitmdump_args, "bridge_config"))
        if config.state.url is None and args.workers > 1:
            self.say("no [state] url: each worker keeps its own key cooldowns, circuit "
                     "breakers, failed-login counts, budgets and rate limits")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(args.workers, avoid={args.listen_port})
        for i, port in enumerate(ports):
            command = [str(Path(sys.executable).with_name("mitmdump")),
                       *worker_args(args.mitmdump_args, port)]
            self.workers.append(Worker(i + 1, port, command, self._log(f"worker-{i + 1}.log")))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        try:
            # The first worker alone: with an empty confdir it creates the CA all share.
            if not self._start_and_wait(self.workers[:1]) or \
                    not self._start_and_wait(self.workers[1:]):
                return 1
            maxconn = fitting_maxconn(args.maxconn)
            if maxconn < args.maxconn:
                self.say(f"--maxconn {args.maxconn} needs more open files than this process "
                         f"may have; HAProxy gets {maxconn} (raise the limit: ulimit -n)")
            cfg = self.run_dir / "haproxy.cfg"
            cfg.write_text(haproxy_config(
                listen_host=args.listen_host, listen_port=args.listen_port, workers=ports,
                per_source=config.auth.max_connections_per_address, maxconn=maxconn,
                control=self.run_dir / "haproxy.sock"))
            check = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True,
                                   text=True, check=False)
            if check.returncode != 0:
                self.say(f"haproxy refused its configuration:\n{check.stderr or check.stdout}")
                return 1
            hlog = self._log("haproxy.log")
            self.haproxy = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=hlog,
                                            stderr=subprocess.STDOUT if hlog else None,
                                            preexec_fn=_die_with_parent)
            for w in self.workers:
                assert w.proc is not None
                self.say(f"worker {w.number} on 127.0.0.1:{w.port} (pid {w.proc.pid})")
            # Ready when a probe through HAProxy reaches a worker.
            probe_host = args.listen_host if args.listen_host not in ("", "0.0.0.0", "::") \
                else "127.0.0.1"
            deadline = time.monotonic() + 15
            while not healthy(args.listen_port, 0.5, probe_host) and not self.stopping:
                if self.haproxy.poll() is not None or time.monotonic() > deadline:
                    self.say("HAProxy did not start forwarding to the workers; see its output")
                    return 1
                time.sleep(0.05)
            self.say(f"{len(self.workers)} worker(s) behind HAProxy on "
                     f"{args.listen_host or '*'}:{args.listen_port} (pid {self.haproxy.pid})")
            return self._supervise()
        finally:
            self._shutdown()

    def _start_and_wait(self, workers: list[Worker]) -> bool:
        for w in workers:
            w.start()
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(workers)
        while waiting and not self.stopping:
            for w in list(waiting):
                if w.proc is not None and w.proc.poll() is not None:
                    self.say(f"worker {w.number} exited at start (status {w.proc.returncode}); "
                             "see its output")
                    return False
                if healthy(w.port, 0.5):
                    waiting.remove(w)
            if time.monotonic() > deadline:
                self.say(f"worker(s) {', '.join(str(w.number) for w in waiting)} did not "
                         f"answer /healthz within {START_TIMEOUT:g}s")
                return False
            time.sleep(0.1)
        return not self.stopping

    def _supervise(self) -> int:
        while not self.stopping:
            time.sleep(0.2)
            if self.haproxy is not None and self.haproxy.poll() is not None:
                self.say(f"haproxy exited (status {self.haproxy.returncode}); stopping")
                return 1
            now = time.monotonic()
            for w in self.workers:
                assert w.proc is not None
                if w.restart_at is not None:
                    if now >= w.restart_at and not self.stopping:
                        w.restarts += 1
                        w.start()
                        assert w.proc is not None
                        self.say(f"restarted worker {w.number} on 127.0.0.1:{w.port} "
                                 f"(pid {w.proc.pid})")
                    continue
                if w.proc.poll() is None:
                    continue
                if now - w.started > HEALTHY_AFTER:
                    w.delay = RESTART_FIRST
                w.restart_at = now + w.delay
                self.say(f"worker {w.number} (pid {w.proc.pid}) exited with status "
                         f"{w.proc.returncode}; out of rotation, restarting in {w.delay:g}s")
                w.delay = min(RESTART_MAX, w.delay * 2)
        return 0

    def _stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            self.stopping = True
            self.say(f"{signal.Signals(signum).name}: stopping (workers drain in-flight "
                     "requests)")

    def _shutdown(self) -> None:
        """HAProxy stops accepting, workers drain and exit, HAProxy follows."""
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.send_signal(signal.SIGUSR1)  # soft stop: no new connections
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 90
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"worker {w.number} did not stop; killing it")
                w.proc.kill()
                w.proc.wait(timeout=10)
        if self.haproxy is not None:
            try:
                self.haproxy.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.haproxy.terminate()
                try:
                    self.haproxy.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.haproxy.kill()
                    self.haproxy.wait(timeout=5)
        for f in self._logs:
            f.close()
        if self.own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.say("stopped")


def run(args: argparse.Namespace) -> int:
    return Supervisor(args).run()
