"""The client's own address behind the balancer: `aibridge serve` (real HAProxy sending the
PROXY protocol v2, real mitmdump workers) and a worker reading the header.

Clients connect from distinct loopback addresses (all of 127/8 is loopback on Linux): the
worker must count and record 127.0.0.2 and 127.0.0.3, not HAProxy's 127.0.0.1."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mitmproxy import http, io

from tests.e2e.harness import ALICE_TOKEN, BridgeProcess, provider_config
from tests.e2e.test_scale_out import Gateway, eventually, gateway  # noqa: F401
from tests.fakeprovider import FakeProvider

HOST = "api.openai.com:443"
LIMITS = ("[auth]\nmax_failures_per_address = 3\nmax_failures_per_user = 3\n"
          # one long window: the sliding count cannot roll over between the test's attempts
          "failure_window = 3600\n")


def connect(port: int, source: str, *, user: str = "dev", token: str = ALICE_TOKEN,
            before: bytes = b"") -> tuple[socket.socket, bytes]:
    """A CONNECT from `source` (optionally after `before`): the socket and the response head
    (b"" when the connection was closed without one)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    sock.sendall(before + f"CONNECT {HOST} HTTP/1.1\r\nHost: {HOST}\r\n"
                          f"Proxy-Authorization: Basic {basic}\r\n\r\n".encode())
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return sock, data


def status(port: int, source: str, **kw) -> int | None:
    sock, head = connect(port, source, **kw)
    sock.close()
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None


def v1(source: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 8080\r\n".encode()


def v2(source: str, port: int = 40000) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + \
        struct.pack("!HH", port, 8080)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12) + addresses


def limited_config(fake: FakeProvider, extra: str = LIMITS) -> str:
    return provider_config(fake.url).replace("[auth]\n", extra, 1)


def saved_flows(path) -> list[http.HTTPFlow]:
    with open(path, "rb") as f:
        return [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]


# -- through aibridge serve --------------------------------------------------------------------

class SavingGateway(Gateway):
    """`aibridge serve` whose worker also saves its flows (mitmproxy reads confdir/config.yaml
    for options the command line does not set)."""

    def start(self) -> Gateway:
        self.flows_path = self.workdir / "flows.mitm"
        self.confdir.mkdir(parents=True, exist_ok=True)
        (self.confdir / "config.yaml").write_text(f"save_stream_file: {self.flows_path}\n")
        return super().start()


@pytest.fixture
def saving_gateway(tmp_path: Path) -> Iterator[Callable[..., SavingGateway]]:
    started: list[SavingGateway] = []

    def make(config: str, **kw) -> SavingGateway:
        g = SavingGateway(tmp_path / f"saving{len(started)}", config, **kw)
        started.append(g)
        g.start()
        return g
    yield make
    for g in started:
        g.stop()


def test_failed_logins_lock_out_the_clients_own_address_not_the_balancers(
        fake, gateway: Callable[..., Gateway]):  # noqa: F811
    g = gateway(limited_config(fake), workers=1)
    for n in range(4):  # guesses under several user names from one client address
        assert status(g.port, "127.0.0.2", user=f"guess{n}", token="wrong") == 407
    # That address is locked out for user names that never logged in from it, even with the
    # right token ...
    assert status(g.port, "127.0.0.2") == 407
    # ... while a client at another address logs in: the worker told them apart although
    # both came through HAProxy (127.0.0.1).
    assert status(g.port, "127.0.0.3") == 200
    log = g.worker_log(1)
    assert "proxy authentication failed for api.openai.com:443 from 127.0.0.2 as" in log, log
    assert "127.0.0.2 failed proxy authentication 3 times across user names" in log, log
    assert "from 127.0.0.1 " not in log, log


def test_the_recorded_client_address_is_the_clients(fake, saving_gateway):
    g = saving_gateway(provider_config(fake.url), workers=1)
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--interface", "127.0.0.2", "--proxy",
         f"http://127.0.0.1:{g.port}", "--proxy-user", f"dev:{ALICE_TOKEN}", "--cacert", g.ca,
         "https://api.openai.com/v1/models"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert g.stop() == 0  # the worker writes its flows out as it stops
    flows = [f for f in saved_flows(g.flows_path) if f.request.path == "/v1/models"]
    assert flows and {f.client_conn.peername[0] for f in flows} == {"127.0.0.2"}


