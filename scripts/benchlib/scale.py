"""`scripts/bench --workers 1,2`: the bridge as `aibridge serve --workers N` behind HAProxy
with its state in Redis, for each N: small requests/s and SSE streams/s through the balancer,
the workers' CPU per request, and the scaling from the first worker count to each other.

Everything runs on this machine: the client, the fake provider, Redis and HAProxy take cores
from the workers, so on a small machine the scaling figure is a floor, not what N machines do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bench

from benchlib import payloads
from benchlib.client import Endpoint, client_context
from benchlib.procs import BenchError, FakeProc, cpu_seconds, machine_busy_seconds

ROOT = Path(__file__).resolve().parents[2]
AIBRIDGE = Path(sys.executable).with_name("aibridge")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench --workers",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", required=True,
                   help="comma-separated worker counts, e.g. 1,2")
    p.add_argument("--concurrency", type=int, default=16,
                   help="concurrent keep-alive connections (default 16)")
    p.add_argument("--requests", type=int, default=2000,
                   help="small requests per round (default 2000)")
    p.add_argument("--streams", type=int, default=60, help="SSE streams per round (default 60)")
    p.add_argument("--events", type=int, default=100, help="events per stream (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per measurement (default 3)")
    p.add_argument("--no-state", action="store_true",
                   help="no [state] url (each worker alone): to see what Redis costs")
    args = p.parse_args(argv)
    try:
        args.counts = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        p.error("--workers: comma-separated integers")
    if not args.counts or any(n < 1 or n > 64 for n in args.counts):
        p.error("--workers: values between 1 and 64")
    return args


class Redis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        done = subprocess.run([str(ROOT / "scripts" / "redis"), "start", str(directory)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise BenchError(f"scripts/redis start failed: {done.stderr}")
        self.url = done.stdout.strip()

    def stop(self) -> None:
        subprocess.run([str(ROOT / "scripts" / "redis"), "stop", str(self.directory)],
                       capture_output=True, timeout=60)


@dataclass
class Serve:
    """`aibridge serve`, seen by bench.one_run as a `Target.mitm` (pid, alive, log)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int
    workers: list[int]  # pids

    @property
    def pid(self) -> int:  # one_run's CPU figure: the first worker; ours sums them all
        return self.workers[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.workers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_serve(tmp: Path, n: int, fake: FakeProc, state_url: str | None) -> Serve:
    work = tmp / f"serve-{n}"
    work.mkdir()
    config = work / "aibridge.toml"
    state = f'[state]\nurl = "{state_url}"\n' if state_url else ""
    config.write_text(f'[providers.openai]\nupstream = "https://localhost:{fake.port}"\n'
                      f'{state}')
    port = bench_free_port()
    log_path = work / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(AIBRIDGE), "serve", "--workers", str(n), "--listen-host", "127.0.0.1",
             "--listen-port", str(port), "--log-dir", str(work / "logs"), "--",
             "-s", str(ROOT / "addon" / "bridge.py"), *bench.QUIET,
             "--set", f"confdir={work / 'certs'}",
             "--set", f"ssl_verify_upstream_trusted_ca={fake.ca}",
             "--set", f"bridge_config={config}"],
            stdout=log, stderr=subprocess.STDOUT, env=bench.clean_env(), cwd=work)
    deadline = time.monotonic() + 120
    while "behind HAProxy" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"aibridge serve did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    pids = [int(p) for p in re.findall(r"worker \d+ on 127\.0\.0\.1:\d+ \(pid (\d+)\)",
                                       log_path.read_text())]
    serve = Serve(proc, log_path, port, pids)
    serve.ca = str(work / "certs" / "mitmproxy-ca-cert.pem")  # type: ignore[attr-defined]
    return serve


