"""Rate limits: rpm, tpm and concurrent over the shared state, 429 with Retry-After, and the
admission step giving back what a refused request took."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from aibridge.admission.limits import LimitBook, LimitHold, RateLimits
from aibridge.admission.pipeline import Candidate, Pipeline
from aibridge.admission.steps import Quotas
from aibridge.config import BridgeConfig, LimitConfig, MatchConfig
from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.intercept import Actor, ResponseError
from aibridge.providers import build_registry
from aibridge.providers.base import RequestInfo
from aibridge.state.ledger import Held, Usage
from aibridge.state.memory import MemoryState

ALICE = Actor("alice", {"Team": "ml"})
BOB = Actor("bob", {})


def limits(*configs: LimitConfig) -> LimitBook:
    return LimitBook(configs, "Team", MemoryState())


def test_rpm_refuses_with_429_and_the_seconds_until_the_window_admits():
    book = limits(LimitConfig(name="alice-rpm", match=MatchConfig(actor="alice"), rpm=3))
    for t in (100.0, 110.5, 120.0):
        assert book.admit(ALICE, "openai", "gpt-4o", now=t) is not None
    with pytest.raises(ResponseError) as refused:
        book.admit(ALICE, "openai", "gpt-4o", now=130.2)
    e = refused.value
    assert (e.status, e.type, e.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert e.retry_after == 30  # the request at 100 leaves at 160: 29.8 s, rounded up
    assert e.message == ('rate limit "alice-rpm" (actor=alice) exceeded: 3 request(s) per '
                         "minute; retry in 30s")
    response = e.to_response(ANTHROPIC_ERRORS)
    assert response.headers["Retry-After"] == "30"
    assert json.loads(response.content)["error"]["type"] == "rate_limit_error"
    assert book.admit(BOB, "openai", "gpt-4o", now=130.2) is None  # not matched
    assert book.admit(ALICE, "openai", "gpt-4o", now=160.0) is not None


def test_tpm_charges_tokens_when_requests_end():
    book = limits(LimitConfig(name="team-tpm", match=MatchConfig(team="ml"), tpm=100))
    first = book.admit(ALICE, "openai", "gpt-4o", now=0.0)
    second = book.admit(ALICE, "openai", "gpt-4o", now=1.0)  # usage unknown: both admitted
    first.settle(Usage(None, 70, 2.0))
    second.settle(Usage(Decimal("0.01"), 40, 3.0))  # 110 tokens in the window
    with pytest.raises(ResponseError) as refused:
        book.admit(ALICE, "openai", "gpt-4o", now=10.0)
    assert refused.value.retry_after == 52  # the 70 at 2 leave at 62
    assert "100 tokens per minute (110 used)" in refused.value.message
    assert book.admit(ALICE, "openai", "gpt-4o", now=62.0) is not None


def test_concurrent_slots_are_given_back_when_requests_end():
    book = limits(LimitConfig(name="two", concurrent=2))
    a = book.admit(ALICE, "openai", "m", now=0.0)
    book.admit(BOB, "openai", "m", now=0.0)
    with pytest.raises(ResponseError) as refused:
        book.admit(ALICE, "openai", "m", now=0.0)
    assert refused.value.retry_after == 1 and "2 request(s) in flight at most" in str(
        refused.value)
    a.settle(Usage(None, 0, 1.0))
    assert book.admit(ALICE, "openai", "m", now=1.0) is not None


def test_a_refusal_by_one_limit_takes_back_the_others():
    book = limits(LimitConfig(name="conc", concurrent=5),
                  LimitConfig(name="rpm", rpm=10),
                  LimitConfig(name="per-model", model="gpt-*", rpm=1))
    book.admit(ALICE, "openai", "gpt-4o", now=0.0)
    with pytest.raises(ResponseError, match='"per-model"'):
        book.admit(ALICE, "openai", "gpt-4o", now=1.0)
    state = book.state
    assert state.in_use(book.limits[0].key("concurrent")) == 1  # the first request's only
    assert state.total(book.limits[1].key("rpm"), 1.0, 60.0) == 1
    assert book.admit(ALICE, "openai", "other", now=1.0) is not None  # glob does not match


def test_release_undoes_the_request_entirely():
    book = limits(LimitConfig(name="l", rpm=1, concurrent=1, tpm=10))
    hold = book.admit(ALICE, "openai", "m", now=0.0)
    hold.release()
    hold.release()  # twice: nothing more
    again = book.admit(ALICE, "openai", "m", now=0.5)
    again.settle(Usage(None, 5, 1.0))
    again.settle(Usage(None, 5, 1.0))  # settled once only
    assert book.state.total(book.limits[0].key("tpm"), 1.0, 60.0) == 5
    assert book.state.in_use(book.limits[0].key("concurrent")) == 0


def test_the_step_in_a_pipeline():
    registry = build_registry(BridgeConfig(), Path("/nonexistent"), environ={})
    provider = registry.for_host("api.openai.com")
    book = limits(LimitConfig(name="one", rpm=1))
    step = Quotas([RateLimits(book)])

    def candidate() -> Candidate:
        return Candidate(provider, provider.match("POST", "/v1/chat/completions"),
                         "/v1/chat/completions", None, body={},
                         info=RequestInfo("gpt-4o", False, None), actor=ALICE)

    class Refuse:
        def admit(self, c):
            raise ResponseError("later", "api_error", None, status=500)

        def release(self, c):
            pass

    c = candidate()
    with pytest.raises(ResponseError, match="later"):
        Pipeline([step, Refuse()]).admit(c)
    assert c.holds == []  # released: the refused request did not count
    c = candidate()
    Pipeline([step]).admit(c)
    [held] = c.holds
    assert isinstance(held, Held) and [type(p) for p in held.parts] == [LimitHold]
    with pytest.raises(ResponseError, match="rate limit"):
        Pipeline([step]).admit(candidate())
    no_actor = candidate()
    no_actor.actor = None
    Pipeline([step]).admit(no_actor)  # nothing to match on: passes


def test_config_needs_a_bound_and_unique_names(tmp_path):
    from aibridge.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    for text, problem in [
            ('[[limits]]\nname = "x"\n', "needs rpm, tpm or concurrent"),
            ('[[limits]]\nname = "x"\nrpm = 0\n', "greater than or equal to 1"),
            ('[[limits]]\nname = "x"\nrpm = 1\n[[limits]]\nname = "x"\ntpm = 1\n',
             "duplicate name"),
            ('[[budgets]]\nname = "b"\nlimit_usd = 5\nwarn_at = [1.5]\n', "between 0 and 1"),
            ('[[budgets]]\nname = "b"\nlimit_usd = 0\n', "greater than 0"),
            ('[[budgets]]\nname = "b"\nlimit_usd = 5\nperiod = "year"\n', "period"),
            ('[[budgets]]\nname = "b"\nlimit_usd = 5\nmatch = { group = "x" }\n', "group"),
            ('[budgets_settings]\nwebhook_url = "ftp://x"\n', "webhook_url")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            load_config(path)
    path.write_text('[[budgets]]\nname = "b"\nlimit_usd = 5\nwarn_at = [0.95, 0.8]\n'
                    'match = { metadata = { Remote = true } }\n')
    config, _ = load_config(path)
    assert config.budgets[0].warn_at == [0.8, 0.95]
    assert config.budgets[0].match.metadata == {"Remote": "true"}