def test_a_forged_header_does_not_choose_the_address(fake, gateway):  # noqa: F811
    g = gateway(limited_config(fake), workers=1)
    worker, _ = g.worker(1)
    # Straight to the worker from 127.0.0.2, which is no balancer: its header closes the
    # connection ...
    for header in (v1("10.9.9.9"), v2("10.9.9.9")):
        assert status(worker, "127.0.0.2", token="wrong", before=header) is None
    # ... and through HAProxy the client's own header comes after HAProxy's, where it is a
    # bad request line.
    assert status(g.port, "127.0.0.2", token="wrong", before=v1("10.9.9.9")) == 400
    # Failures it causes count for its own address, never for the one it named.
    for n in range(4):
        status(worker, "127.0.0.2", user=f"guess{n}", token="wrong")
    assert status(g.port, "127.0.0.2") == 407
    assert status(g.port, "127.0.0.3") == 200
    log = g.worker_log(1)
    assert "from 127.0.0.2:" in log and "is not a balancer in bridge_proxy_protocol" in log, log
    assert "from 10.9.9.9" not in log and "[10.9.9.9:" not in log, log  # never its address
    # A local client without a header straight to the worker keeps working, as itself.
    assert Gateway.health(worker)["ready"] is True


def test_haproxy_health_checks_keep_the_workers_in_rotation(fake, gateway):  # noqa: F811
    g = gateway(provider_config(fake.url), workers=2)
    # Checks once a second, each after a PROXY header (check-send-proxy): HTTP 200 from both,
    # none failed.
    assert eventually(lambda: {name: row["check_status"] for name, row
                               in check_stats(g).items()} == {"w1": "L7OK", "w2": "L7OK"})
    checks = check_stats(g)
    assert {row["chkfail"] for row in checks.values()} == {"0"}, checks
    assert g.haproxy_servers() == {"w1": "2", "w2": "2"}
    logs = g.worker_log(1) + g.worker_log(2)
    assert "closing the connection" not in logs, logs
    assert logs.count("reading the PROXY protocol header on connections from 127.0.0.1/32") == 2
    for port in (g.worker(1)[0], g.worker(2)[0]):  # local clients without a header: as ever
        assert Gateway.healthy(port)


def check_stats(g: Gateway) -> dict[str, dict[str, str]]:
    lines = g._control(b"show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {r["svname"]: r for r in rows if r.get("pxname") == "workers"
            and r["svname"].startswith("w")}


# -- one worker, the test as the balancer ------------------------------------------------------

def test_the_connection_cap_counts_the_address_the_header_names(fake, make_bridge):
    config = limited_config(fake, "[auth]\nmax_connections_per_address = 2\n")
    bridge: BridgeProcess = make_bridge(config, args=["--set", "bridge_proxy_protocol=127.0.0.1"])
    held = [connect(bridge.port, "127.0.0.1", before=header)
            for header in (v2("10.0.0.5", 1), v1("10.0.0.5", 2), v2("10.0.0.6", 3))]
    try:
        assert [head.split(b" ", 2)[1] for _, head in held] == [b"200"] * 3
        # A third connection for 10.0.0.5 is over its cap; the balancer's own address
        # (three open) is not capped, and 10.0.0.6 has room.
        assert status(bridge.port, "127.0.0.1", before=v2("10.0.0.5", 4)) is None
        bridge.wait_for_log(r"refused a connection from 10\.0\.0\.5: 2 connections")
        assert status(bridge.port, "127.0.0.1", before=v1("10.0.0.6", 5)) == 200
        # A balancer-address connection without a header is a local client, as itself.
        assert status(bridge.port, "127.0.0.1") == 200
        # A malformed header from the balancer closes the connection, with a line saying so.
        assert status(bridge.port, "127.0.0.1", before=b"PROXY TCP4 nope\r\n") is None
        bridge.wait_for_log(r"closing the connection from 127\.0\.0\.1:\d+: PROXY protocol v1")
    finally:
        for sock, _ in held:
            sock.close()
    assert "refused a connection from 127.0.0.1" not in bridge.log()
