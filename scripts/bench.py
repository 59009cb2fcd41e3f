"""Benchmark: the same client and fake upstream, directly, via bare mitmdump, via the bridge.

Run as `scripts/bench` (uses the project's .venv). See --help, and the header it prints for what
is measured and how. Exit status: 0 when the run completed (targets are informational), 1 on
errors (a non-200 response, a wrong SSE event count, a process that fails to start, a bridge
that does not swap the key), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]  # benchlib; the tests' fake and helpers

from benchlib import payloads  # noqa: E402
from benchlib.client import (  # noqa: E402
    Conn,
    Endpoint,
    build_request,
    client_context,
    run_load,
    warm_up,
)
from benchlib.procs import (  # noqa: E402
    BenchError,
    FakeProc,
    cpu_seconds,
    loop_sleeps,
    thread_cpu_seconds,
)
from mitmlaunch import LaunchError, Mitmdump  # noqa: E402

CENTRAL_KEY = "sk-bench-central-0123456789abcdef"
ROUTE = "/v1/chat/completions"
PATHS = ("direct", "bare", "bridge")
WORKLOADS = ("small", "large", "sse")
DEFAULT_REQUESTS = {"small": 300, "large": 100, "sse": 30}
QUICK_REQUESTS = {"small": 150, "large": 50, "sse": 10}
DEFAULT_WARMUP = {"small": 5, "large": 3, "sse": 1}
RUN_TIMEOUT = 120.0  # seconds for one (workload, concurrency, path) run, warm-up included

# Targets (bridge vs bare streaming mitmdump); informational.
TARGET_RPS_RATIO = 0.90
TARGET_ADDED_P50_MS = 0.3
TARGET_FIRST_EVENT_MS = 1.0
# No per-flow output from either mitmdump. Not `-q`: that also hides the "listening at" line
# the launcher reads the port from.
QUIET = ("--set", "flow_detail=0")


# -- arguments -----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Compare direct / bare mitmdump / AI Bridge on small, 60 KB and SSE "
                    "chat requests (loopback only; ports chosen at run time). "
                    "`scripts/bench admission` measures what budgets and rate limits add per "
                    "request, in-process; `scripts/bench secrets` what secret scanning adds; "
                    "`scripts/bench hooks` the addon chain's own CPU per request, in-process.")
    p.add_argument("--requests", default="",
                   help="timed requests per round and concurrency, e.g. 'small=300,large=100,"
                        f"sse=30' (any subset; default {_fmt_counts(DEFAULT_REQUESTS)})")
    p.add_argument("--concurrency", default="1,8",
                   help="comma-separated concurrent keep-alive connections (default 1,8)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per (workload, concurrency); the path order rotates each "
                        "round (default 5, --quick 2)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="subset of small,large,sse (default all)")
    p.add_argument("--events", type=int, default=500, help="SSE events per stream (default 500)")
    p.add_argument("--large-kb", type=int, default=60,
                   help="size of the large conversation body in KiB (default 60)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up requests per connection before timing (default small 5, "
                        "large 3, sse 1)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run (~10 s): 2 rounds, {_fmt_counts(QUICK_REQUESTS)}")
    p.add_argument("--json", dest="json_path", default=None,
                   help="results file (default bench-results/bench-<timestamp>.json)")
    p.add_argument("--no-json", action="store_true", help="do not write the JSON results")
    p.add_argument("--bridge-args", default="",
                   help="extra mitmdump arguments for the bridge only (shell-quoted string), "
                        "for experiments, e.g. \"--set bridge_access_log=off\"")
    p.add_argument("--bare-args", default="",
                   help="extra mitmdump arguments for bare mitmdump only (shell-quoted string)")
    p.add_argument("--bare-mitm-fixes", action="store_true",
                   help="give bare mitmdump the bridge's two fixes to mitmproxy's own code (its "
                        "message type check and its hook dispatch: addon/aibridge/addons/"
                        "mitm_fixes.py), to compare like for like")
    p.add_argument("--bare-buffered", action="store_true",
                   help="bare mitmdump with its default body handling (whole messages, as the "
                        "bridge must hold small ones) instead of stream_large_bodies=1; for "
                        "small and large requests only (it would hold a whole SSE stream)")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temporary directory (mitmdump logs, confdirs)")
    p.add_argument("--bridge-toml", default="",
                   help="TOML appended to the bridge's config file, for experiments, e.g. "
                        "\"[recording]\\nenabled = false\"")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="sample both mitmdumps with py-spy for the whole run (idle samples "
                        "dropped); collapsed stacks go to FILE.bare and FILE.bridge")
    p.add_argument("--profile-rate", type=int, default=250, metavar="HZ",
                   help="py-spy samples per second for --profile (default 250)")
    args = p.parse_args(argv)

    counts = dict(QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    for item in filter(None, (s.strip() for s in args.requests.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in counts or not value.isdigit() or int(value) < 1:
            p.error(f"--requests: bad item {item!r} (want small|large|sse=N, N ≥ 1)")
        counts[name] = int(value)
    args.counts = counts
    try:
        args.concs = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error("--concurrency: comma-separated integers")
    if not args.concs or any(c < 1 or c > 256 for c in args.concs):
        p.error("--concurrency: values between 1 and 256")
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workload_list or any(w not in WORKLOADS for w in args.workload_list):
        p.error(f"--workloads: subset of {','.join(WORKLOADS)}")
    if args.bare_buffered and "sse" in args.workload_list:
        p.error("--bare-buffered: with --workloads small, large or both (bare mitmdump would "
                "hold each SSE stream whole)")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if not 1 <= args.rounds <= 100:
        p.error("--rounds: 1..100")
    if args.events < 4 or args.events > 100_000:
        p.error("--events: 4..100000")
    if args.large_kb < 1 or args.large_kb > 16 * 1024:
        p.error("--large-kb: 1..16384")
    args.warm = ({w: max(0, args.warmup) for w in WORKLOADS} if args.warmup is not None
                 else dict(DEFAULT_WARMUP))
    if args.quick and args.warmup is None:
        args.warm = {"small": 2, "large": 2, "sse": 1}
    return args


def _fmt_counts(counts: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in counts.items())


# -- statistics ----------------------------------------------------------------------------------


def pct(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def dist_ms(values_ns: list[int]) -> dict[str, float]:
    v = sorted(x / 1e6 for x in values_ns)
    return {"p50": pct(v, 50), "p90": pct(v, 90), "p95": pct(v, 95), "p99": pct(v, 99),
            "max": v[-1] if v else float("nan"),
            "mean": sum(v) / len(v) if v else float("nan")}


def median(values: list[float]) -> float:
    return pct(sorted(values), 50)


# -- the setup -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    endpoint: Endpoint
    host_header: str
    mitm: Mitmdump | None  # None for direct

    @property
    def pid(self) -> int | None:
        return self.mitm.pid if self.mitm else None


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIBRIDGE_") and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env["AIBRIDGE_OPENAI_KEYS"] = CENTRAL_KEY
    return env


def start_mitmdumps(tmp: Path, fake: FakeProc, extra_bridge_args: str,
                    extra_toml: str = "", extra_bare_args: str = "",
                    bare_streams: bool = True) -> tuple[Mitmdump, Mitmdump]:
    env = clean_env()
    # A fresh recording database per run: a shared one grows run by run, and what a write
    # costs depends on the database's size.
    env["AIBRIDGE_DATA_DIR"] = str(tmp / "bridge-data")
    bare = Mitmdump(
        tmp / "bare.log", name="bare mitmdump", confdir=tmp / "bare-confdir", env=env, cwd=tmp,
        args=[*QUIET, "--set", f"ssl_verify_upstream_trusted_ca={fake.ca}",
              "--set", "connection_strategy=lazy",
              *(["--set", "stream_large_bodies=1"] if bare_streams else []),
              *shlex.split(extra_bare_args)])
    config = tmp / "aibridge.toml"
    config.write_text(f'[providers.openai]\nupstream = "https://localhost:{fake.port}"\n'
                      + extra_toml.replace("\\n", "\n") + "\n")
    bridge = Mitmdump(
        tmp / "bridge.log", name="bridge mitmdump", script=ROOT / "addon" / "bridge.py",
        confdir=tmp / "bridge-confdir", env=env, cwd=tmp,
        args=[*QUIET, "--set", f"ssl_verify_upstream_trusted_ca={fake.ca}",
              "--set", f"bridge_config={config}", *shlex.split(extra_bridge_args)])
    return bare, bridge


def make_paths(fake: FakeProc, bare: Mitmdump, bridge: Mitmdump) -> dict[str, Target]:
    local = f"localhost:{fake.port}"
    return {
        "direct": Target("direct", Endpoint(fake.port, "localhost", client_context(fake.ca)),
                        local, None),
        "bare": Target("bare", Endpoint(fake.port, "localhost", client_context(bare.ca),
                                       bare.port, local), local, bare),
        "bridge": Target("bridge", Endpoint(443, "api.openai.com", client_context(bridge.ca),
                                           bridge.port, "api.openai.com:443"),
                        "api.openai.com", bridge),
    }


# -- verification --------------------------------------------------------------------------------


async def one_request(path: Target, body: bytes, sse: bool, expect_events: int) -> int:
    conn = await Conn.open(path.endpoint)
    try:
        req = build_request(path.host_header, ROUTE, body, sse=sse)
        status, _t0, _tf, events, resp = await asyncio.wait_for(conn.exchange(req, sse), 30)
    finally:
        await conn.close()
    if status != 200:
        raise BenchError(f"verify {path.name}: HTTP {status}: {resp[:300]!r}")
    if sse and events != expect_events:
        raise BenchError(f"verify {path.name}: SSE got {events} events, expected {expect_events}")
    return events


def _hdr(seen: dict, name: str) -> str | None:
    return next((v for k, v in seen["headers"] if k.lower() == name.lower()), None)


async def verify(paths: dict[str, Target], fake: FakeProc, events: int) -> list[str]:
    """One request per path with recording on; fail loudly unless only the bridge swapped
    the key and added the actor headers, and its SSE stream arrived whole."""
    notes = []
    fake.call("record", on=True)
    try:
        small = payloads.small_body()
        for name in ("direct", "bare"):
            await one_request(paths[name], small, False, 0)
            seen = fake.call("last")
            auth = _hdr(seen, "authorization")
            if auth != "Bearer sk-user-placeholder" or _hdr(seen, "x-ai-bridge-actor-id"):
                raise BenchError(f"verify {name}: unexpected upstream headers {seen['headers']}")
        await one_request(paths["bridge"], small, False, 0)
        seen = fake.call("last")
        auth = _hdr(seen, "authorization")
        actor = _hdr(seen, "x-ai-bridge-actor-id")
        if auth != f"Bearer {CENTRAL_KEY}" or not actor:
            raise BenchError("verify bridge: the fake did not see the central key and an "
                             f"X-AI-Bridge-Actor-ID header; it saw {seen['headers']}")
        notes.append(f"bridge verified: fake saw Authorization: Bearer {CENTRAL_KEY[:12]}… "
                     f"(central key, client sent sk-user-placeholder), X-AI-Bridge-Actor-ID: "
                     f"{actor}")
        fake.call("enqueue_sse", n=1, events=events, path=ROUTE)
        got = await one_request(paths["bridge"], payloads.sse_body(), True, events)
        seen = fake.call("last")
        if (_hdr(seen, "authorization") != f"Bearer {CENTRAL_KEY}"
                or "stream" not in seen["json_keys"] or seen["path"] != ROUTE):
            raise BenchError(f"verify bridge SSE: unexpected upstream request {seen}")
        notes.append(f"bridge SSE verified: {ROUTE} stream=true, {got} events relayed")
    finally:
        fake.call("record", on=False)
        fake.call("clear")
    return notes


# -- runs ----------------------------------------------------------------------------------------


async def one_run(path: Target, fake: FakeProc, workload: str, conc: int, n: int, warm: int,
                  body: bytes, events: int) -> dict:
    sse = workload == "sse"
    request = build_request(path.host_header, ROUTE, body, sse=sse)
    expect = events if sse else 0
    if sse:
        # The fake's reply queue is global and FIFO; every scripted reply is identical, so it
        # does not matter which connection takes which one. Exactly one per request.
        fake.call("enqueue_sse", n=n + conc * warm, events=events, path=ROUTE)
    conns: list[Conn] = []
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            conns = list(await asyncio.gather(*(Conn.open(path.endpoint) for _ in range(conc))))
            if warm:
                await warm_up(conns, request, warm, sse, expect)
            gc.collect()
            gc.disable()
            try:
                pid = path.pid
                threads0 = thread_cpu_seconds(pid) if pid else {}
                sleeps0 = loop_sleeps(pid) if pid else 0
                cpu0 = cpu_seconds(pid) if pid else 0.0
                fake0 = cpu_seconds(fake.pid)
                client0 = time.process_time()
                res = await run_load(conns, request, n, sse, expect)
                client1 = time.process_time()
                fake1 = cpu_seconds(fake.pid)
                cpu1 = cpu_seconds(pid) if pid else 0.0
                threads1 = thread_cpu_seconds(pid) if pid else {}
                sleeps1 = loop_sleeps(pid) if pid else 0
            finally:
                gc.enable()
    except TimeoutError:
        raise BenchError(f"{path.name} {workload} c={conc}: run exceeded {RUN_TIMEOUT}s") from None
    except Exception as e:  # BenchError, connection errors, truncated responses
        raise BenchError(f"{path.name} {workload} c={conc}: {type(e).__name__}: {e}") from None
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        if sse:
            fake.call("clear")
    if path.mitm is not None and not path.mitm.alive():
        raise BenchError(f"{path.name}: mitmdump died:\n{path.mitm.log()[-3000:]}")
    return {
        "n": n, "wall_s": res.wall_s, "rps": n / res.wall_s,
        "latencies_ns": res.latencies_ns, "first_event_ns": res.first_event_ns,
        "proxy_cpu_s": cpu1 - cpu0 if pid else None, "fake_cpu_s": fake1 - fake0,
        "client_cpu_s": client1 - client0,
        # The main thread (tid = pid) runs the event loop; the others (the recorder's writer,
        # exporters) share its GIL.
        "loop_cpu_s": threads1.get(pid, 0.0) - threads0.get(pid, 0.0) if pid else None,
        "loop_sleeps": sleeps1 - sleeps0 if pid else None,
    }


def aggregate(rounds: list[dict], sse: bool, events: int) -> dict:
    lat = [x for r in rounds for x in r["latencies_ns"]]
    n = sum(r["n"] for r in rounds)
    out = {
        "rounds": len(rounds), "requests": n,
        "rps_median": median([r["rps"] for r in rounds]),
        "rps_rounds": [round(r["rps"], 1) for r in rounds],
        "latency_ms": dist_ms(lat),
        "fake_cpu_ms_per_req": 1e3 * sum(r["fake_cpu_s"] for r in rounds) / n,
        "client_cpu_ms_per_req": 1e3 * sum(r["client_cpu_s"] for r in rounds) / n,
        "proxy_cpu_ms_per_req": None,
    }
    if rounds[0]["proxy_cpu_s"] is not None:
        cpu = sum(r["proxy_cpu_s"] for r in rounds)
        out["proxy_cpu_ms_per_req"] = 1e3 * cpu / n
        out["proxy_cpu_ms_per_req_rounds"] = [round(1e3 * r["proxy_cpu_s"] / r["n"], 3)
                                              for r in rounds]
        loop = sum(r["loop_cpu_s"] for r in rounds)
        out["loop_cpu_ms_per_req"] = 1e3 * loop / n
        out["other_threads_cpu_ms_per_req"] = 1e3 * (cpu - loop) / n
        out["loop_sleeps_per_req"] = sum(r["loop_sleeps"] for r in rounds) / n
        if sse:
            out["proxy_cpu_us_per_event"] = 1e6 * cpu / (n * events)
    if sse:
        out["first_event_ms"] = dist_ms([x for r in rounds for x in r["first_event_ns"]])
        out["events_per_s_median"] = out["rps_median"] * events
    return out


# -- output --------------------------------------------------------------------------------------


def f(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report_block(title: str, stats: dict[str, dict], sse: bool, events: int) -> tuple[
        list[str], dict]:
    lines = [title]
    if sse:
        lines.append(f"  {'path':<7}{'streams/s':>10}{'events/s':>10}{'1st ev p50':>11}"
                     f"{'1st ev p95':>11}{'total p50':>10}{'total p95':>10}{'proxy CPU/req':>14}"
                     f"{'µs/event':>9}{'fake CPU':>9}")
    else:
        lines.append(f"  {'path':<7}{'req/s':>9}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
                     f"{'proxy CPU/req':>14}{'fake CPU/req':>13}{'client CPU':>11}")
    for name in PATHS:
        s = stats.get(name)
        if s is None:
            continue
        lat = s["latency_ms"]
        cpu = s["proxy_cpu_ms_per_req"]
        cpu_s = "-" if cpu is None else f"{cpu:.3f} ms"
        if sse:
            fe = s["first_event_ms"]
            lines.append(
                f"  {name:<7}{s['rps_median']:>10.1f}{s['events_per_s_median']:>10.0f}"
                f"{fe['p50']:>11.2f}{fe['p95']:>11.2f}{lat['p50']:>10.2f}{lat['p95']:>10.2f}"
                f"{cpu_s:>14}{f(s.get('proxy_cpu_us_per_event'), 1):>9}"
                f"{s['fake_cpu_ms_per_req']:>6.2f} ms")
        else:
            lines.append(
                f"  {name:<7}{s['rps_median']:>9.0f}{lat['p50']:>8.2f}{lat['p95']:>8.2f}"
                f"{lat['p99']:>8.2f}{cpu_s:>14}{s['fake_cpu_ms_per_req']:>10.3f} ms"
                f"{s['client_cpu_ms_per_req']:>8.3f} ms")
    verdict: dict = {}
    if "bare" in stats and "bridge" in stats:
        bare, br = stats["bare"], stats["bridge"]
        ratio = br["rps_median"] / bare["rps_median"]
        added = br["latency_ms"]["p50"] - bare["latency_ms"]["p50"]
        dcpu = br["proxy_cpu_ms_per_req"] - bare["proxy_cpu_ms_per_req"]
        verdict = {"throughput_ratio": ratio, "added_p50_ms": added, "added_cpu_ms_per_req": dcpu,
                   "throughput_pass": ratio >= TARGET_RPS_RATIO}
        parts = [f"throughput {100 * ratio:.1f} % [{mark(ratio >= TARGET_RPS_RATIO)} ≥90 %]"]
        if sse:
            dfe = br["first_event_ms"]["p50"] - bare["first_event_ms"]["p50"]
            verdict.update(first_event_delta_ms=dfe, first_event_pass=dfe <= TARGET_FIRST_EVENT_MS)
            parts.append(f"1st event {dfe:+.2f} ms [{mark(dfe <= TARGET_FIRST_EVENT_MS)} ≤1 ms]")
            parts.append(f"total p50 {added:+.2f} ms (info)")
        else:
            verdict["added_p50_pass"] = added <= TARGET_ADDED_P50_MS
            parts.append(f"p50 {added:+.2f} ms [{mark(added <= TARGET_ADDED_P50_MS)} ≤0.3 ms]")
        # A short run can stay under one 10 ms tick of bare mitmdump's CPU: no ratio then.
        rel = (f"{100 * dcpu / bare['proxy_cpu_ms_per_req']:+.1f} %"
               if bare["proxy_cpu_ms_per_req"] else "bare under one tick")
        parts.append(f"CPU/req {1e3 * dcpu:+.0f} µs ({rel})")
        lines.append("  bridge/bare: " + " · ".join(parts))
        lines.append(f"  bridge CPU/req by thread: event loop "
                     f"{1e3 * br['loop_cpu_ms_per_req']:.0f} µs (bare "
                     f"{1e3 * bare['loop_cpu_ms_per_req']:.0f}) · other threads "
                     f"{1e3 * br['other_threads_cpu_ms_per_req']:.0f} µs (bare "
                     f"{1e3 * bare['other_threads_cpu_ms_per_req']:.0f}) · event-loop sleeps/req "
                     f"{br['loop_sleeps_per_req']:.2f} (bare {bare['loop_sleeps_per_req']:.2f})")
    return lines, verdict


def header(args: argparse.Namespace, sizes: dict[str, int], notes: list[str],
           versions: str) -> list[str]:
    c = args.counts
    warm = "/".join(f"{k} {v}" for k, v in args.warm.items())
    return [
        f"AI Bridge benchmark — {datetime.now().isoformat(timespec='seconds')} · "
        f"{os.cpu_count()} CPUs · load {os.getloadavg()[0]:.2f} · {versions}",
        "direct: client → fake (TLS) · bare: mitmdump flow_detail=0 lazy "
        + ("(whole messages)" if args.bare_buffered else "stream_large_bodies=1")
        + (" with the bridge's fixes to mitmproxy" if args.bare_mitm_fixes else "")
        + ", CONNECT localhost:<fake> · bridge: mitmdump flow_detail=0 -s addon/bridge.py "
        "(which fixes mitmproxy's type check and hook dispatch in its process; "
        "--bare-mitm-fixes: like for like), CONNECT api.openai.com:443",
        "Client: asyncio, HTTP/1.1 keep-alive, 1 TLS handshake/conn, warm-up "
        f"{warm}/conn, GC off while timing; fake provider in its own process; all on loopback.",
        f"POST {ROUTE}: small {sizes['small']} B body · large {sizes['large']} B "
        f"conversation · sse stream:true → {args.events} chat.completion.chunk events "
        f"(~{sizes['event']} B each, usage + [DONE]).",
        "SSE: one scripted reply per request is enqueued in the fake before each run (identical, "
        "so its global FIFO queue is safe at any",
        "  concurrency); the route is the bridged one, so every event passes the addon's "
        "StreamTap; first event = first complete data: event.",
        f"Per round: {_fmt_counts(c)}; {args.rounds} rounds, path order rotating; concurrency "
        f"{args.concs}. req/s = median of rounds; percentiles pooled;",
        "  CPU = utime+stime delta of the process from /proc/<pid>/stat over the timed part "
        "(10 ms ticks) / requests.",
        *notes,
    ]


# -- main ----------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, tmp: Path) -> int:
    started = time.monotonic()
    fake = FakeProc(ROOT, tmp / "fake.log")
    bare = bridge = None
    profilers: list[subprocess.Popen | None] = []
    try:
        if args.bare_mitm_fixes:
            args.bare_args += f" -s {shlex.quote(str(ROOT / 'scripts/benchlib/mitm_fixes.py'))}"
        bare, bridge = start_mitmdumps(tmp, fake, args.bridge_args, args.bridge_toml,
                                       args.bare_args, bare_streams=not args.bare_buffered)
        bare.start()
        bridge.start()
        profilers = [start_profiler(m, f"{args.profile}.{m.name.split()[0]}", args.profile,
                                    args.profile_rate) for m in (bare, bridge)]
        paths = make_paths(fake, bare, bridge)
        notes = await verify(paths, fake, args.events)
        notes += [f"{who} extra arguments: {extra}" for who, extra in
                  (("bare", args.bare_args), ("bridge", args.bridge_args)) if extra]
        bodies = {"small": payloads.small_body(), "large": payloads.large_body(
            args.large_kb * 1024), "sse": payloads.sse_body()}
        sizes = {"small": len(bodies["small"]), "large": len(bodies["large"]),
                 "event": len(payloads.sse_events(args.events)[5])}
        versions = mitm_versions()
        out = header(args, sizes, notes, versions)
        print("\n".join(out), flush=True)

        results: dict = {}
        verdicts: list[tuple[str, dict]] = []
        titles = {"small": f"small chat ({sizes['small']} B body, JSON reply)",
                  "large": f"{sizes['large'] / 1024:.0f} KB conversation body, JSON reply",
                  "sse": f"SSE stream, {args.events} events"}
        for wl in args.workload_list:
            for conc in args.concs:
                n = args.counts[wl]
                per_path: dict[str, list[dict]] = {p: [] for p in PATHS}
                for r in range(args.rounds):
                    order = PATHS[r % 3:] + PATHS[:r % 3]
                    for name in order:
                        per_path[name].append(await one_run(
                            paths[name], fake, wl, conc, n, args.warm[wl], bodies[wl],
                            args.events))
                sse = wl == "sse"
                stats = {p: aggregate(rs, sse, args.events) for p, rs in per_path.items()}
                title = (f"\n== {titles[wl]} — concurrency {conc}, {args.rounds} rounds of {n} "
                         f"{'streams' if sse else 'requests'}")
                lines, verdict = report_block(title, stats, sse, args.events)
                print("\n".join(lines), flush=True)
                out += lines
                results[f"{wl}/c{conc}"] = {"workload": wl, "concurrency": conc,
                                            "paths": stats, "bridge_vs_bare": verdict}
                verdicts.append((f"{wl} c={conc}", verdict))

        summary = summarize(verdicts, results)
        elapsed = time.monotonic() - started
        summary.append(f"\nelapsed {elapsed:.0f} s · load {os.getloadavg()[0]:.2f}")
        print("\n".join(summary), flush=True)
        out += summary
        if not args.no_json:
            write_json(args, results, sizes, notes, versions, elapsed)
        return 0
    except LaunchError as e:  # its message quotes the log of the one that failed
        raise BenchError(str(e)) from None
    except BenchError as e:
        tails = [f"--- {m.name} log (tail) ---\n{m.log()[-2000:]}"
                 for m in (bare, bridge) if m is not None and m.log().strip()]
        raise BenchError("\n".join([str(e), *tails])) from None
    finally:
        for m, profiler in zip((bare, bridge), profilers, strict=False):
            if profiler is not None and m is not None:
                stop_profiler(profiler, f"{args.profile}.{m.name.split()[0]}")
        for m in (bridge, bare):
            if m is not None:
                m.stop()
        fake.stop()


def start_profiler(mitm: Mitmdump, out: str, wanted: str | None,
                   rate: int = 250) -> subprocess.Popen | None:
    if wanted is None:
        return None
    spy = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy (in the dev lock: scripts/setup installs it)")
    return subprocess.Popen([spy, "record", "-p", str(mitm.pid), "-r", str(rate), "-f", "raw",
                             "-o", out, "--nonblocking"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop_profiler(proc: subprocess.Popen, out: str) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        err = b""
    print(f"profile: {out}" if Path(out).exists() else
          f"profile not written: {err.decode(errors='replace')[-500:]}", flush=True)


def summarize(verdicts: list[tuple[str, dict]], results: dict) -> list[str]:
    lines = ["\n== targets (bridge vs bare streaming mitmdump; informational). At concurrency > 1",
             "   latency is mostly queueing in mitmdump's single event loop (≈ conc / req/s), so "
             "the latency targets", "   speak at concurrency 1; at concurrency 1 req/s is "
             "1 / mean latency."]
    for name, v in verdicts:
        if not v:
            continue
        row = [f"  {name:<12} throughput {100 * v['throughput_ratio']:5.1f} % "
               f"{mark(v['throughput_pass'])}"]
        if "added_p50_pass" in v:
            row.append(f"added p50 {v['added_p50_ms']:+.2f} ms {mark(v['added_p50_pass'])}")
        if "first_event_pass" in v:
            row.append(f"first event {v['first_event_delta_ms']:+.2f} ms "
                       f"{mark(v['first_event_pass'])}")
        lines.append(" · ".join(row))
    lines.append("== mitmdump CPU per request (the steadiest figure here): bare → bridge")
    for key, r in results.items():
        b, br = r["paths"].get("bare"), r["paths"].get("bridge")
        if b and br:
            extra = ""
            if "proxy_cpu_us_per_event" in br:
                extra = (f" · {b['proxy_cpu_us_per_event']:.1f} → "
                         f"{br['proxy_cpu_us_per_event']:.1f} µs/event")
            lines.append(f"  {key:<9} {b['proxy_cpu_ms_per_req']:.3f} → "
                         f"{br['proxy_cpu_ms_per_req']:.3f} ms "
                         f"({1e3 * (br['proxy_cpu_ms_per_req'] - b['proxy_cpu_ms_per_req']):+.0f}"
                         f" µs){extra}")
    return lines


def mitm_versions() -> str:
    import mitmproxy.version

    return f"mitmproxy {mitmproxy.version.VERSION} · Python {platform.python_version()}"


def write_json(args: argparse.Namespace, results: dict, sizes: dict, notes: list[str],
               versions: str, elapsed: float) -> None:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    default = ROOT / "bench-results" / f"bench-{stamp}.json"
    path = Path(args.json_path) if args.json_path else default
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "timestamp": datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:], "versions": versions, "cpus": os.cpu_count(),
        "loadavg_end": os.getloadavg(), "elapsed_s": elapsed,
        "config": {"requests": args.counts, "concurrency": args.concs, "rounds": args.rounds,
                   "warmup": args.warm, "events": args.events, "sizes": sizes},
        "targets": {"throughput_ratio_min": TARGET_RPS_RATIO,
                    "added_p50_ms_max": TARGET_ADDED_P50_MS,
                    "first_event_delta_ms_max": TARGET_FIRST_EVENT_MS},
        "notes": notes, "results": results,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["admission"]:  # in-process: what budgets and rate limits add per request
        from benchlib.admission import main as admission
        return admission(argv[1:])
    if any(a == "--workers" or a.startswith("--workers=") for a in argv):
        from benchlib.scale import main as scale  # aibridge serve behind HAProxy, Redis state
        return scale(argv)
    if argv[:1] == ["hooks"]:  # in-process: the bridge's own work per request and stream
        from benchlib.hooks import main as hooks
        return hooks(argv[1:])
    if argv[:1] == ["secrets"]:  # in-process: what secret scanning adds per request
        from benchlib.secret_scan import main as secrets
        return secrets(argv[1:])
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="aibridge-bench-"))
    try:
        return asyncio.run(bench(args, tmp))
    except BenchError as e:
        print(f"\nbench: ERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        if args.keep_tmp:
            print(f"temporary files kept in {tmp}", file=sys.stderr)
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
