"""Fault and soak test: concurrent SDK clients through the bridge against a faulty provider.

Run as `scripts/soak` (uses the project's .venv). It starts the fake provider (in its own
process, tests/fakeprovider.py with `Faults`: random 429s with Retry-After, 500 JSON, HTML 502
pages, connection resets mid-stream or before the answer, slow first bytes, trickling streams
and stalls past the bridge's upstream timeout) and mitmdump with the bridge (three central keys
per provider, SQLite recording, `upstream_timeout = 5`), then runs N client threads for the
given time. Each thread owns a real `openai` and `anthropic` SDK client and loops over chat,
responses and messages, streaming and not (see soaklib/clients.py for how each request is
classified as ok / well-formed error / BAD).

Decisions:
- SDK `max_retries = 0` (default; `--retries` changes it): every error the bridge produces
  reaches the classifier instead of being hidden by a retry, and each SDK call is one HTTP
  request. Bridged requests are counted per HTTP attempt (httpx request hook) either way.
- The circuit breaker stays on (it is part of the production path; 504 stalls and connection
  resets count as failures): a 503 `circuit breaker is open` JSON is a well-formed error.
  `open_for = 3` so a tripped breaker goes half-open and closes again within a short run.

Checks (exit 1 when one fails; 2 when the set-up itself fails):
- no BAD request;
- after mitmdump stopped (SIGTERM, recorder flushed): every interception has an end row, no
  end row lacks its interception, interceptions = bridged requests the clients sent, and
  recorded `completed` = client successes;
- mitmdump exited by itself within 30 s of SIGTERM and logged no traceback;
- memory bounded: after warm-up (the first max(5 s, 15 %) of the run) the rest is cut in
  thirds; the last third's max RSS is at most --max-rss-growth % above the first third's max;
- open fds: never above --max-fds, and back to at most the pre-run count + 16 once the clients
  have closed their connections.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from mitmlaunch import LaunchError, Mitmdump  # noqa: E402
from soaklib import records  # noqa: E402
from soaklib.clients import SCENARIOS, Result, Worker  # noqa: E402
from soaklib.procs import FakeProc, Sample, Sampler, SoakError, bridge_mitmdump  # noqa: E402

OPENAI_KEYS = [f"sk-soak-openai-{i}-{c * 16}" for i, c in enumerate("abc")]
ANTHROPIC_KEYS = [f"sk-ant-soak-{i}-{c * 16}" for i, c in enumerate("def")]
TOKEN = "soak-proxy-token-0123456789"
FAULTS = {  # per bridged request; the rest get the normal answer
    "rate_limit": 0.03, "server_error": 0.05, "bad_gateway": 0.05, "reset": 0.07,
    "slow": 0.08, "trickle": 0.04, "stall": 0.01,
}
FAULT_LABELS = {"rate_limit": "429", "server_error": "500 JSON", "bad_gateway": "502 HTML",
                "reset": "reset", "slow": "slow first byte", "trickle": "trickle stream",
                "stall": "stall (> upstream_timeout)"}
UPSTREAM_TIMEOUT = 5
STOP_TIMEOUT = 30  # seconds mitmdump gets to exit by itself after SIGTERM (a check)
FD_SLACK = 16
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|Addon error")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/soak", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads (8)")
    p.add_argument("--minutes", type=float, default=2.0, help="run time in minutes (2)")
    p.add_argument("--seconds", type=float, default=None, help="run time in seconds "
                   "(overrides --minutes; for short runs)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for faults and client choices (default: random, printed)")
    p.add_argument("--retries", type=int, default=0, help="SDK max_retries (0)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="SDK timeout and hang limit per request, seconds (30)")
    p.add_argument("--max-rss-growth", type=float, default=30.0,
                   help="allowed growth in %% of max RSS, last vs first third (30)")
    p.add_argument("--max-fds", type=int, default=256, help="open fd ceiling (256)")
    p.add_argument("--addon", type=Path, default=ROOT / "addon" / "bridge.py",
                   help="the mitmproxy script to load (default addon/bridge.py)")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the work directory (kept anyway when a check fails)")
    args = p.parse_args(argv)
    args.duration = args.seconds if args.seconds is not None else args.minutes * 60
    if not 1 <= args.clients <= 64:
        p.error("--clients: 1..64")
    if args.duration < 5:
        p.error("the run must last at least 5 seconds")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    return args


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("AIBRIDGE_") and k.lower() not in
            ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


def write_config(tmp: Path, fake_port: int) -> Path:
    upstream = f"http://127.0.0.1:{fake_port}"
    (tmp / "actors.toml").write_text(f'[[actors]]\nid = "soak"\ntoken = "{TOKEN}"\n')
    config = tmp / "aibridge.toml"
    config.write_text(f"""
