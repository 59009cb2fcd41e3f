"""`aibridge usage --format html`: one self-contained HTML page a manager reads — spend per day
stacked by team, the actors who spend most, tokens and cost per model, and how much input the
cache served.

Everything is in the one file: inline CSS and SVG charts drawn here (no script, no CDN, no web
font, no image), so it opens offline, can be mailed, and loads nothing from anywhere. Every
text that came from a client (actor ids, model names, team names) is escaped. Amounts shown are
rounded for reading; the exact figures are in `--format json`/`csv`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from aibridge.pricing import TEAM_KEY
from aibridge.recording.report import UsageRow, merge, total
from aibridge.textsafe import printable

# Tableau 10: distinct at a glance and for most colour-blind readers.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")
OTHER_COLOUR = "#c9c9c9"
TOKEN_KINDS = (("input", "input", "#4e79a7"), ("cache_read", "cache read", "#76b7b2"),
               ("cache_write", "cache write", "#edc948"), ("output", "output", "#f28e2b"))
NO_TEAM = "(no team)"
MAX_TEAMS = 8  # stacked series; the rest are "other teams"
MAX_BARS = 12  # actors and models listed; the rest are summed into one line
MAX_DAYS = 400  # a longer period is drawn per week
LABEL_LIMIT = 36
FONT = ('system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", '
        'Arial, sans-serif')


def render_html(rows: Sequence[UsageRow], *, generated_at: datetime | None = None,
                since: datetime | None = None, actor: str | None = None,
                team_key: str = TEAM_KEY, source: str | None = None) -> str:
    """`rows` grouped by every dimension (report.DIMENSIONS), as `usage_rows(by=DIMENSIONS)`
    gives them."""
    generated_at = generated_at or datetime.now(UTC)
    everything = total(rows)
    days = merge(rows, ("day",))
    period = _period(days, since)
    scope = f"actor {actor}" if actor else "all actors"
    parts = [
        _head(),
        "<body><main>",
        "<header><h1>AI usage and spend</h1>",
        f"<p class=sub>{_e(period)} · {_e(scope)} · generated "
        f"{generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        + (f" · {_e(source)}" if source else "") + "</p></header>",
        _tiles(everything),
    ]
    if not rows:
        parts.append("<p class=empty>No recorded interceptions in this period.</p>")
    else:
        parts += [
            _card("Spend per day, by team", _spend_per_day(rows, team_key),
                  f"Teams are the actors' <code>{_e(team_key)}</code> metadata. "
                  "Unpriced requests are not in these bars."),
            "<div class=pair>",
            _card("Top actors by spend", _top_actors(rows)),
            _card("Cache-hit share of input", _cache_share(rows),
                  "Input tokens read from the provider's prompt cache, of all input "
                  "(uncached, cache reads and cache writes)."),
            "</div>",
            _card("Tokens and cost per model", _per_model(rows)),
        ]
        if everything.unpriced:
            parts.append(_card("Unpriced", _unpriced_table(rows),
                               "Models without a price (neither genai-prices nor the "
                               "operator's [prices] know them): their tokens are counted here, "
                               "never as $0 in the spend above."))
    parts.append("<footer>Cost per request = its tokens at the model's price when it was made "
                 "(genai-prices' table, or the operator's <code>[prices]</code>), recorded "
                 "in exact decimal USD when the request ends. Exact figures: "
                 "<code>aibridge usage --format json</code>.</footer>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


# -- page parts --------------------------------------------------------------------------------

def _head() -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>AI usage and spend</title>
<style>
body {{ margin: 0; background: #f4f5f7; color: #1f2328; font: 14px/1.45 {FONT}; }}
main {{ max-width: 1240px; margin: 0 auto; padding: 24px 28px 40px; }}
h1 {{ font-size: 24px; margin: 0; }}
h2 {{ font-size: 16px; margin: 0 0 10px; }}
.sub {{ color: #59636e; margin: 4px 0 18px; }}
.tiles {{ display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; margin-bottom: 16px; }}
.tile {{ background: #fff; border-radius: 8px; padding: 12px 14px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }}
.tile .v {{ font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }}
.tile .k {{ color: #59636e; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }}
.tile .n {{ color: #59636e; font-size: 12px; }}
.card {{ background: #fff; border-radius: 8px; padding: 16px 18px; margin-bottom: 16px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }}
.pair .card {{ margin-bottom: 16px; }}
.note {{ color: #59636e; font-size: 12px; margin: 8px 0 0; }}
svg {{ display: block; width: 100%; height: auto; font-family: {FONT}; }}
svg text {{ fill: #1f2328; font-size: 12px; }}
svg .muted {{ fill: #59636e; font-size: 11px; }}
svg .value {{ font-variant-numeric: tabular-nums; }}
svg .grid {{ stroke: #e5e7eb; }}
table {{ border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }}
th, td {{ text-align: right; padding: 4px 8px; border-bottom: 1px solid #eceef1; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ color: #59636e; font-weight: 600; font-size: 12px; }}
code {{ font-size: 12px; background: #f0f1f3; padding: 1px 4px; border-radius: 3px; }}
footer {{ color: #59636e; font-size: 12px; margin-top: 8px; }}
.empty {{ color: #59636e; }}
</style></head>"""


