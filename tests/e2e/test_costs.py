"""Cost per interception through a real mitmdump with the real SDKs, and `aibridge usage`'s
cost report (table, JSON, PostgreSQL sums, and the HTML page looked at in headless Chromium).

The fake provider answers with known token counts; each recorded cost must equal the amount
computed here by hand from the published prices, as an exact decimal; an unknown model is
recorded with cost NULL; an operator `[prices]` entry wins over the table; a reload applies a
changed price to the requests after it.
"""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aibridge.pricing import PriceBook, Tokens
from aibridge.recording.codec import new_entry
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import upgrade
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import InterceptionEnded, InterceptionStarted, Record, TokenUsage
from aibridge.recording.store import Store
from tests.e2e.harness import BOB_TOKEN, ROOT, BridgeProcess, provider_config
from tests.e2e.test_mitmweb import ARTIFACTS, chromium, wait_for
from tests.fakeprovider import FakeProvider, Reply

pytestmark = pytest.mark.timeout(240)

M = Decimal(1_000_000)
AIBRIDGE = str(ROOT / ".venv" / "bin" / "aibridge")
SCREENSHOT = ARTIFACTS / "usage-report.png"  # docs/usage-report.png is a copy of it
PRICES = """
[prices."claude-haiku-4-5*"]
input = 2.0
output = 4.0
cache_read = 0.5
cache_write = 3.0

[prices."house-model"]
input = 0.4
output = "1.6"
"""
HI = [{"role": "user", "content": "hi"}]
# An Anthropic answer with every kind of input: uncached, cache reads, 5-minute and 1-hour
# cache writes.
BIG_MESSAGE = {
    "id": "msg_big", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1200, "output_tokens": 350, "cache_read_input_tokens": 40_000,
              "cache_creation_input_tokens": 5000,
              "cache_creation": {"ephemeral_5m_input_tokens": 3000,
                                 "ephemeral_1h_input_tokens": 2000}}}


