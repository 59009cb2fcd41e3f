"""`scripts/bench admission`: what budgets and rate limits add to each request, in-process.

Configured: 100 budgets (50 team budgets, 50 personal ones) and 100 rate limits (rpm, tpm and
concurrent on 100 actors), prices from genai-prices' table, state in the process. 1000 actors
in 50 teams send requests in turn; each request is admitted by the budget and rate-limit steps
(a reservation at its worst case, window entries, a slot), kept in the ledger, and settled
with a cost and tokens as if it had ended. The same loop with an empty pipeline is the
baseline; the difference per request is what the policies add. A second scenario makes every
rule match every request (the worst case a configuration can ask for).

The target (issue 13) is at most 50 µs added per request with 100 budgets and 100 limits; it
is reported, never asserted (timings on a shared 2-core machine vary).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from decimal import Decimal
from pathlib import Path

from aibridge.admission.budgets import BudgetBook, Budgets
from aibridge.admission.limits import LimitBook, RateLimits
from aibridge.admission.pipeline import Candidate, Pipeline
from aibridge.config import BridgeConfig, BudgetConfig, BudgetsSettings, LimitConfig, MatchConfig
from aibridge.intercept import Actor
from aibridge.pricing import PriceBook
from aibridge.providers import build_registry
from aibridge.providers.base import RequestInfo
from aibridge.state.ledger import Ledger, Usage
from aibridge.state.memory import MemoryState

TARGET_US = 50.0
MODEL = "gpt-4o"
BODY = {"model": MODEL, "max_tokens": 1024,
        "messages": [{"role": "user", "content": "x" * 2000}]}
BODY_BYTES = 2100


def configs(everyone: bool) -> tuple[list[BudgetConfig], list[LimitConfig]]:
    budgets, limits = [], []
    for i in range(100):
        match = (MatchConfig() if everyone else
                 MatchConfig(team=f"team-{i}") if i < 50 else MatchConfig(actor=f"user-{i}"))
        budgets.append(BudgetConfig(name=f"b{i}", match=match, limit_usd=Decimal(10**9),
                                    period=("day", "week", "month")[i % 3], warn_at=[0.8]))
        limits.append(LimitConfig(name=f"l{i}", match=MatchConfig() if everyone else
                                  MatchConfig(actor=f"user-{i * 10}"),
                                  rpm=10**9, tpm=10**12, concurrent=10**6))
    return budgets, limits


def run(requests: int, *, policies: bool, everyone: bool, prices: PriceBook) -> float:
    """Seconds per request for `requests` requests."""
    provider = build_registry(BridgeConfig(), Path("/nonexistent"),
                              environ={}).for_host("api.openai.com")
    assert provider is not None
    match = provider.match("POST", "/v1/chat/completions")
    actors = [Actor(f"user-{i}", {"Team": f"team-{i % 50}"}) for i in range(1000)]
    info = RequestInfo(MODEL, False, None)
    state, ledger = MemoryState(), Ledger()
    steps: list = []
    if policies:
        budgets, limits = configs(everyone)
        steps = [Budgets(BudgetBook(budgets, BudgetsSettings(), state, prices)),
                 RateLimits(LimitBook(limits, "Team", state))]
    pipeline = Pipeline(steps)
    usage = Usage(Decimal("0.0123"), 1500, time.time())
    for actor in actors:  # warm: each actor's rules are looked up once
        c = Candidate(provider, match, "/v1/chat/completions", None, body=BODY, info=info,
                      actor=actor, body_bytes=BODY_BYTES)
        pipeline.admit(c)
        ledger.keep("warm", c.holds)
        ledger.settle("warm", usage)
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for n in range(requests):
            c = Candidate(provider, match, "/v1/chat/completions", None, body=BODY, info=info,
                          actor=actors[n % 1000], body_bytes=BODY_BYTES)
            pipeline.admit(c)
            ledger.keep("i", c.holds)
            ledger.settle("i", usage)
        return (time.perf_counter() - start) / requests
    finally:
        gc.enable()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench admission", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20_000, help="requests per run (20000)")
    p.add_argument("--rounds", type=int, default=5, help="runs per scenario; median (5)")
    args = p.parse_args(argv)
    prices = PriceBook.from_config({}, build_registry(
        BridgeConfig(), Path("/nonexistent"), environ={}).providers)
    print(f"admission benchmark: 100 budgets + 100 limits, 1000 actors in 50 teams, "
          f"{args.requests} requests x {args.rounds} rounds, model {MODEL} (genai-prices)")
    results = {}
    for name, everyone in (("typical", False), ("every rule matches", True)):
        base, with_policies = [], []
        for _ in range(args.rounds):
            base.append(run(args.requests, policies=False, everyone=everyone, prices=prices))
            with_policies.append(run(args.requests, policies=True, everyone=everyone,
                                     prices=prices))
        added = (statistics.median(with_policies) - statistics.median(base)) * 1e6
        results[name] = added
        print(f"  {name:<20} baseline {statistics.median(base) * 1e6:7.2f} µs/request, with "
              f"budgets and limits {statistics.median(with_policies) * 1e6:7.2f} µs/request: "
              f"adds {added:7.2f} µs")
    typical = results["typical"]
    verdict = "within" if typical <= TARGET_US else "OVER"
    print(f"typical request: +{typical:.1f} µs ({verdict} the {TARGET_US:g} µs target; "
          "reported, not asserted)")
    return 0