def _tiles(t: UsageRow) -> str:
    share = t.cache_share
    tiles = [
        ("Spend", usd(t.cost), f"{t.requests - t.unpriced:,} priced requests"),
        ("Requests", f"{t.requests:,}", f"{t.failed:,} failed · {t.warmups:,} warm-ups"),
        ("Tokens", compact(t.tokens),
         f"{compact(t.input + t.cache_read + t.cache_write)} in · {compact(t.output)} out"),
        ("Cache-hit share", "-" if share is None else f"{share:.0%}",
         f"{compact(t.cache_read)} input tokens from the cache"),
        ("Unpriced", f"{t.unpriced:,}", f"requests · {compact(t.unpriced_tokens)} tokens"),
    ]
    return "<section class=tiles>" + "".join(
        f"<div class=tile data-tile=\"{_e(k.lower())}\"><div class=k>{_e(k)}</div>"
        f"<div class=v>{_e(v)}</div><div class=n>{_e(n)}</div></div>"
        for k, v, n in tiles) + "</section>"


def _card(title: str, body: str, note: str | None = None) -> str:
    return (f"<section class=card><h2>{_e(title)}</h2>{body}"
            + (f"<p class=note>{note}</p>" if note else "") + "</section>")


# -- charts ------------------------------------------------------------------------------------

@dataclass
class _Svg:
    width: int
    height: int
    name: str  # data-chart, for tests and styling
    label: str  # what a screen reader says
    items: list[str]

    def __str__(self) -> str:
        return (f'<svg viewBox="0 0 {self.width} '
                f'{self.height}" role="img" aria-label="{_e(self.label)}" '
                f'data-chart="{_e(self.name)}"><title>{_e(self.label)}</title>'
                + "".join(self.items) + "</svg>")