def recorded(db: Path) -> dict[str, dict[str, Any]]:
    """model -> the interception's start and end, by request model (one request each)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as connection:
            got = [dict(r._mapping) for r in connection.execute(sa.text(
                "SELECT i.model, i.actor_id, e.outcome, e.cost_usd, typeof(e.cost_usd) AS kind, "
                "e.price_source FROM interceptions i JOIN interception_ends e ON e.id = i.id "
                "ORDER BY i.started_at"))]
    finally:
        engine.dispose()
    return {r["model"]: r for r in got}


def test_recorded_costs_are_the_hand_computed_decimals(fake: FakeProvider,
                                                       make_bridge: Callable[..., BridgeProcess]
                                                       ) -> None:
    bridge = make_bridge(provider_config(fake.url, extra=PRICES))
    oai, ant = bridge.openai(), bridge.anthropic()

    # OpenAI chat, gpt-4o ($2.50 input, $1.25 cached input, $10 output per million): the fake
    # reports 11 prompt tokens, 3 of them cached, and 7 completion tokens.
    oai.chat.completions.create(model="gpt-4o", messages=HI)
    # OpenAI Responses, streamed, gpt-5 ($1.25, $0.125 cached, $10): same counts.
    with oai.responses.stream(model="gpt-5", input="hi") as stream:
        stream.get_final_response()
    # Anthropic, streamed, claude-sonnet-4-5 ($3 input, $0.30 cache read, $3.75 cache write,
    # $15 output): 11 uncached input, 3 cache read, 2 cache write, 7 output.
    with ant.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=HI) as stream:
        stream.get_final_message()
    # Anthropic with 1-hour cache writes ($6): 1200 input, 40k read, 3000 5-minute and 2000
    # 1-hour writes, 350 output; asked for by an alias, priced as the model that answered.
    fake.enqueue(Reply(body=BIG_MESSAGE))
    ant.messages.create(model="claude-sonnet-4-5-latest-alias", max_tokens=8, messages=HI)
    # No price anywhere: NULL, never 0.
    oai.chat.completions.create(model="acme-internal-1", messages=HI)
    # genai-prices knows claude-haiku-4-5 ($1, $0.10, $1.25, $5): the operator's price wins.
    bridge.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    # A model only the operator prices ("1.6" given as text: exact either way).
    bridge.openai(token=BOB_TOKEN).chat.completions.create(model="house-model", messages=HI)

    # The access log line says what each cost.
    bridge.wait_for_log(r"model=gpt-4o stream=False status=200 .* outcome=completed "
                        r"cost=\$0\.00009375\n")
    bridge.wait_for_log(r"model=acme-internal-1 stream=False status=200 .* "
                        r"outcome=completed cost=unpriced\n")
    assert bridge.stop() == 0

    got = recorded(bridge.workdir / "data" / "aibridge.db")
    expected = {
        "gpt-4o": ((8 * Decimal("2.5") + 3 * Decimal("1.25") + 7 * 10) / M,
                   "genai-prices:openai/gpt-4o"),
        "gpt-5": ((8 * Decimal("1.25") + 3 * Decimal("0.125") + 7 * 10) / M,
                  "genai-prices:openai/gpt-5"),
        "claude-sonnet-4-5": ((11 * 3 + 3 * Decimal("0.3") + 2 * Decimal("3.75") + 7 * 15) / M,
                              "genai-prices:anthropic/claude-sonnet-4-5"),
        "claude-sonnet-4-5-latest-alias": (
            (1200 * 3 + 40_000 * Decimal("0.3") + 3000 * Decimal("3.75") + 2000 * 6 + 350 * 15)
            / M, "genai-prices:anthropic/claude-sonnet-4-5"),
        "acme-internal-1": (None, None),
        "claude-haiku-4-5": ((11 * 2 + 3 * Decimal("0.5") + 2 * 3 + 7 * 4) / M,
                             "operator:claude-haiku-4-5*"),
        "house-model": ((8 * Decimal("0.4") + 3 * Decimal("0.4") + 7 * Decimal("1.6")) / M,
                        "operator:house-model"),
    }
    for model, (cost, source) in expected.items():
        row = got[model]
        assert row["outcome"] == "completed", row
        assert (None if row["cost_usd"] is None else Decimal(row["cost_usd"]), row[
            "price_source"]) == (cost, source), model
        # Exact decimal text in SQLite, never a float (REAL) nor 0 for the unpriced.
        assert row["kind"] == ("null" if cost is None else "text"), row
    assert expected["claude-sonnet-4-5-latest-alias"][0] == Decimal("0.0441")
    assert got["claude-sonnet-4-5"]["cost_usd"] == "0.0001464"
    assert got["house-model"]["actor_id"] == "bob"

    # The report: cost per model, unpriced apart, a total.
    report_config = bridge.workdir / "report.toml"
    report_config.write_text(
        f'[recording]\nurl = "sqlite:///{bridge.workdir}/data/aibridge.db"\n')
    by_model = {r["model"]: r for r in json.loads(subprocess.run(
        [AIBRIDGE, "usage", "--config", str(report_config), "--by", "model", "--format",
         "json"], capture_output=True, text=True, timeout=60, check=True).stdout)}
    assert Decimal(by_model["gpt-4o"]["cost"]) == expected["gpt-4o"][0]
    assert by_model["acme-internal-1"]["cost"] is None
    assert (by_model["acme-internal-1"]["unpriced"],
            by_model["acme-internal-1"]["unpriced_tokens"]) == (1, 8 + 3 + 7)
    table = subprocess.run([AIBRIDGE, "usage", "--config", str(report_config), "--by",
                            "team,provider"], capture_output=True, text=True, timeout=60,
                           check=True).stdout.splitlines()
    priced = sum((c for c, _ in expected.values() if c is not None), Decimal(0))
    assert table[-1].split()[0] == "total"
    assert f"${priced.quantize(Decimal('0.000001'))}" in table[-1].split()


def test_reload_changes_a_price_for_the_next_requests(fake: FakeProvider,
                                                      make_bridge: Callable[..., BridgeProcess]
                                                      ) -> None:
    bridge = make_bridge(provider_config(fake.url, extra=PRICES))
    oai = bridge.openai()
    oai.chat.completions.create(model="house-model", messages=HI)
    bridge.config_path.write_text(bridge.config_path.read_text().replace(
        'output = "1.6"', 'output = "2.4"'))
    bridge.wait_for_log(r"configuration reloaded", timeout=15)
    fake.enqueue(Reply(body={
        "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "house-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                  "prompt_tokens_details": {"cached_tokens": 3}}}))
    oai.chat.completions.create(model="house-model", messages=HI)
    assert bridge.stop() == 0
    engine = sa.create_engine(f"sqlite:///{bridge.workdir}/data/aibridge.db")
    with engine.connect() as connection:
        costs = [Decimal(c) for (c,) in connection.execute(sa.text(
            "SELECT e.cost_usd FROM interceptions i JOIN interception_ends e ON e.id = i.id "
            "ORDER BY i.started_at"))]
    engine.dispose()
    assert costs == [(11 * Decimal("0.4") + 7 * Decimal("1.6")) / M,
                     (11 * Decimal("0.4") + 7 * Decimal("2.4")) / M]


def test_cost_metric_from_the_running_proxy(fake: FakeProvider,
                                            make_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = make_bridge(provider_config(fake.url, extra='[telemetry]\nexporter = "console"\n'),
                         args=["--set", "bridge_access_log=off"])
    bridge.openai().chat.completions.create(model="gpt-4o", messages=HI)
    bridge.openai().chat.completions.create(model="acme-internal-1", messages=HI)
    bridge.stop()
    log = bridge.log()
    assert '"aibridge.cost.usd": "0.00009375"' in log  # the span, exact
    assert '"name": "aibridge.cost"' in log and '"unit": "USD"' in log
    assert '"name": "aibridge.cost.unpriced"' in log
    assert '"aibridge.team": "ml"' in log and '"aibridge.actor.id": "alice"' in log


def test_postgresql_sums_costs_exactly(postgres_url: str, tmp_path: Path) -> None:
    """NUMERIC on PostgreSQL: 0.1 + 0.2 is 0.3 there too, and a cost beyond a float's digits
    comes back whole."""
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    engine = make_engine(resolve_url(url))
    upgrade(engine, "test")
    tiny = Decimal("0.000000000000000000000001")
    records: list[Record] = []
    for n, cost in enumerate([Decimal("0.1"), Decimal("0.2"), tiny, None]):
        records += interception(f"pg{n}", "alice", "ml", "gpt-4o", 1_767_225_600.0 + n, cost)
    Store(engine).write([new_entry(r) for r in records])
    engine.dispose()
    config = tmp_path / "report.toml"
    config.write_text(f'[recording]\nurl = "{postgres_url}"\n')
    (row,) = json.loads(subprocess.run(
        [AIBRIDGE, "usage", "--config", str(config), "--by", "team", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    assert Decimal(row["cost"]) == Decimal("0.3") + tiny
    assert (row["team"], row["requests"], row["unpriced"]) == ("ml", 4, 1)


# -- the HTML report, as a person sees it ------------------------------------------------------

def interception(iid: str, actor: str, team: str | None, model: str, at: float,
                 cost: Decimal | None, tokens: Tokens | None = None,
                 provider_type: str = "openai", outcome: str = "completed") -> list[Record]:
    tokens = tokens or Tokens(input=11, output=7)
    raw_input = tokens.input + (tokens.cache_read if provider_type == "openai" else 0)
    return [
        InterceptionStarted(
            id=iid, started_at=at, actor_id=actor,
            actor_metadata={"Team": team} if team else {}, provider=provider_type,
            provider_type=provider_type, route="/v1/messages", model=model, streaming=True,
            transport="http", client="Claude Code", client_session_id=None, user_agent=None,
            credential_kind="centralized", credential_hint="sk-a...wxyz", credential_length=40,
            correlating_tool_call_id=None),
        TokenUsage(iid, None, raw_input, tokens.output, tokens.cache_read, tokens.cache_write,
                   {}, at + 1),
        InterceptionEnded(
            id=iid, ended_at=at + 2, outcome=outcome, status=200, error_type=None,
            error_message=None, credential_hint="sk-a...wxyz", credential_length=40,
            response_model=model, response_id=None, time_to_first_token=None, key_attempts=1,
            cost_usd=cost, price_source=None if cost is None else "genai-prices:test")]


TEAMS = {"alice": "ml", "bob": "ml", "carol": "platform", "dave": "platform", "erin": "web",
         "frank": "web", "grace": "data", "heidi": None}
MODELS = [("anthropic", "claude-sonnet-4-5", 5), ("anthropic", "claude-haiku-4-5", 2),
          ("openai", "gpt-5-codex", 4), ("openai", "gpt-4.1-mini", 2),
          ("openai", "local-llama", 1)]


def month_of_traffic(start: datetime) -> list[Record]:
    """A team's November: eight actors in four teams (one without), five models, one of them
    unpriced, priced by the real table. Seeded, so the picture is the same every run."""
    rng, book = random.Random(13), PriceBook()
    records: list[Record] = []
    for day in range(30):
        for actor, team in TEAMS.items():
            for _ in range(rng.randint(0, 24 if team == "ml" else 12)):
                ptype, model, _ = rng.choices(MODELS, weights=[w for *_, w in MODELS])[0]
                at = (start + timedelta(days=day, seconds=rng.randint(0, 86_000))).timestamp()
                uncached = rng.randint(2000, 40_000)
                read = int(uncached * rng.random() * (1.5 if ptype == "anthropic" else 0.8))
                write = rng.randint(0, 3000) if ptype == "anthropic" else 0
                tokens = Tokens(input=uncached, output=rng.randint(100, 4000), cache_read=read,
                                cache_write=write)
                cost = book.cost(ptype, ptype, model, tokens, at=at).usd
                outcome = rng.choices(["completed", "failed", "cancelled"], [40, 1, 1])[0]
                records += interception(str(uuid.uuid4()), actor, team, model, at, cost,
                                        tokens, ptype, outcome)
    return records


def test_html_report_in_headless_chromium(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "aibridge.db"
    engine = make_engine(resolve_url(f"sqlite:///{db}"))
    upgrade(engine, "test")
    records = month_of_traffic(datetime(2026, 11, 1, tzinfo=UTC))
    Store(engine).write([new_entry(r) for r in records])
    engine.dispose()
    config = tmp_path / "report.toml"
    config.write_text(f'[recording]\nurl = "sqlite:///{db}"\n')
    page = tmp_path / "usage.html"
    subprocess.run([AIBRIDGE, "usage", "--config", str(config), "--format", "html", "--output",
                    str(page)], capture_output=True, text=True, timeout=60, check=True)
    expected = json.loads(subprocess.run(
        [AIBRIDGE, "usage", "--config", str(config), "--by", "actor", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    top = max(expected, key=lambda r: Decimal(r["cost"] or 0))
    spend = sum(Decimal(r["cost"] or 0) for r in expected)

    with chromium(tmp_path, monkeypatch) as browser:
        try:
            seen = look_at_report(browser, page)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "usage-report-failure.png"))
            raise
    assert seen["charts"] == ["spend-per-day", "top-actors", "cache-hit-share",
                              "tokens-and-cost-per-model"]
    # Spend per day: 30 days, each stacked by team; the legend names every team.
    assert seen["days"] == 30
    assert set(seen["legend"]) == {"ml", "platform", "web", "data", "(no team)"}
    assert {"ml", "platform", "web", "data"} <= set(seen["stacked_teams"])
    # Top actors: the biggest spender first, with its amount as the report rounds it.
    assert seen["actors"][0] == top["actor"]
    assert seen["actor_values"][0].startswith(f"${Decimal(top['cost']):,.2f}")
    assert seen["spend_tile"] == f"${spend:,.2f}"
    # Per model: local-llama has no price and says so; token bars carry every kind.
    assert seen["model_costs"]["local-llama"] == "- unpriced"
    assert seen["model_costs"]["claude-sonnet-4-5"].startswith("$")
    assert {"input", "cache read", "cache write", "output"} <= set(seen["token_kinds"])
    assert seen["cache_labels"][0] == "all models" and seen["cache_values"][0].endswith("M")
    assert all(v.split("%")[0].replace(".", "").isdigit() for v in seen["cache_values"])
    # Nothing but the file itself was loaded (no CDN, font, script or image), and nothing in
    # it could load anything.
    assert seen["requests"] == [], seen["requests"]
    assert seen["loaders"] == 0 and seen["css_urls"] == 0 and seen["fonts"] == 0
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert SCREENSHOT.stat().st_size > 50_000


def look_at_report(browser: Any, page: Path) -> dict[str, Any]:
    """Open the page, read the charts as the DOM has them, keep a screenshot of the whole
    page, and list every resource the browser fetched."""
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Network.enable", {})
    browser.get(page.as_uri())
    wait_for("the charts", lambda: len(browser.find_elements(By.CSS_SELECTOR,
                                                             "svg[data-chart]")) == 4)

    def texts(selector: str, attribute: str | None = None) -> list[str]:
        found = browser.find_elements(By.CSS_SELECTOR, selector)
        return [e.get_attribute(attribute) if attribute else e.text for e in found]

    seen: dict[str, Any] = {
        "charts": texts("svg[data-chart]", "data-chart"),
        "days": len(set(texts('svg[data-chart="spend-per-day"] rect[data-day]', "data-day"))),
        "stacked_teams": texts('svg[data-chart="spend-per-day"] rect[data-team]', "data-team"),
        "legend": texts('svg[data-chart="spend-per-day"] text[data-legend]', "data-legend"),
        "actors": texts('svg[data-chart="top-actors"] text[data-label]', "data-label"),
        "actor_values": texts('svg[data-chart="top-actors"] text[data-value]'),
        "model_costs": dict(zip(
            texts('svg[data-chart="tokens-and-cost-per-model"] text[data-cost]', "data-cost"),
            texts('svg[data-chart="tokens-and-cost-per-model"] text[data-cost]'),
            strict=True)),
        "token_kinds": texts('svg[data-chart="tokens-and-cost-per-model"] rect[data-kind]',
                             "data-kind"),
        "cache_labels": texts('svg[data-chart="cache-hit-share"] text[data-label]',
                              "data-label"),
        "cache_values": texts('svg[data-chart="cache-hit-share"] text[data-value]'),
        "spend_tile": browser.find_element(By.CSS_SELECTOR, '[data-tile="spend"] .v').text,
    }
    # Every resource the page fetched, as the browser's resource timing lists them (a CDN
    # script, a web font or an image would each be one); elements and style rules that could
    # fetch something; web fonts the page declared.
    seen["requests"] = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    seen["loaders"] = browser.execute_script(
        "return document.querySelectorAll('script, link, img, iframe, object, embed, video, "
        "audio, source, image, use, [src], [href], [srcset]').length")
    seen["css_urls"] = browser.execute_script(
        "return [...document.styleSheets].flatMap(s => [...s.cssRules])"
        ".filter(r => /url\\(|@import|@font-face/i.test(r.cssText)).length")
    seen["fonts"] = browser.execute_script("return document.fonts.size")
    # The whole page in one picture: a viewport as tall as the page.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
    wait_for("the page laid out at full height", lambda: browser.execute_script(
        "return innerHeight >= document.documentElement.scrollHeight"))
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    return seen
