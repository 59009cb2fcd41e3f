"""Cost per interception: the price lookup (genai-prices, operator `[prices]`), the arithmetic
held equal to genai-prices' own, the token conventions of each API, exact decimals end to end
(records, spool, database), and where cost shows (log line, comment, telemetry)."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aibridge.config import ConfigError, PriceConfig, load_config
from aibridge.intercept import Actor, Interception, new_credential_info
from aibridge.observe import flowview
from aibridge.observe.reporting import Reporter
from aibridge.observe.telemetry import Telemetry
from aibridge.pricing import UNPRICED, Cost, PriceBook, Tokens, format_usd, short_usd
from aibridge.pricing import prices as prices_module
from aibridge.pricing.prices import genai_usage, rates_of
from aibridge.recording import schema
from aibridge.recording.codec import decode, encode, new_entry
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import upgrade
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import InterceptionEnded, InterceptionStarted
from aibridge.recording.store import Store
from aibridge.summary import ResponseSummary

M = Decimal(1_000_000)


def provider(name: str, type_: str, *hosts: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, type=type_, hosts=hosts)


PROVIDERS = [provider("openai", "openai", "api.openai.com"),
             provider("anthropic", "anthropic", "api.anthropic.com"),
             provider("chatgpt", "openai", "chatgpt.com"),
             provider("groq", "openai", "api.groq.com")]


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook(None, PROVIDERS)


# -- the arithmetic is genai-prices' own -------------------------------------------------------

def _models(provider_id: str) -> list[tuple[object, object, ModelPrice]]:
    (gp,) = [p for p in get_snapshot().providers if p.id == provider_id]
    out = []
    for model in gp.models:
        sets = [model.prices] if isinstance(model.prices, ModelPrice) else [
            c.prices for c in model.prices]
        out += [(gp, model, price) for price in sets]
    return out


def _random_tokens(rng: random.Random, anthropic: bool) -> Tokens:
    big = rng.random() < 0.3  # past the 200k tiers
    write = rng.randint(0, 300_000 if big else 5000) if anthropic else 0
    return Tokens(input=rng.randint(0, 400_000 if big else 20_000),
                  output=rng.randint(0, 30_000), cache_read=rng.randint(0, 300_000 if big else
                                                                       20_000),
                  cache_write=write, cache_write_1h=rng.randint(0, write) if anthropic else 0,
                  extra={"web_search_requests": rng.randint(0, 3)} if anthropic else {})


@pytest.mark.parametrize("provider_id", ["openai", "anthropic"])
def test_every_openai_and_anthropic_price_equals_genai_prices_own_calculation(provider_id):
    """The fast arithmetic (under 10 µs) against `ModelPrice.calc_price` (~170 µs), for every price
    set of the table, tiers crossed or not, cache reads and writes (1-hour too), web searches."""
    rng = random.Random(provider_id)
    compared = 0
    for gp, model, price in _models(provider_id):
        rates = rates_of(gp, model, price)
        for _ in range(12):
            tokens = _random_tokens(rng, provider_id == "anthropic")
            expected = price.calc_price(genai_usage(tokens))["total_price"]
            assert rates.cost(tokens) == expected, (model.id, tokens)
            compared += 1
    assert compared > 100


def test_audio_usage_is_priced_by_genai_prices_itself(book):
    """A price for a kind this module does not compute (audio tokens) is genai-prices' to
    apply; without such usage the fast arithmetic gives the same."""
    rates = book.rates("openai", "openai", "gpt-audio")
    assert rates is not None and rates.full is not None
    _gp, model = _lookup("openai", "gpt-audio")
    with_audio = Tokens(input=900, output=300, cache_read=100,
                        extra={"prompt_audio": 400, "completion_audio": 200})
    expected = model.prices.calc_price(Usage(input_tokens=1000, output_tokens=300,
                                             cache_read_tokens=100, input_audio_tokens=400,
                                             output_audio_tokens=200))["total_price"]
    assert rates.cost(with_audio) == expected
    plain = Tokens(input=900, output=300, cache_read=100)
    # No cache-read price: cached input is input.
    assert rates.cost(plain) == (1000 * rates.prices["input"] + 300 * rates.prices["output"]) / M


def _lookup(provider_id: str, model_ref: str):
    (gp,) = [p for p in get_snapshot().providers if p.id == provider_id]
    return gp, gp.find_model(model_ref)


# -- tokens: each API's raw figures, each token counted once ----------------------------------

def test_openai_input_includes_cache_and_anthropic_excludes_it():
    openai = Tokens.from_usage(1000, 200, 300, 0, {"output_reasoning": 50},
                               input_includes_cache=True)
    assert (openai.input, openai.cache_read, openai.output, openai.reasoning) == (700, 300, 200,
                                                                                   50)
    assert openai.total_input == 1000
    anthropic = Tokens.from_usage(1000, 200, 300, 400, {"cache_ephemeral_1h_input": 150},
                                  input_includes_cache=False)
    assert (anthropic.input, anthropic.cache_read, anthropic.cache_write,
            anthropic.cache_write_1h) == (1000, 300, 400, 150)
    assert anthropic.total_input == 1700
    # Inconsistent figures never give negative counts.
    odd = Tokens.from_usage(10, -1, 30, 0, {"cache_ephemeral_1h_input": 99},
                            input_includes_cache=True)
    assert (odd.input, odd.output, odd.cache_write_1h) == (0, 0, 0)
    summary = ResponseSummary(input_tokens=1000, output_tokens=200, cache_read_tokens=300)
    assert Tokens.from_summary(summary, input_includes_cache=True) == Tokens(700, 200, 300)


def test_hand_computed_costs(book):
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million. OpenAI's 1000 input
    # include the 300 cached.
    tokens = Tokens.from_usage(1000, 200, 300, 0, input_includes_cache=True)
    assert book.cost("openai", "openai", "gpt-4o", tokens) == Cost(
        (700 * Decimal("2.5") + 300 * Decimal("1.25") + 200 * 10) / M,
        "genai-prices:openai/gpt-4o")
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write (5 min), $6 (1 hour),
    # $15 output, $10 per 1000 web searches. Anthropic's 1000 input exclude the cache.
    tokens = Tokens.from_usage(1000, 200, 300, 400, {"cache_ephemeral_1h_input": 100,
                                                     "web_search_requests": 2},
                               input_includes_cache=False)
    cost = book.cost("anthropic", "anthropic", "claude-sonnet-4-5-20250929", tokens)
    assert cost.usd == (1000 * 3 + 300 * Decimal("0.3") + 300 * Decimal("3.75") + 100 * 6
                        + 200 * 15) / M + 2 * Decimal(10) / 1000
    assert cost.usd == Decimal("0.027815")
    assert cost.source == "genai-prices:anthropic/claude-sonnet-4-5"


def test_a_tier_applies_to_all_tokens_once_total_input_passes_it(book):
    rates = book.rates("anthropic", "anthropic", "claude-sonnet-4-5")
    under = Tokens(input=150_000, output=1000, cache_read=50_000)  # 200,000: not over
    over = Tokens(input=150_001, output=1000, cache_read=50_000)
    assert rates.cost(under) == (150_000 * 3 + 50_000 * Decimal("0.3") + 1000 * 15) / M
    assert rates.cost(over) == (150_001 * 6 + 50_000 * Decimal("0.6")
                                + 1000 * Decimal("22.5")) / M


def test_price_in_force_at_the_request_time(book):
    """o3's price fell on 2025-06-10: a request is priced as of when it was made."""
    tokens = Tokens(input=1_000_000)
    before = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
    after = datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    assert book.cost("openai", "openai", "o3", tokens, at=before).usd == 10
    assert book.cost("openai", "openai", "o3", tokens, at=after).usd == 2


