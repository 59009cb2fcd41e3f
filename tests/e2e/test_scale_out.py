"""Several bridge workers as one gateway: `aibridge serve` with real HAProxy, a real
redis-server for `[state] url` and the fake provider.

A request "through worker A" goes to that worker's own loopback port, to know which process
saw what; the rest goes through HAProxy, as clients would."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import RedisServer, eventually
from tests.e2e.harness import ACTORS_TOML, ALICE_TOKEN, ROOT, provider_config
from tests.fakeprovider import FakeProvider, Reply

KEYS = ["sk-scale-key-0-aaaaaaaaaaaa", "sk-scale-key-1-bbbbbbbbbbbb"]
MESSAGES = [{"role": "user", "content": "hi"}]
AIBRIDGE = Path(sys.executable).with_name("aibridge")


class Steady:
    """`threads` clients calling `ask(client)` through the gateway in a loop while the block
    runs (`done` counts the answers); any failure at all is kept in `failures`, and ends its
    client."""

    def __init__(self, g: Gateway, ask: Callable[[openai.OpenAI], str], threads: int = 3,
                 answer: str = "Hello from fake") -> None:
        self.done = 0
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._load, args=(g, ask, answer))
                         for _ in range(threads)]

    def _load(self, g: Gateway, ask: Callable[[openai.OpenAI], str], answer: str) -> None:
        client = g.client()  # through HAProxy
        while not self._stop.is_set():
            try:
                assert ask(client) == answer
                self.done += 1
            except BaseException as e:  # any failure at all is the finding
                self.failures.append(e)
                return

    def more(self, n: int) -> bool:
        """`n` more answers arrive (bounded wait)."""
        before = self.done
        return eventually(lambda: self.done >= before + n)

    def __enter__(self) -> Steady:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """`aibridge serve` running in `workdir`: its workers' ports and pids from its output."""

    def __init__(self, workdir: Path, config: str, *, workers: int = 2,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "actors.toml").write_text(ACTORS_TOML)
        self.config_path = workdir / "aibridge.toml"
        self.config_path.write_text(config)
        self.port = free_port()
        self.log_path = workdir / "serve.log"
        self.confdir = workdir / "certs"
        self.workers = workers
        self.env = {**os.environ, "AIBRIDGE_DATA_DIR": str(workdir / "data"),
                    "AIBRIDGE_OPENAI_KEYS": ",".join(KEYS),
                    "AIBRIDGE_ANTHROPIC_KEYS": ",".join(KEYS), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(AIBRIDGE), "serve", "--workers", str(self.workers), "--listen-host",
             "127.0.0.1", "--listen-port", str(self.port), "--log-dir",
             str(self.workdir / "logs"), "--run-dir", str(self.workdir / "run"), "--",
             "-s", str(ROOT / "addon" / "bridge.py"), "--set", "flow_detail=0",
             "--set", f"bridge_config={self.config_path}", "--set", f"confdir={self.confdir}",
             "--set", "bridge_access_log=off"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        if not eventually(lambda: "behind HAProxy" in self.log() or self.proc.poll() is not None,
                          timeout=90):
            raise AssertionError(f"serve did not start:\n{self.log()}")
        assert self.proc.poll() is None, self.log()
        assert eventually(lambda: self.healthy(self.port)), self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_log(self, n: int) -> str:
        path = self.workdir / "logs" / f"worker-{n}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def worker(self, n: int) -> tuple[int, int]:
        """(port, pid) of worker `n`, the latest start of it."""
        found = re.findall(rf"worker {n} on 127\.0\.0\.1:(\d+) \(pid (\d+)\)", self.log())
        assert found, self.log()
        return int(found[-1][0]), int(found[-1][1])

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    @property
    def ca(self) -> str:
        return str(self.confdir / "mitmproxy-ca-cert.pem")

    def client(self, port: int | None = None, **kw) -> openai.OpenAI:
        import ssl
        proxy = f"http://dev:{ALICE_TOKEN}@127.0.0.1:{port or self.port}"
        http_client = openai.DefaultHttpxClient(
            proxy=proxy, verify=ssl.create_default_context(cafile=self.ca))
        return openai.OpenAI(api_key="sk-user-placeholder", http_client=http_client,
                             max_retries=kw.pop("max_retries", 0), **kw)

    @staticmethod
    def health(port: int, details: bool = False) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz")
        if details:
            basic = base64.b64encode(f"dev:{ALICE_TOKEN}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    @classmethod
    def healthy(cls, port: int) -> bool:
        try:
            return bool(cls.health(port).get("ready"))
        except (OSError, ValueError):
            return False

    def _control(self, command: bytes) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.workdir / "run" / "haproxy.sock"))
            s.sendall(command + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def haproxy_sessions(self) -> dict[str, int]:
        """Server name -> connections it was given so far."""
        lines = self._control(b"show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: int(r["stot"]) for r in rows
                if r.get("pxname") == "workers" and r["svname"].startswith("w")}

    def haproxy_servers(self) -> dict[str, str]:
        """Server name -> operational state (2 = up, 0 = down) from HAProxy's control socket."""
        states = {}
        for line in self._control(b"show servers state workers").splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "workers":
                states[parts[3]] = parts[5]
        return states


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(config: str, **kw) -> Gateway:
        g = Gateway(tmp_path / f"gw{len(started)}", config, **kw)
        started.append(g)
        return g.start()
    yield make
    for g in started:
        g.stop()


def keys_seen(fake: FakeProvider) -> list[int]:
    return [KEYS.index((r.header("authorization") or "").removeprefix("Bearer "))
            for r in fake.requests]


def shared_config(fake: FakeProvider, redis_server: RedisServer, extra: str = "") -> str:
    return provider_config(fake.url, extra=f'[state]\nurl = "{redis_server.url}"\n{extra}')


def chat(client: openai.OpenAI, model: str = "gpt-4o") -> str:
    return client.chat.completions.create(model=model, messages=MESSAGES).choices[0] \
        .message.content


def rate_limited(seconds: str) -> Reply:
    return Reply(status=429, headers=[("retry-after", seconds)],
                 body={"error": {"message": "Rate limit reached", "type": "rate_limit_error",
                                 "param": None, "code": "rate_limit_exceeded"}})


def key_state(port: int, index: int) -> str:
    doc = Gateway.health(port, details=True)
    provider = next(p for p in doc["providers"] if p["name"] == "openai")
    return provider["keys"][index]["state"]


# -- shared state across workers -------------------------------------------------------------

def test_a_429_through_one_worker_cools_the_key_for_the_other(fake, redis_server, gateway):
    g = gateway(shared_config(fake, redis_server))
    (a, _), (b, _) = g.worker(1), g.worker(2)
    fake.enqueue(rate_limited("120"))
    assert chat(g.client(a)) == "Hello from fake"
    assert keys_seen(fake) == [0, 1]  # failed over within worker A
    assert eventually(lambda: key_state(b, 0) == "cooling")
    assert chat(g.client(b)) == "Hello from fake"
    assert chat(g.client()) == "Hello from fake"  # and through the balancer
    assert keys_seen(fake) == [0, 1, 1, 1]  # the fake saw the cooling key exactly once


def test_a_circuit_opened_through_one_worker_rejects_through_the_other(fake, redis_server,
                                                                        gateway):
    extra = "[resilience.circuit]\nfailures = 2\nwindow = 30\nopen_for = 60\n"
    g = gateway(shared_config(fake, redis_server, extra))
    (a, _), (b, _) = g.worker(1), g.worker(2)
    client_a = g.client(a)
    for _ in range(2):
        fake.enqueue(Reply(status=503, body={"error": {"message": "down", "type": "api_error",
                                                       "param": None, "code": None}}))
        with pytest.raises(openai.InternalServerError):
            client_a.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert len(fake.requests) == 2
    assert eventually(lambda: Gateway.health(b)["open_circuits"] == 1)
    with pytest.raises(openai.APIStatusError) as info:
        g.client(b).chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert info.value.status_code == 503
    assert "circuit breaker is open" in info.value.response.json()["error"]["message"]
    assert len(fake.requests) == 2  # worker B never touched the provider
    assert chat(g.client(b), model="gpt-y") == "Hello from fake"  # other models flow


def test_a_config_reload_reaches_every_worker(fake, redis_server, gateway):
    g = gateway(shared_config(fake, redis_server))
    ports = [g.worker(1)[0], g.worker(2)[0]]
    for port in ports:
        assert g.client(port).models.list() is not None
    text = g.config_path.read_text().replace(
        "[providers.openai]\n", '[providers.openai]\ndeny = ["/v1/models"]\n', 1)
    g.config_path.write_text(text)

    def refused(port: int) -> bool:
        try:
            g.client(port).models.list()
        except openai.PermissionDeniedError:
            return True
        return False
    for port in ports:
        assert eventually(lambda port=port: refused(port)), g.worker_log(1) + g.worker_log(2)


def test_redis_killed_mid_run_fails_no_request(fake, redis_server, gateway):
    g = gateway(shared_config(fake, redis_server))
    with Steady(g, chat) as load:
        assert load.more(20)
        redis_server.kill()
        ports = [g.worker(1)[0], g.worker(2)[0]]
        for port in ports:
            assert eventually(lambda port=port: Gateway.health(port)["status"] == "degraded")
        assert load.more(40)
        doc = Gateway.health(ports[0])
        assert doc["ready"] is True and doc["shared_state"] == {"reachable": False}
        redis_server.start()
        for port in ports:
            assert eventually(lambda port=port: Gateway.health(port)["status"] == "ok")
        assert load.more(20)
    assert load.failures == []
    for n in (1, 2):  # one line when it went, one when it came back: not one per request
        log = g.worker_log(n)
        assert log.count("unreachable") == 1, log
        assert log.count("is back;") == 1, log


# -- the workers and the balancer ------------------------------------------------------------

def test_a_dead_worker_leaves_rotation_and_is_restarted(fake, gateway):
    g = gateway(provider_config(fake.url))
    port, pid = g.worker(1)
    os.kill(pid, signal.SIGKILL)
    # Connections the kernel accepted for it before it was gone die with it; from then on
    # none may fail.
    assert eventually(lambda: not Gateway.healthy(port))
    client = g.client()
    for _ in range(20):  # the balancer sends everything to the live worker meanwhile
        assert chat(client) == "Hello from fake"
        client = g.client()  # a new connection each time
    assert eventually(lambda: g.haproxy_servers().get("w1") == "0" or g.worker(1)[1] != pid)
    assert eventually(lambda: g.worker(1)[1] != pid, timeout=20), g.log()
    assert eventually(lambda: Gateway.healthy(port), timeout=30)
    assert eventually(lambda: g.haproxy_servers() == {"w1": "2", "w2": "2"}, timeout=10)
    assert "exited with status" in g.log()


def test_sigterm_stops_haproxy_and_every_worker(fake, gateway):
    g = gateway(provider_config(fake.url))
    pids = [g.worker(1)[1], g.worker(2)[1]]
    haproxy = int(re.search(r"behind HAProxy on .* \(pid (\d+)\)", g.log()).group(1))
    assert g.stop() == 0, g.log()
    for pid in (*pids, haproxy):
        assert not Path(f"/proc/{pid}").exists() or \
            "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert "stopped" in g.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.port), timeout=2).close()


def test_two_workers_writing_one_sqlite_file_lose_no_record(fake, gateway):
    g = gateway(provider_config(fake.url))
    errors: list[BaseException] = []

    def burst() -> None:
        client = g.client()
        for _ in range(25):
            try:
                chat(client)
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    sessions = g.haproxy_sessions()
    assert sessions["w1"] > 0 and sessions["w2"] > 0, sessions  # both workers wrote
    assert g.stop() == 0  # each worker flushes its records on the way out
    db = sqlite3.connect(g.workdir / "data" / "aibridge.db")
    try:
        (started,) = db.execute("SELECT count(*) FROM interceptions").fetchone()
        (ended,) = db.execute("SELECT count(*) FROM interception_ends").fetchone()
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    finally:
        db.close()
    assert (started, ended) == (100, 100)
    assert mode == "wal"


def test_serve_refuses_an_open_proxy_on_a_shared_address(tmp_path, fake):
    config = tmp_path / "aibridge.toml"
    config.write_text(provider_config(fake.url, actors=False))
    done = subprocess.run([str(AIBRIDGE), "serve", "--workers", "2", "--listen-host", "0.0.0.0",
                           "--listen-port", str(free_port()), "--",
                           "--set", f"bridge_config={config}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 78
    assert "refusing to run an open proxy" in done.stderr
