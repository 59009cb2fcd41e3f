"""Settlement: what admission held for an interception is settled where it ends (the
reporter's `ended`) with its recorded cost and tokens, and a crossed budget threshold becomes
an event on its span before the span ends."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from aibridge.addons.runtime import Runtime
from aibridge.intercept import Actor, Interception, new_credential_info
from aibridge.observe.reporting import Reporter
from aibridge.pricing import Cost
from aibridge.state.ledger import Ledger, Notice, Usage
from aibridge.summary import ResponseSummary


class Hold:
    def __init__(self, notices=()) -> None:
        self.usage: list[Usage] = []
        self.released = 0
        self.notices = list(notices)

    def settle(self, usage):
        self.usage.append(usage)
        return self.notices

    def release(self):
        self.released += 1


class Telemetry:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def event(self, interception_id, name, attributes):
        self.calls.append(("event", interception_id, name, dict(attributes)))

    def interception_ended(self, record):
        self.calls.append(("ended", record.id))

    def usage(self, record):
        pass


def interception(provider_type: str = "anthropic") -> Interception:
    return Interception(provider=provider_type, provider_type=provider_type,
                        route="/v1/messages", model="claude", streaming=True,
                        actor=Actor("alice", {"Team": "ml"}),
                        credential=new_credential_info("centralized", "sk-test-0123456789abcd"))


def test_ended_settles_holds_with_cost_and_tokens_before_the_span_ends():
    telemetry = Telemetry()
    reporter = Reporter(SimpleNamespace(submit=lambda r: None), telemetry)
    reporter.ledger = Ledger()
    notice = Notice("aibridge.budget.warning", "crossed 80%", {"budget": "ml", "share": 0.8})
    hold = Hold([notice])
    i = interception()
    reporter.ledger.keep(i.id, [hold])
    summary = ResponseSummary(input_tokens=11, output_tokens=7, cache_read_tokens=3,
                              cache_write_tokens=2)
    reporter.ended(i, outcome="completed", status=200, error_type=None, error_message=None,
                   summary=summary, key_attempts=1, time_to_first_token=None,
                   cost=Cost(Decimal("0.007"), "operator:fake-*"))
    [usage] = hold.usage
    assert usage.cost_usd == Decimal("0.007")
    assert usage.tokens == 11 + 3 + 2 + 7  # Anthropic's input excludes the cache
    assert telemetry.calls == [("event", i.id, "aibridge.budget.warning",
                                {"budget": "ml", "share": 0.8}), ("ended", i.id)]
    assert len(reporter.ledger) == 0


def test_openai_input_already_counts_the_cache_and_unpriced_settles_as_none():
    reporter = Reporter(None, None)
    reporter.ledger = Ledger()
    hold = Hold()
    i = interception("openai")
    reporter.ledger.keep(i.id, [hold])
    reporter.ended(i, outcome="completed", status=200, error_type=None, error_message=None,
                   summary=ResponseSummary(input_tokens=11, output_tokens=7,
                                           cache_read_tokens=3),
                   key_attempts=1, time_to_first_token=None, cost=Cost(None, None))
    assert hold.usage[0].tokens == 18 and hold.usage[0].cost_usd is None


def test_a_refused_interception_holds_nothing_and_a_hold_without_one_is_given_back():
    reporter = Reporter(None, None)
    reporter.ledger = Ledger()
    i = interception()
    reporter.ended(i, outcome="rejected", status=403, error_type="unauthorized",
                   error_message="budget spent", summary=None, key_attempts=0,
                   time_to_first_token=None)  # nothing kept: nothing to settle
    runtime = Runtime()
    hold = Hold()
    runtime.hold(None, [hold])
    assert hold.released == 1 and len(runtime.ledger) == 0
    runtime.hold(i, [hold])
    assert len(runtime.ledger) == 1