def test_an_unknown_model_is_unpriced_never_free(book):
    cost = book.cost("openai", "openai", "my-local-llama", Tokens(input=10, output=10))
    assert cost == UNPRICED and cost.usd is None and not cost.priced
    # No usage on a priced model is an exact $0, with its source.
    assert book.cost("openai", "openai", "gpt-4o", Tokens()) == Cost(
        Decimal(0), "genai-prices:openai/gpt-4o")


def test_provider_table_from_its_hosts_else_its_type(book):
    assert book.rates("groq", "openai", "llama-3.3-70b-versatile").source.startswith(
        "genai-prices:groq/")
    # chatgpt.com is no genai-prices host: the OpenAI table (Codex signed in with ChatGPT).
    assert book.rates("chatgpt", "openai", "gpt-5-codex").source == "genai-prices:openai/gpt-5"
    # A provider the book was not built with (removed by a reload) goes by its type.
    assert book.rates("gone", "anthropic", "claude-haiku-4-5").source == (
        "genai-prices:anthropic/claude-haiku-4-5")
    # The model that answered first, then the one asked for.
    assert book.rates("openai", "openai", "no-such-model", "gpt-4o").source.endswith("/gpt-4o")


# -- operator prices -----------------------------------------------------------------------

def test_operator_prices_override_and_add(tmp_path):
    config = tmp_path / "aibridge.toml"
    config.write_text("""
[prices."claude-sonnet-4-5*"]
input = 2.0
output = 10
cache_read = 0.2
cache_write = "2.5"

[prices."*-llama"]
input = 0.1
output = 0.2

[prices."my-llama"]
input = 0.3
output = 0.4
""")
    loaded, _ = load_config(config)
    book = PriceBook(loaded.prices, PROVIDERS)
    tokens = Tokens(input=1000, output=100, cache_read=500, cache_write=200, cache_write_1h=50)
    cost = book.cost("anthropic", "anthropic", "claude-sonnet-4-5-20250929", tokens)
    # The operator has no 1-hour rate: those writes are writes.
    assert cost == Cost((1000 * 2 + 100 * 10 + 500 * Decimal("0.2") + 200 * Decimal("2.5"))
                        / M, "operator:claude-sonnet-4-5*")
    # An exact name beats a glob; cache rates left out are the input rate.
    assert book.cost("openai", "openai", "MY-LLAMA", tokens) == Cost(
        (1700 * Decimal("0.3") + 100 * Decimal("0.4")) / M, "operator:my-llama")
    assert book.cost("openai", "openai", "big-llama", tokens).source == "operator:*-llama"
    # The operator wins over genai-prices whichever of the two models names it.
    assert book.rates("anthropic", "anthropic", "claude-x-2", "claude-sonnet-4-5").source == (
        "operator:claude-sonnet-4-5*")
    assert book.operator_globs == ["my-llama", "claude-sonnet-4-5*", "*-llama"]