def _spend_per_day(rows: Sequence[UsageRow], team_key: str) -> str:
    by_day_team = merge(rows, ("day", "team"))
    team_spend: dict[str, Decimal] = {}
    for row in by_day_team:
        team = row.team or NO_TEAM
        team_spend[team] = team_spend.get(team, Decimal(0)) + (row.cost or 0)
    ranked = sorted(team_spend, key=lambda t: (-team_spend[t], t))
    shown = ranked if len(ranked) <= MAX_TEAMS + 1 else ranked[:MAX_TEAMS]
    series = [*shown, *(["other teams"] if len(ranked) > len(shown) else [])]
    colour = {team: PALETTE[i % len(PALETTE)] for i, team in enumerate(shown)}
    colour["other teams"] = OTHER_COLOUR

    days = _day_axis([row.day for row in by_day_team if row.day])
    weekly = len(days) > MAX_DAYS
    if weekly:
        days = sorted({_week(d) for d in days})
    stacks: dict[str, dict[str, Decimal]] = {d: {} for d in days}
    for row in by_day_team:
        if not row.day or not row.cost:
            continue
        day = _week(row.day) if weekly else row.day
        team = row.team or NO_TEAM
        team = team if team in colour else "other teams"
        stacks[day][team] = stacks[day].get(team, Decimal(0)) + row.cost

    width, left, right, top = 1180, 64, 12, 12
    spent = {team: _others(team_spend, shown) if team == "other teams" else team_spend[team]
             for team in series}
    plot_w, plot_h = width - left - right, 230
    legend, legend_h = _legend([(f"{_label(team, 24)} {usd(spent[team])}", colour[team], team)
                                for team in series], left, width - right, top + plot_h + 30)
    height = top + plot_h + 30 + legend_h
    peak = max((sum(s.values(), Decimal(0)) for s in stacks.values()), default=Decimal(0))
    ticks = _ticks(float(peak))
    scale = plot_h / ticks[-1] if ticks[-1] else 0
    items = _y_axis(ticks, left, top, plot_w, plot_h, lambda v: usd(Decimal(str(v))))
    slot = plot_w / max(1, len(days))
    bar = max(1.0, min(48.0, slot * 0.72))
    label_every = max(1, math.ceil(len(days) / 16))
    for n, day in enumerate(days):
        x = left + n * slot + (slot - bar) / 2
        y = top + plot_h
        day_total = sum(stacks[day].values(), Decimal(0))
        for team in series:
            value = stacks[day].get(team)
            if not value:
                continue
            h = float(value) * scale
            y -= h
            items.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{colour[team]}" data-team="{_e(team)}" data-day="{_e(day)}">'
                         f"<title>{_e(day)} · {_e(_label(team))}: {usd(value)}</title></rect>")
        if day_total and len(days) <= 31:
            items.append(f'<text class="muted value" x="{x + bar / 2:.1f}" y="{y - 4:.1f}" '
                         f'text-anchor="middle">{usd(day_total)}</text>')
        if n % label_every == 0:
            text = ("wk " if weekly else "") + day[5:]
            items.append(f'<text class=muted x="{left + n * slot + slot / 2:.1f}" '
                         f'y="{top + plot_h + 16}" text-anchor="middle">{_e(text)}</text>')
    items += legend
    return str(_Svg(width, height, "spend-per-day",
                    "Spend per " + ("week" if weekly else "day") + " stacked by team", items))


def _top_actors(rows: Sequence[UsageRow]) -> str:
    actors = merge(rows, ("actor",))
    actors.sort(key=lambda r: (-(r.cost or 0), -r.tokens, r.actor or ""))
    shown, rest = actors[:MAX_BARS], actors[MAX_BARS:]
    lines = [(row.actor or "?", row) for row in shown]
    if rest:
        lines.append((f"{len(rest)} more actors", total(rest)))
    return _hbars("top-actors", "Top actors by spend", lines,
                  value=lambda r: float(r.cost or 0),
                  text=lambda r: usd(r.cost) + (f"  (+{r.unpriced} unpriced)"
                                                if r.unpriced else ""),
                  colour=PALETTE[0])


def _cache_share(rows: Sequence[UsageRow]) -> str:
    models = [m for m in merge(rows, ("model",)) if m.cache_share is not None]
    models.sort(key=lambda r: (-(r.input + r.cache_read + r.cache_write), r.model or ""))
    lines = [("all models", total(rows))] + [(m.model or "?", m) for m in models[:MAX_BARS]]
    lines = [(name, row) for name, row in lines if row.cache_share is not None]
    return _hbars("cache-hit-share", "Cache-hit share of input tokens", lines,
                  value=lambda r: r.cache_share or 0.0,
                  text=lambda r: (f"{r.cache_share or 0:.1%} of "
                                  f"{compact(r.input + r.cache_read + r.cache_write)}"),
                  colour=PALETTE[3], limit=1.0)