[providers.openai]
upstream = "{upstream}"
credentials = "centralized"

[providers.anthropic]
upstream = "{upstream}"
credentials = "auto"

[auth]
actors_file = "actors.toml"

[recording]
url = "sqlite:///{tmp / 'soak.db'}"

[resilience]
upstream_timeout = {UPSTREAM_TIMEOUT}

[resilience.circuit]
open_for = 3
""")
    return config


# -- the run -------------------------------------------------------------------------------------


def run_clients(args: argparse.Namespace, bridge: Mitmdump, sampler: Sampler
                ) -> tuple[list[Worker], list[Result], float]:
    proxy = f"http://soak:{TOKEN}@127.0.0.1:{bridge.port}"
    workers = [Worker(i, proxy, bridge.ca, TOKEN, args.seed * 1000 + i, args.request_timeout,
                      args.retries) for i in range(args.clients)]
    stop = threading.Event()
    t0 = time.monotonic()
    deadline = t0 + args.duration
    threads = [threading.Thread(target=w.run, args=(deadline, stop), name=f"soak-client-{i}",
                                daemon=True) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    next_report = t0 + 10
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(0.2)
        if time.monotonic() >= next_report:
            next_report += 10
            progress(time.monotonic() - t0, workers, sampler)
        if not bridge.alive():
            stop.set()
            print("soak: mitmdump died during the run", flush=True)
            break
    # A request in flight may take up to the request timeout; give it that and a margin.
    join_by = time.monotonic() + args.request_timeout + 15
    for t in threads:
        t.join(max(0.0, join_by - time.monotonic()))
    elapsed = time.monotonic() - t0
    stuck = [Result("?", False, "BAD", elapsed, "client thread hung past the request timeout",
                    f"thread {t.name} still running")
             for t in threads if t.is_alive()]
    stop.set()
    results = [r for w in workers for r in list(w.results)] + stuck
    return workers, results, elapsed


def progress(t: float, workers: list[Worker], sampler: Sampler) -> None:
    c = Counter(r.cls for w in workers for r in list(w.results))
    s = sampler.samples[-1] if sampler.samples else None
    mem = f", rss {s.rss_kib / 1024:.1f} MiB, fds {s.fds}" if s else ""
    print(f"soak: t={t:4.0f}s requests {sum(c.values())} (ok {c['ok']}, error {c['error']}, "
          f"BAD {c['BAD']}){mem}", flush=True)


def wait_fds_settle(sampler: Sampler, target: int, timeout: float = 10) -> Sample | None:
    """Sample until the fd count is at most `target` or `timeout` passes; the last sample."""
    deadline = time.monotonic() + timeout
    last = sampler.sample()
    while last is not None and last.fds > target and time.monotonic() < deadline:
        time.sleep(0.25)
        last = sampler.sample()
    return last


# -- analysis ------------------------------------------------------------------------------------


def thirds(samples: list[Sample], start: float, end: float) -> tuple[list[Sample], list[Sample]]:
    """Samples of the first and last third of [start + warm-up, end]."""
    warm = max(5.0, 0.15 * (end - start))
    lo = start + warm
    span = (end - lo) / 3
    first = [s for s in samples if lo <= s.t < lo + span]
    last = [s for s in samples if end - span <= s.t <= end]
    return first, last


class Checks:
    def __init__(self) -> None:
        self.items: list[tuple[bool, str]] = []

    def add(self, ok: bool, text: str) -> None:
        self.items.append((ok, text))

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.items)


def report(args: argparse.Namespace, results: list[Result], workers: list[Worker],
           samples: list[Sample], run: tuple[float, float], baseline: Sample | None,
           settled: Sample | None, faults: dict[str, int], rec: records.Records | None,
           bridge: Mitmdump, elapsed: float) -> Checks:
    checks = Checks()
    print()
    by: dict[str, Counter] = {}
    for r in results:
        by.setdefault(r.scenario, Counter())[r.cls] += 1
    names = [f"{route}{'/stream' if stream else ''}" for route, stream in SCENARIOS]
    print(f"{'scenario':<18}{'requests':>9}{'ok':>8}{'error':>8}{'BAD':>6}"
          f"{'recorded':>10}{'completed':>11}")
    for name in [*names, *(n for n in by if n not in names)]:
        c = by.get(name, Counter())
        recd = rec.by_scenario.get(name, 0) if rec else "-"
        comp = rec.completed_by_scenario.get(name, 0) if rec else "-"
        print(f"{name:<18}{sum(c.values()):>9}{c['ok']:>8}{c['error']:>8}{c['BAD']:>6}"
              f"{recd!s:>10}{comp!s:>11}")
    total = Counter(r.cls for r in results)
    n = sum(total.values())
    print(f"{'total':<18}{n:>9}{total['ok']:>8}{total['error']:>8}{total['BAD']:>6}"
          f"{(rec.interceptions if rec else '-')!s:>10}"
          f"{(rec.outcomes.get('completed', 0) if rec else '-')!s:>11}")
    print(f"throughput: {n / elapsed:.1f} requests/s over {elapsed:.0f}s with "
          f"{args.clients} clients")

    kinds = Counter(r.kind for r in results if r.cls == "error")
    if kinds:
        print("well-formed errors seen by clients: " +
              ", ".join(f"{k}: {v}" for k, v in kinds.most_common()))
    if faults:
        print("faults injected by the fake: " + ", ".join(
            f"{FAULT_LABELS.get(k, k)} {v}" for k, v in faults.items() if k != "none" and v) +
            f" (of {sum(faults.values())} bridged requests; {faults.get('none', 0)} clean)")
    if rec and rec.errors:
        print("recorded non-completed: " +
              ", ".join(f"{k}: {v}" for k, v in rec.errors.items()))

    bad = [r for r in results if r.cls == "BAD"]
    checks.add(not bad, f"BAD requests: {len(bad)}")
    for r in bad[:10]:
        when = time.strftime("%H:%M:%S", time.localtime(r.started)) + \
            f".{int(r.started * 1000) % 1000:03d}"
        print(f"\nBAD {r.scenario} (client {r.worker}, started {when}, after "
              f"{r.elapsed:.2f}s): {r.kind}\n  previous request of this client: "
              f"{r.previous or '-'}\n  " + r.detail.replace("\n", "\n  "))
    if len(bad) > 10:
        print(f"... and {len(bad) - 10} more BAD requests (results.jsonl in the work dir)")
    print()

    # Records.
    sent = sum(sum(w.sent.values()) for w in workers)
    if rec is None:
        checks.add(False, "records: the database could not be read")
    else:
        checks.add(rec.unended_count == 0,
                   f"records: interceptions {rec.interceptions}, ended {rec.ended}, "
                   f"unended {rec.unended_count}, ends without interception {rec.orphan_ends}")
        if rec.orphan_ends:
            checks.add(False, f"records: {rec.orphan_ends} end rows without an interception")
        for u in rec.unended:
            print(f"  unended: {u}")
        checks.add(rec.interceptions == sent,
                   f"records: interceptions {rec.interceptions} = bridged requests sent {sent}")
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(rec.outcomes.items()))
        checks.add(rec.outcomes.get("completed", 0) == total["ok"],
                   f"records: completed {rec.outcomes.get('completed', 0)} = client successes "
                   f"{total['ok']} (outcomes: {outcomes})")

    # Memory and fds.
    start, end = run
    first, last = thirds(samples, start, end)
    if len(first) < 2 or len(last) < 2:
        checks.add(False, f"memory: too few samples ({len(samples)}) to judge growth")
    else:
        f_max = max(s.rss_kib for s in first)
        l_max = max(s.rss_kib for s in last)
        growth = 100.0 * (l_max - f_max) / f_max
        run_samples = [s for s in samples if start <= s.t <= end]
        checks.add(growth <= args.max_rss_growth,
                   f"memory: RSS MiB start {run_samples[0].rss_kib / 1024:.1f}, first third max "
                   f"{f_max / 1024:.1f}, last third max {l_max / 1024:.1f} ({growth:+.1f} %, "
                   f"limit {args.max_rss_growth:g} %), overall max "
                   f"{max(s.rss_kib for s in samples) / 1024:.1f}; {len(samples)} samples")
    fd_max = max((s.fds for s in samples), default=0)
    base = baseline.fds if baseline else 0
    checks.add(fd_max <= args.max_fds,
               f"open fds: before {base}, max {fd_max} (limit {args.max_fds}), first/last third "
               f"max {max((s.fds for s in first), default=0)}/"
               f"{max((s.fds for s in last), default=0)}")
    if settled is not None:
        checks.add(settled.fds <= base + FD_SLACK,
                   f"open fds after the clients closed: {settled.fds} (before {base}, "
                   f"allowed +{FD_SLACK})")
    else:
        checks.add(False, "open fds after the clients closed: mitmdump was gone")

    # The process.
    tracebacks = len(TRACEBACK.findall(bridge.log()))
    checks.add(bridge.returncode is not None and tracebacks == 0,
               f"mitmdump: exit {bridge.returncode} {bridge.stop_seconds:.1f}s after SIGTERM, "
               f"{tracebacks} tracebacks in its log")
    return checks


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        os.environ.pop(name, None)  # the clients name their proxy explicitly
    tmp = Path(tempfile.mkdtemp(prefix="aibridge-soak-"))
    faults_opts = {**FAULTS, "seed": args.seed, "retry_after": [1, 2],
                   "slow_delay": [0.3, 2.0]}
    print(f"soak: {args.clients} clients for {args.duration:g}s, seed {args.seed}, SDK "
          f"max_retries {args.retries}, work dir {tmp}")
    print("soak: faults per bridged request: " + ", ".join(
        f"{FAULT_LABELS[k]} {v:.0%}" for k, v in FAULTS.items()))
    fake: FakeProc | None = None
    bridge: Mitmdump | None = None
    keep = args.keep_tmp
    try:
        fake = FakeProc(ROOT, faults_opts, tmp / "fake.log")
        config = write_config(tmp, fake.port)
        env = {**clean_env(), "AIBRIDGE_DATA_DIR": str(tmp / "data"),
               "AIBRIDGE_OPENAI_KEYS": ",".join(OPENAI_KEYS),
               "AIBRIDGE_ANTHROPIC_KEYS": ",".join(ANTHROPIC_KEYS)}
        bridge = bridge_mitmdump(args.addon, tmp, config, env).start(timeout=60)
        print(f"soak: mitmdump pid {bridge.pid} on 127.0.0.1:{bridge.port}, fake provider on "
              f"127.0.0.1:{fake.port}; 3 keys per provider; upstream_timeout "
              f"{UPSTREAM_TIMEOUT}s; circuit breaker on (open_for 3s)", flush=True)

        sampler = Sampler(bridge.pid)
        time.sleep(1)
        baseline = sampler.sample()
        sampler.start()
        run_start = time.monotonic() - sampler.t0
        workers, results, elapsed = run_clients(args, bridge, sampler)
        run_end = time.monotonic() - sampler.t0
        sampler.stop()
        base_fds = baseline.fds if baseline else 0
        settled = wait_fds_settle(sampler, base_fds + FD_SLACK) if bridge.alive() else None
        faults = fake.call("stats").get("faults", {})
        bridge.stop(timeout=STOP_TIMEOUT)
        rec = None
        with contextlib.suppress(Exception):
            rec = records.read(tmp / "soak.db")
        with (tmp / "results.jsonl").open("w") as f:
            for r in results:
                f.write(json.dumps(r.__dict__) + "\n")
        checks = report(args, results, workers, sampler.samples, (run_start, run_end),
                        baseline, settled, faults, rec, bridge, elapsed)
        for ok, text in checks.items:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        print(f"RESULT: {'PASS' if checks.ok else 'FAIL'} (seed {args.seed})")
        if not checks.ok:
            keep = True
            print(f"soak: evidence kept in {tmp} (mitmdump.log, flows.mitm, soak.db, "
                  "results.jsonl)")
        return 0 if checks.ok else 1
    except (SoakError, LaunchError) as e:
        keep = True
        print(f"soak: set-up failed: {e}\nsoak: work dir kept: {tmp}", file=sys.stderr)
        return 2
    finally:
        if bridge is not None and bridge.alive():
            bridge.stop()
        if fake is not None:
            fake.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
