"""Budgets: periods, matching, worst-case reservations, refusals, settlement, warnings, the
spend rebuilt from records, and the admission step in a pipeline."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from mitmproxy.test import tutils

from aibridge.admission.budgets import (
    BUDGET_EXCEEDED,
    SPENT,
    UNPRICED_MODEL,
    WARNING,
    BudgetBook,
    Budgets,
    Reservation,
    money,
    output_bound,
    spend_from,
)
from aibridge.admission.matching import Matcher, RuleIndex, value_matches
from aibridge.admission.periods import Period, span_of
from aibridge.admission.pipeline import Candidate, Pipeline
from aibridge.admission.steps import Quotas
from aibridge.config import BridgeConfig, BudgetConfig, BudgetsSettings, MatchConfig, PriceConfig
from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.intercept import Actor, ResponseError
from aibridge.pricing import PriceBook
from aibridge.providers import build_registry
from aibridge.providers.base import RequestInfo
from aibridge.recording.spend import SpendRow
from aibridge.state.ledger import Held, Usage
from aibridge.state.memory import MemoryState

ALICE = Actor("alice", {"Team": "ml", "Username": "alice"})
BOB = Actor("bob", {"Team": "platform,ml-ops"})
CAROL = Actor("carol", {"Team": "eng,ml", "Site": "berlin"})
# $1000 per million output tokens, input free: a request's worst case is its max_tokens.
PRICES = PriceBook({"fake-*": PriceConfig(input=Decimal(0), output=Decimal(1000),
                                          cache_read=Decimal(0), cache_write=Decimal(0))},
                   table=False)
NOV_29 = datetime(2026, 11, 29, 15, 0, tzinfo=UTC).timestamp()  # a Sunday
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def budget(name: str = "ml-monthly", limit: str = "0.035", **kw) -> BudgetConfig:
    kw.setdefault("match", MatchConfig(team="ml"))
    return BudgetConfig(name=name, limit_usd=Decimal(limit), **kw)


def book(*budgets: BudgetConfig, notify=None, **settings) -> BudgetBook:
    return BudgetBook(budgets or (budget(),), BudgetsSettings(**settings), MemoryState(),
                      PRICES, notify=notify)


def reserve(b: BudgetBook, actor: Actor = ALICE, model: str = "fake-model", max_tokens: int = 7,
            now: float = NOV_29) -> list[Reservation]:
    return b.reserve(actor, "openai", "openai", model, {"max_tokens": max_tokens}, 40, now)


def test_periods_are_utc_calendar_spans():
    day = span_of("day", NOV_29)
    assert (day.label, day.resets) == ("2026-11-29", "2026-11-30T00:00:00Z")
    week = span_of("week", NOV_29)  # ISO week: Monday the 23rd to Monday the 30th
    assert (week.label, datetime.fromtimestamp(week.start, UTC).day) == ("2026-W48", 23)
    assert week.resets == "2026-11-30T00:00:00Z"
    month = span_of("month", NOV_29)
    assert (month.label, month.resets) == ("2026-11", "2026-12-01T00:00:00Z")
    december = span_of("month", DEC_1 + 5)
    assert (december.label, december.resets) == ("2026-12", "2027-01-01T00:00:00Z")
    period = Period("month")
    assert period.span(NOV_29) is period.span(NOV_29 + 60)  # kept until it ends
    assert period.span(DEC_1).label == "2026-12"
    with pytest.raises(ValueError):
        Period("year")


def test_matching_by_actor_team_metadata_and_target():
    def m(match: MatchConfig, provider=None, model=None) -> Matcher:
        return Matcher.build(match, provider, model, "Team")

    assert m(MatchConfig()).applies(ALICE, "openai", "x")  # empty: everyone
    assert m(MatchConfig(actor="alice")).applies(ALICE, "openai", "x")
    assert not m(MatchConfig(actor="alice")).applies(BOB, "openai", "x")
    team = m(MatchConfig(team="ml"))
    assert team.applies(ALICE, "openai", "x")
    assert team.applies(CAROL, "openai", "x")  # a list of groups holds "ml"
    assert not team.applies(BOB, "openai", "x")  # "ml-ops" is not "ml"
    both = m(MatchConfig(team="ml", metadata={"Site": "berlin"}))
    assert both.applies(CAROL, "o", "x") and not both.applies(ALICE, "o", "x")
    models = m(MatchConfig(), provider="anthropic", model="claude-*")
    assert models.applies(ALICE, "anthropic", "Claude-Sonnet-4-5")  # model: any case
    assert not models.applies(ALICE, "openai", "claude-sonnet-4-5")
    assert not models.applies(ALICE, "anthropic", "gpt-4o")
    assert team.text == "team=ml" and m(MatchConfig()).text == "everyone"
    assert team.fingerprint("month") != team.fingerprint("week")
    assert team.fingerprint("month") == m(MatchConfig(team="ml")).fingerprint("month")
    assert value_matches("a, b", "b") and not value_matches(None, "b")


def test_rule_index_remembers_per_actor_and_target():
    rules = ["team", "alice"]
    index = RuleIndex(rules, [Matcher.build(MatchConfig(team="ml"), None, None, "Team"),
                              Matcher.build(MatchConfig(actor="alice"), None, None, "Team")])
    assert index.find(ALICE, "openai", "m") == ("team", "alice")
    assert index.find(BOB, "openai", "m") == ()
    assert index.find(ALICE, "openai", "m") is index.find(ALICE, "openai", "m")


def test_output_bound_takes_the_largest_named_limit():
    assert output_bound({"max_tokens": 100}, 4096) == 100
    assert output_bound({"max_output_tokens": 50, "max_completion_tokens": 70}, 1) == 70
    assert output_bound({"max_tokens": True, "max_output_tokens": -3}, 4096) == 4096
    assert output_bound({}, 4096) == 4096


def test_money_reads_right_for_dollars_and_cents():
    assert money(500_120_000_000) == "$500.12"
    assert money(35_000_000) == "$0.035"
    assert money(50_000_000) == "$0.05"
    assert money(4_200_000) == "$0.0042"
    assert money(0) == "$0.00"


def test_reservations_fill_the_budget_then_it_refuses_with_403():
    b = book()
    held = [reserve(b) for _ in range(5)]  # 5 x $0.007 worst case = $0.035
    assert all(len(r) == 1 and r[0].amount == 7_000_000 for r in held)
    with pytest.raises(ResponseError) as refused:
        reserve(b)
    e = refused.value
    assert (e.status, e.type, e.code) == (403, "permission_error", BUDGET_EXCEEDED)
    assert e.message == ('budget "ml-monthly" is spent: $0.00 of $0.035 this month (and $0.035 '
                         "held by requests in flight); resets 2026-12-01T00:00:00Z")
    response = e.to_response(ANTHROPIC_ERRORS)
    assert response.headers["x-should-retry"] == "false"
    assert json.loads(response.content)["error"]["code"] == BUDGET_EXCEEDED
    for r in held:
        r[0].settle(Usage(Decimal("0.007"), 18, NOV_29))
    with pytest.raises(ResponseError) as refused:
        reserve(b)
    assert refused.value.message == ('budget "ml-monthly" is spent: $0.035 of $0.035 this '
                                     "month; resets 2026-12-01T00:00:00Z")
    assert reserve(b, actor=BOB) == []  # not in the team: no budget applies
    assert reserve(b, now=DEC_1)  # a new month starts from zero


def test_settling_replaces_the_reservation_with_the_recorded_cost():
    b = book(budget(limit="1"))
    [r] = reserve(b, max_tokens=500)  # worst case $0.50
    key = r.key
    assert b.state.balance(key).reserved == 500_000_000
    r.settle(Usage(Decimal("0.012"), 20, NOV_29))
    assert b.state.balance(key).spent == 12_000_000 and b.state.balance(key).reserved == 0
    r.settle(Usage(Decimal("5"), 20, NOV_29))  # once only
    r.release()
    assert b.state.balance(key).spent == 12_000_000
    [r] = reserve(b)
    r.release()  # never went upstream: nothing charged
    assert b.state.balance(key).reserved == 0 and b.state.balance(key).spent == 12_000_000
    [r] = reserve(b)
    r.settle(Usage(None, 0, NOV_29))  # unpriced or no usage: counted as nothing
    assert b.state.balance(key).spent == 12_000_000


def test_a_refusal_gives_back_the_other_budgets_reservations():
    b = book(budget("team", limit="10"), budget("alice", limit="0.001",
                                                 match=MatchConfig(actor="alice")))
    [first, _] = reserve(b)  # both budgets apply; alice's fills up
    with pytest.raises(ResponseError, match='budget "alice" is spent'):
        reserve(b)
    team_key = first.key
    assert b.state.balance(team_key).reserved == 7_000_000  # only the first request's


def test_budgets_on_provider_and_model_globs():
    b = book(budget(model="fake-big*", match=MatchConfig()))
    assert reserve(b, model="fake-small") == []
    assert len(reserve(b, model="FAKE-BIG-1")) == 1


def test_warn_at_crossings_notice_once_and_the_webhook_is_told():
    sent = []
    b = book(budget(limit="0.1", warn_at=[0.5, 0.8]), notify=sent.append)
    notices = []
    for cost in ("0.03", "0.03", "0.03", "0.005", "0.02"):
        [r] = reserve(b)
        notices += r.settle(Usage(Decimal(cost), 10, NOV_29))
    assert [(n.name, n.attributes["share"]) for n in notices] == [
        (WARNING, 0.5), (WARNING, 0.8), (SPENT, 1.0)]
    assert notices[0].message == ('budget "ml-monthly" (team=ml) crossed 50%: $0.06 of $0.10 '
                                  "this month; resets 2026-12-01T00:00:00Z")
    assert notices[2].message.startswith('budget "ml-monthly" (team=ml) is spent: $0.115 of')
    assert [s["event"] for s in sent] == ["budget.warning", "budget.warning", "budget.spent"]
    assert sent[0]["budget"] == "ml-monthly" and sent[0]["spent_usd"] == "0.06"
    assert sent[0]["limit_usd"] == "0.1" and sent[0]["actor"] == "alice"
    assert sent[0]["team"] == "ml" and sent[0]["resets_at"] == "2026-12-01T00:00:00Z"


def test_unpriced_models_pass_uncharged_or_are_refused():
    b = book(budget())
    [r] = reserve(b, model="unknown-model")
    assert r.amount == 0
    strict = book(budget(), unpriced="refuse")
    with pytest.raises(ResponseError) as refused:
        reserve(strict, model="unknown-model")
    assert refused.value.code == UNPRICED_MODEL and refused.value.status == 403
    assert reserve(strict, actor=BOB, model="unknown-model") == []  # no budget applies


def test_prime_starts_from_the_recorded_spend_and_does_not_warn_again():
    sent = []
    b = book(budget(limit="0.1", warn_at=[0.5]), budget("bob", limit="1",
                                                        match=MatchConfig(actor="bob"),
                                                        period="day"), notify=sent.append)
    rows = [SpendRow("2026-11-03", "alice", {"Team": "ml"}, "openai", "fake-model",
                     Decimal("0.06")),
            SpendRow("2026-10-31", "alice", {"Team": "ml"}, "openai", "fake-model",
                     Decimal("5")),  # last month
            SpendRow("2026-11-29", "bob", {}, "openai", "fake-model", Decimal("0.25")),
            SpendRow("2026-11-28", "bob", {}, "openai", "fake-model", Decimal("0.5"))]
    assert b.prime(spend_from(rows), NOV_29) == 2
    team, bob = (b.state.balance(x.key(x.period.span(NOV_29))) for x in b.budgets)
    assert team.spent == 60_000_000 and bob.spent == 250_000_000
    [r] = reserve(b)
    assert r.settle(Usage(Decimal("0.01"), 1, NOV_29)) == []  # 50% was crossed before
    assert sent == []
    assert b.prime(spend_from([]), NOV_29) == 0  # held already: a reload keeps its spend


def test_the_step_reserves_and_a_later_refusal_releases():
    registry = build_registry(BridgeConfig(), Path("/nonexistent"), environ={})
    provider = registry.for_host("api.openai.com")
    b = book()
    step = Quotas([Budgets(b)])

    class Refuse:
        def admit(self, candidate):
            raise ResponseError("no", "api_error", None, status=500)

        def release(self, candidate):
            pass

    request = tutils.treq(content=b'{"model":"fake-model","max_tokens":7}')
    candidate = Candidate(provider, provider.match("POST", "/v1/chat/completions"),
                          "/v1/chat/completions", None, request=request,
                          body={"model": "fake-model", "max_tokens": 7},
                          info=RequestInfo("fake-model", False, None), actor=ALICE)
    with pytest.raises(ResponseError):
        Pipeline([step, Refuse()]).admit(candidate)
    assert candidate.holds == []
    [spent_key] = [x.key(x.period.span(time.time())) for x in b.budgets]
    assert b.state.balance(spent_key).reserved == 0
    Pipeline([step]).admit(candidate)
    [held] = candidate.holds
    assert isinstance(held, Held) and [type(p) for p in held.parts] == [Reservation]