def _hbars(name: str, label: str, lines: Sequence[tuple[str, UsageRow]], *,
           value: Callable[[UsageRow], float], text: Callable[[UsageRow], str], colour: str,
           limit: float | None = None) -> str:
    width, row_h, left = 580, 26, 170
    value_w = 150
    height = max(1, len(lines)) * row_h + 8
    peak = limit or max((value(row) for _, row in lines), default=0.0) or 1.0
    plot_w = width - left - value_w
    items = []
    for n, (who, row) in enumerate(lines):
        y = 4 + n * row_h
        w = plot_w * value(row) / peak
        items.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" '
                     f'data-label="{_e(who)}">{_e(_label(who, 24))}</text>')
        items.append(f'<rect x="{left}" y="{y + 4}" width="{plot_w}" height="16" rx="3" '
                     'fill="#f0f1f3"/>')
        items.append(f'<rect x="{left}" y="{y + 4}" width="{max(0.0, w):.1f}" height="16" '
                     f'rx="3" fill="{colour}"><title>{_e(who)}: {_e(text(row))}</title></rect>')
        items.append(f'<text class=value x="{left + plot_w + 8}" y="{y + 16}" '
                     f'data-value="{_e(who)}">{_e(text(row))}</text>')
    return str(_Svg(width, height, name, label, items))


def _per_model(rows: Sequence[UsageRow]) -> str:
    models = merge(rows, ("model",))
    models.sort(key=lambda r: (-(r.cost or 0), -r.tokens, r.model or ""))
    shown, rest = models[:MAX_BARS], models[MAX_BARS:]
    lines = [(row.model or "?", row) for row in shown]
    if rest:
        lines.append((f"{len(rest)} more models", total(rest)))
    width, row_h, left = 1180, 28, 220
    token_w, cost_x = 560, left + 560 + 150
    cost_w = width - cost_x - 150
    legend, legend_h = _legend([(kind, colour, kind) for _f, kind, colour in TOKEN_KINDS],
                               left, width, 22 + len(lines) * row_h + 8)
    height = 22 + len(lines) * row_h + 8 + legend_h
    peak_tokens = max((row.tokens for _, row in lines), default=0) or 1
    peak_cost = max((float(row.cost or 0) for _, row in lines), default=0.0) or 1.0
    items = [f'<text class=muted x="{left}" y="14">tokens by kind</text>',
             f'<text class=muted x="{cost_x}" y="14">cost</text>']
    for n, (model, row) in enumerate(lines):
        y = 22 + n * row_h
        items.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" '
                     f'data-label="{_e(model)}">{_e(_label(model, 30))}</text>')
        x = float(left)
        for field, kind, colour in TOKEN_KINDS:
            count = getattr(row, field)
            if not count:
                continue
            w = token_w * count / peak_tokens
            items.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="16" '
                         f'fill="{colour}" data-kind="{kind}"><title>{_e(model)} · {kind}: '
                         f"{count:,} tokens</title></rect>")
            x += w
        items.append(f'<text class=value x="{x + 6:.1f}" y="{y + 16}" '
                     f'data-tokens="{_e(model)}">{compact(row.tokens)}</text>')
        w = cost_w * float(row.cost or 0) / peak_cost
        items.append(f'<rect x="{cost_x}" y="{y + 4}" width="{w:.1f}" height="16" rx="3" '
                     f'fill="{PALETTE[4]}"><title>{_e(model)}: {usd(row.cost)}</title></rect>')
        unpriced = " unpriced" if row.cost is None and row.unpriced else ""
        items.append(f'<text class=value x="{cost_x + w + 6:.1f}" y="{y + 16}" '
                     f'data-cost="{_e(model)}">{usd(row.cost)}{unpriced}</text>')
    items += legend
    return str(_Svg(width, height, "tokens-and-cost-per-model", "Tokens and cost per model",
                    items))