@pytest.mark.parametrize(("toml", "message"), [
    ('[prices."gpt-x"]\ninput = -1\noutput = 1\n',
     "prices.gpt-x.input: Input should be greater than or equal to 0"),
    ('[prices."gpt-x"]\ninput = 1\n', "prices.gpt-x.output: Field required"),
    ('[prices."gpt-x"]\ninput = 1\noutput = 1\ncache_reed = 1\n',
     "prices.gpt-x.cache_reed: Extra inputs are not permitted"),
    ('[prices."gpt-x"]\ninput = "three"\noutput = 1\n', "prices.gpt-x.input: Input should be"),
    ('[prices."gpt-x"]\ninput = nan\noutput = 1\n', "prices.gpt-x.input"),
    ('[prices."gpt-x"]\ninput = true\noutput = 1\n', "prices.gpt-x.input"),
    ('[prices." "]\ninput = 1\noutput = 1\n', "is not a model name or glob"),
])
def test_bad_prices_are_a_clear_config_error(tmp_path, toml, message):
    config = tmp_path / "aibridge.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert message in str(error.value)


def test_price_config_values_are_exact_decimals():
    price = PriceConfig(input=0.3, output=3.75)
    assert price.input == Decimal("0.3") and price.output == Decimal("3.75")


# -- cheap on the request path ----------------------------------------------------------------

def test_lookups_are_cached_per_provider_and_model_and_bounded(monkeypatch):
    book = PriceBook(None, PROVIDERS)
    calls = []
    original = type(book._providers["openai"]).find_model

    def counting(self, model_ref, **kw):
        calls.append(model_ref)
        return original(self, model_ref, **kw)

    monkeypatch.setattr(type(book._providers["openai"]), "find_model", counting)
    for _ in range(3):
        book.rates("openai", "openai", "gpt-4o")
        book.rates("openai", "openai", "not-a-model")
    assert calls == ["gpt-4o", "not-a-model"]  # misses are cached too
    monkeypatch.setattr(prices_module, "CACHE_LIMIT", 5)
    for n in range(20):  # a client inventing model names
        book.rates("openai", "openai", f"invented-{n}")
    assert len(book._table_cache) <= 5 and len(book._operator_cache) <= 5