def bench_free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(serve: Serve, fake: FakeProc, args: argparse.Namespace) -> dict:
    endpoint = Endpoint(443, "api.openai.com", client_context(serve.ca),  # type: ignore
                        serve.port, "api.openai.com:443")
    target = bench.Target("bridge", endpoint, "api.openai.com", serve)  # type: ignore[arg-type]
    await bench.one_request(target, payloads.small_body(), False, 0)
    out: dict = {}
    for workload, n, body in (("small", args.requests, payloads.small_body()),
                              ("sse", args.streams, payloads.sse_body())):
        rounds = []
        for _ in range(args.rounds):
            cpu0, busy0 = serve.cpu(), machine_busy_seconds()
            run = await bench.one_run(target, fake, workload, args.concurrency, n,
                                      2 if workload == "small" else 1, body, args.events)
            run["workers_cpu_s"] = serve.cpu() - cpu0
            run["others_cpu_s"] = machine_busy_seconds() - busy0 - run["workers_cpu_s"]
            rounds.append(run)
        rates = sorted(r["rps"] for r in rounds)
        total = sum(r["n"] for r in rounds)
        out[workload] = {"per_s": rates[len(rates) // 2],
                         "cpu_ms_per_req": 1e3 * sum(r["workers_cpu_s"] for r in rounds) / total,
                         # The client, the fake provider, HAProxy, Redis and anything else.
                         "others_ms_per_req": 1e3 * sum(r["others_cpu_s"] for r in rounds) / total,
                         "p50_ms": bench.dist_ms([x for r in rounds
                                                  for x in r["latencies_ns"]])["p50"]}
    return out


async def run(args: argparse.Namespace, tmp: Path) -> int:
    fake = FakeProc(ROOT, tmp / "fake.log")
    redis = None if args.no_state else Redis(tmp / "redis")
    results: dict[int, dict] = {}
    try:
        print(f"AI Bridge scale-out benchmark · {os.cpu_count()} CPUs · aibridge serve behind "
              f"HAProxy · state: {'none' if redis is None else 'Redis'} · concurrency "
              f"{args.concurrency} · {args.rounds} rounds · small {args.requests} requests, "
              f"SSE {args.streams} streams of {args.events} events", flush=True)
        print("  workers  small req/s  per worker  CPU/req   p50 ms  │  SSE streams/s  "
              "events/s  per worker", flush=True)
        for n in args.counts:
            serve = start_serve(tmp, n, fake, redis.url if redis else None)
            try:
                r = results[n] = await measure(serve, fake, args)
            finally:
                serve.stop()
            small, sse = r["small"], r["sse"]
            print(f"  {n:>7}  {small['per_s']:>11.0f}  {small['per_s'] / n:>10.0f}  "
                  f"{small['cpu_ms_per_req']:>6.3f} ms {small['p50_ms']:>7.2f}  │  "
                  f"{sse['per_s']:>13.1f}  {sse['per_s'] * args.events:>8.0f}  "
                  f"{sse['per_s'] / n:>10.1f}", flush=True)
        first = args.counts[0]
        for n in args.counts[1:]:
            small = results[n]["small"]["per_s"] / results[first]["small"]["per_s"]
            sse = results[n]["sse"]["per_s"] / results[first]["sse"]["per_s"]
            print(f"  {first} -> {n} workers: small x{small:.2f}, SSE x{sse:.2f} (the client, "
                  f"fake provider, HAProxy and Redis share these {os.cpu_count()} CPUs)")
        for n in args.counts:
            print("  " + ceiling(n, results[n]["small"], results[first]["small"]["per_s"]))
        return 0
    finally:
        if redis is not None:
            redis.stop()
        fake.stop()


def ceiling(n: int, small: dict, first_per_s: float) -> str:
    """How close `n` workers came to what this machine can serve at all: each request took
    w CPU in the workers and o everywhere else (client, fake provider, HAProxy, Redis), so
    with every core busy the rate is at most cores / (w + o). (No n / w bound: a worker uses
    more than one core, its recorder writes on a thread of its own.)"""
    cores = os.cpu_count() or 1
    w, o = small["cpu_ms_per_req"] / 1e3, max(0.0, small["others_ms_per_req"] / 1e3)
    most = cores / (w + o)
    busy = small["per_s"] * (w + o) / cores
    return (f"{n} worker(s), small: {1e3 * w:.3f} ms CPU per request in the workers + "
            f"{1e3 * o:.3f} ms in the rest; cores busy {100 * busy:.0f} %; with all {cores} "
            f"busy at most {most:.0f} req/s (x{most / first_per_s:.2f} of {first_per_s:.0f})")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="aibridge-bench-scale-"))
    try:
        return asyncio.run(run(args, tmp))
    except BenchError as e:
        print(f"\nbench: ERROR: {e}", file=sys.stderr)
        return 1
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