def _unpriced_table(rows: Sequence[UsageRow]) -> str:
    models = [m for m in merge(rows, ("provider", "model")) if m.unpriced]
    models.sort(key=lambda r: (-r.unpriced_tokens, r.model or ""))
    body = "".join(f"<tr><td>{_e(_label(m.model or '?', 60))}</td><td>{_e(m.provider or '')}"
                   f"</td><td>{m.unpriced:,}</td><td>{m.unpriced_tokens:,}</td></tr>"
                   for m in models)
    return ("<table data-table=unpriced><tr><th>model</th><th>provider</th><th>requests</th>"
            f"<th>tokens</th></tr>{body}</table>")


def _legend(entries: Sequence[tuple[str, str, str]], left: int, right: int, top: int
            ) -> tuple[list[str], int]:
    """Swatches with labels (text, colour, data-legend key) from `top` down, in rows that fit
    between `left` and `right`. Returns the items and their height."""
    items, x, row = [], left, 0
    for text, colour, key in entries:
        width = 34 + 7 * len(text)  # about 7 px a character at 12 px
        if x + width > right and x > left:
            x, row = left, row + 1
        y = top + row * 20 + 12
        items.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" rx="2" '
                     f'fill="{colour}"/>')
        items.append(f'<text x="{x + 16}" y="{y}" data-legend="{_e(key)}">{_e(text)}</text>')
        x += width
    return items, (row + 1) * 20 if entries else 0


def _y_axis(ticks: list[float], left: int, top: int, plot_w: int, plot_h: int,
            fmt: Callable[[float], str]) -> list[str]:
    items = []
    peak = ticks[-1] or 1
    for tick in ticks:
        y = top + plot_h - plot_h * tick / peak
        items.append(f'<line class=grid x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/>')
        items.append(f'<text class=muted x="{left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{_e(fmt(tick))}</text>')
    return items


# -- numbers and words ------------------------------------------------------------------------

def usd(value: Decimal | None) -> str:
    """Dollars as a person reads them: $1,234 · $12.35 · $0.12 · $0.0042; "-" for none."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    if abs(value) >= 1000:
        return f"${value:,.0f}"
    if abs(value) >= Decimal("0.01"):
        return f"${value:,.2f}"
    return f"${value:.2g}" if abs(value) >= Decimal("0.0001") else f"${value:.1e}"


def compact(n: int) -> str:
    """12 · 3.4k · 5.6M · 7.8B tokens."""
    for limit, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1000, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}".replace(".0" + suffix, suffix)
    return str(n)


def _ticks(peak: float) -> list[float]:
    """0 and 4-ish round steps up to at least `peak`."""
    if peak <= 0:
        return [0.0, 1.0]
    raw = peak / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    count = math.ceil(peak / step - 1e-9)
    return [round(step * i, 10) for i in range(count + 1)]


def _day_axis(days: Sequence[str]) -> list[str]:
    """Every UTC day from the first to the last (a day without traffic is a gap, not skipped)."""
    if not days:
        return []
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    span = min((last - first).days, 3660)
    return [(first + timedelta(days=n)).isoformat() for n in range(span + 1)]


def _week(day: str) -> str:
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


def _others(spend: dict[str, Decimal], shown: Sequence[str]) -> Decimal:
    return sum((v for k, v in spend.items() if k not in shown), Decimal(0))


def _period(days: Sequence[UsageRow], since: datetime | None) -> str:
    recorded = sorted(row.day for row in days if row.day)
    if since is not None:
        start = f"since {since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        return start + (f" (traffic {recorded[0]} to {recorded[-1]})" if recorded else "")
    if recorded:
        return f"{recorded[0]} to {recorded[-1]} (UTC days)"
    return "no traffic recorded"


def _label(text: str, limit: int = LABEL_LIMIT) -> str:
    return printable(text, limit=limit)


def _e(text: object) -> str:
    return html.escape(printable(str(text), limit=2000), quote=True)