def test_worst_case_bounds_any_real_cost(book):
    rng = random.Random(3)
    for model in ("claude-sonnet-4-5", "claude-opus-4-1", "gpt-4o", "gpt-5"):
        ptype = "anthropic" if model.startswith("claude") else "openai"
        rates = book.rates(ptype, ptype, model)
        for _ in range(50):
            total_in, out = rng.randint(0, 400_000), rng.randint(0, 20_000)
            read = rng.randint(0, total_in)
            write = rng.randint(0, total_in - read)
            tokens = Tokens(input=total_in - read - write, output=out, cache_read=read,
                            cache_write=write, cache_write_1h=rng.randint(0, write))
            assert rates.cost(tokens) <= rates.worst_case(total_in, out)
    opus = book.rates("anthropic", "anthropic", "claude-opus-4-1")
    # 1-hour cache writes ($30) are the dearest input of Opus 4.1.
    assert opus.worst_case(1_000_000, 1_000_000) == Decimal(30 + 75)


def test_money_formats():
    assert format_usd(Decimal("0.000123")) == "$0.000123"
    assert format_usd(Decimal("1.2300")) == "$1.23"
    assert format_usd(Decimal("7.5E-8")) == "$0.000000075"
    assert format_usd(Decimal(0)) == "$0"
    assert format_usd(None) == "unpriced"
    assert short_usd(Decimal("0.00009375")) == "$0.0000938"
    assert short_usd(Decimal("12.346")) == "$12.35"
    assert short_usd(None) == "unpriced"


# -- exact decimals through records, spool and database ---------------------------------------

def ended_record(cost: Decimal | None, source: str | None = "genai-prices:openai/gpt-4o",
                 iid: str = "iid-1") -> InterceptionEnded:
    return InterceptionEnded(
        id=iid, ended_at=1_767_225_601.0, outcome="completed", status=200, error_type=None,
        error_message=None, credential_hint="sk-a...wxyz", credential_length=48,
        response_model="gpt-4o", response_id="r1", time_to_first_token=None, key_attempts=1,
        cost_usd=cost, price_source=source if cost is not None else None)


def test_the_spool_keeps_the_exact_decimal():
    cost = Decimal("0.000000075000000000000000001")  # beyond any float
    entry = new_entry(ended_record(cost))
    line = encode(entry)
    assert b'"cost_usd":"0.000000075000000000000000001"' in line
    assert decode(line).record.cost_usd == cost
    assert decode(encode(new_entry(ended_record(None)))).record.cost_usd is None
    # A number where money goes is refused rather than read through a float.
    with pytest.raises(ValueError):
        decode(line.replace(b'"0.000000075000000000000000001"', b"0.1"))
    # An older spool line without the fields reads as unpriced.
    old = line.replace(b',"cost_usd":"0.000000075000000000000000001"', b"").replace(
        b',"price_source":"genai-prices:openai/gpt-4o"', b"")
    assert decode(old).record.cost_usd is None


def test_sqlite_stores_the_decimal_as_text_and_reads_it_back_exactly(tmp_path: Path):
    engine = make_engine(resolve_url(f"sqlite:///{tmp_path / 'a.db'}"))
    upgrade(engine, "test")
    costs = [Decimal("0.1"), Decimal("0.2"), Decimal("0.000000075"), None]
    Store(engine).write([new_entry(ended_record(c, iid=f"i{n}")) for n, c in enumerate(costs)])
    with engine.connect() as connection:
        rows = dict(connection.execute(sa.select(schema.interception_ends.c.id,
                                                 schema.interception_ends.c.cost_usd)).all())
        raw = dict(connection.exec_driver_sql(
            "SELECT id, typeof(cost_usd) FROM interception_ends").all())
    engine.dispose()
    assert [rows[f"i{n}"] for n in range(4)] == costs
    assert raw == {"i0": "text", "i1": "text", "i2": "text", "i3": "null"}


# -- where cost shows -----------------------------------------------------------------------

def interception_of(model: str = "gpt-4o", provider_type: str = "openai") -> Interception:
    return Interception(provider=provider_type, provider_type=provider_type,
                        route="/v1/chat/completions", model=model, streaming=True,
                        actor=Actor("alice", {"Team": "ml"}),
                        credential=new_credential_info("centralized", "sk-test-0123456789abcdef"),
                        started_at=1_767_225_600.0)


def test_reporter_prices_the_answering_model_and_records_it(book):
    submitted = []
    reporter = Reporter(SimpleNamespace(submit=submitted.append), None, prices=book)
    interception = interception_of(model="gpt-4o")
    summary = ResponseSummary(model="gpt-4o-2024-08-06", input_tokens=1000, output_tokens=200,
                              cache_read_tokens=300)
    cost = reporter.price(interception, summary)
    assert cost == Cost(Decimal("0.0041250"), "genai-prices:openai/gpt-4o")
    reporter.ended(interception, outcome="completed", status=200, error_type=None,
                   error_message=None, summary=summary, key_attempts=1, time_to_first_token=None)
    (end,) = [r for r in submitted if isinstance(r, InterceptionEnded)]
    assert (end.cost_usd, end.price_source) == (cost.usd, cost.source)
    # Without prices (nothing configured yet) and for an unknown model: unpriced.
    assert Reporter(None, None).price(interception, summary) == UNPRICED
    assert reporter.price(interception_of(model="mystery"), ResponseSummary()) == UNPRICED


def test_comment_and_log_line_show_the_cost(caplog):
    interception = interception_of()
    summary = ResponseSummary(input_tokens=11, output_tokens=7, cache_read_tokens=3)
    cost = Cost(Decimal("0.00009375"), "genai-prices:openai/gpt-4o")
    text = flowview.comment("alice", interception, summary, "completed", None, cost)
    assert text.startswith("alice · gpt-4o · ok · 11→7 tok · $0.0000938 · openai · key ")
    assert " · unpriced · " in flowview.comment("alice", interception, summary, "completed",
                                                None, UNPRICED)
    from aibridge.observe import accesslog
    accesslog.configure("event-log")
    try:
        with caplog.at_level("INFO", logger="aibridge.access"):
            flowview.log("alice", interception, 200, summary, "completed", None, cost)
            flowview.log("alice", interception, 200, summary, "completed", None, UNPRICED)
    finally:
        accesslog.configure("off")
    assert caplog.messages[0].endswith(" in 11 out 7 outcome=completed cost=$0.00009375")
    assert caplog.messages[1].endswith(" outcome=completed cost=unpriced")
    with caplog.at_level("INFO", logger="aibridge.access"):
        accesslog.configure("event-log")
        try:
            flowview.log("alice", interception, 502, None, "failed", "x" * 5000, cost)
        finally:
            accesslog.configure("off")
    assert caplog.messages[2].endswith("… cost=$0.00009375")  # a long reason is cut, not it


def test_telemetry_counts_cost_by_actor_team_provider_model():
    reader = InMemoryMetricReader()
    tel = Telemetry.from_settings("none", metric_reader=reader)
    try:
        for iid, model, cost in (("a", "gpt-4o", Decimal("0.25")), ("b", "gpt-4o",
                                 Decimal("0.5")), ("c", "mystery", None)):
            tel.interception_started(InterceptionStarted(
                id=iid, started_at=1.0, actor_id="alice", actor_metadata={"Team": "ml"},
                provider="openai", provider_type="openai", route="/v1/chat/completions",
                model=model, streaming=False, transport="http", client="sdk",
                client_session_id=None, user_agent=None, credential_kind="centralized",
                credential_hint="sk-a...b", credential_length=40, correlating_tool_call_id=None),
                "api.openai.com", 443)
            tel.interception_ended(dataclasses.replace(ended_record(cost, iid=iid),
                                                       response_model=model))
        data = reader.get_metrics_data()
        found = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics}
    finally:
        tel.shutdown()
    cost_metric, unpriced = found["aibridge.cost"], found["aibridge.cost.unpriced"]
    assert cost_metric.unit == "USD"
    (point,) = cost_metric.data.data_points
    assert point.value == 0.75
    assert dict(point.attributes) == {"aibridge.actor.id": "alice", "aibridge.team": "ml",
                                      "aibridge.provider": "openai",
                                      "gen_ai.request.model": "gpt-4o"}
    (point,) = unpriced.data.data_points
    assert point.value == 1 and point.attributes["gen_ai.request.model"] == "mystery"
