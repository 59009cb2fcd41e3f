"""What one request cost: its tokens, counted once each, priced by a model's rates, exactly.

Money is `Decimal` throughout (a float cannot hold $0.3 per million tokens exactly, and sums of
them drift). Prices are USD per million tokens (per thousand for requests and web searches),
as genai-prices and the operator's `[prices]` tables give them.

How tokens are priced mirrors genai-prices' own calculation (`ModelPrice.calc_price`), which
`tests/unit/test_pricing.py` holds equal to this one for every OpenAI and Anthropic model of
its table: each token is charged at the most specific rate the model has for it. Input is the
total input, of which cache reads and cache writes (of which 1-hour writes) are parts; a part
without its own rate is charged at the enclosing one (a model without a cache-read price
charges cached input as input). A tiered price applies the tier that the request's total
input (cache included) exceeds to all of that kind's tokens, as the providers bill it.

That calculation costs genai-prices ~170 µs per request; this one under 10 µs, so nothing slow
happens when a request ends. Models whose prices need more than this (audio tokens, for one)
are priced by genai-prices itself (`Rates(full=...)`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from aibridge.summary import ResponseSummary

# Token kinds (and per-request items) a rate sheet may price; `per` is what a price is for.
INPUT, CACHE_READ, CACHE_WRITE, CACHE_WRITE_1H, OUTPUT = (
    "input", "cache_read", "cache_write", "cache_write_1h", "output")
REQUEST, WEB_SEARCH = "request", "web_search"
UNITS = (INPUT, CACHE_READ, CACHE_WRITE, CACHE_WRITE_1H, OUTPUT, REQUEST, WEB_SEARCH)
PER = {INPUT: 1_000_000, CACHE_READ: 1_000_000, CACHE_WRITE: 1_000_000,
       CACHE_WRITE_1H: 1_000_000, OUTPUT: 1_000_000, REQUEST: 1000, WEB_SEARCH: 1000}
# Which kinds are parts of which (the input side nests; the rest stand alone).
_PARTS = {INPUT: (CACHE_READ, CACHE_WRITE, CACHE_WRITE_1H), CACHE_WRITE: (CACHE_WRITE_1H,)}
_DEPTH = {INPUT: 1, CACHE_READ: 2, CACHE_WRITE: 2, CACHE_WRITE_1H: 3, OUTPUT: 1, REQUEST: 0,
          WEB_SEARCH: 0}
_INPUT_SIDE = (INPUT, CACHE_WRITE, CACHE_WRITE_1H)  # the dearest of these bounds any input token

# Extra counters of the APIs (summary.py) that pricing reads.
EXTRA_CACHE_WRITE_1H = "cache_ephemeral_1h_input"  # Anthropic usage.cache_creation
EXTRA_WEB_SEARCH = "web_search_requests"  # Anthropic usage.server_tool_use
REASONING_EXTRAS = ("completion_reasoning", "output_reasoning")  # OpenAI chat, responses

_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Tokens:
    """One request's tokens, each counted once: `input` is input neither read from nor written
    to the cache, whatever the API reports (see `from_usage`)."""

    input: int = 0
    output: int = 0  # all output, reasoning included
    cache_read: int = 0
    cache_write: int = 0  # every cache write, 5-minute and 1-hour
    cache_write_1h: int = 0  # the part of cache_write at the 1-hour rate (Anthropic)
    extra: Mapping[str, int] = field(default=_EMPTY)  # the API's extra counters, raw

    @property
    def total_input(self) -> int:
        return self.input + self.cache_read + self.cache_write

    @property
    def reasoning(self) -> int:
        return sum(self.extra.get(name, 0) for name in REASONING_EXTRAS)

    @classmethod
    def from_usage(cls, input_tokens: int, output_tokens: int, cache_read_tokens: int,
                   cache_write_tokens: int, extra: Mapping[str, int] | None = None, *,
                   input_includes_cache: bool) -> Tokens:
        """From an API's raw figures (`ProviderApi.input_includes_cache`: OpenAI's input counts
        cached tokens, Anthropic's does not)."""
        read, write = max(0, cache_read_tokens), max(0, cache_write_tokens)
        uncached = max(0, input_tokens)
        if input_includes_cache:
            uncached = max(0, uncached - read - write)
        extra = extra or _EMPTY
        return cls(input=uncached, output=max(0, output_tokens), cache_read=read,
                   cache_write=write,
                   cache_write_1h=min(write, max(0, extra.get(EXTRA_CACHE_WRITE_1H, 0))),
                   extra=extra)

    @classmethod
    def from_summary(cls, summary: ResponseSummary, *, input_includes_cache: bool) -> Tokens:
        return cls.from_usage(summary.input_tokens, summary.output_tokens,
                              summary.cache_read_tokens, summary.cache_write_tokens,
                              summary.extra_tokens, input_includes_cache=input_includes_cache)


@dataclass(frozen=True, slots=True)
class Cost:
    """What a request cost in USD, and whose price said so. `usd is None`: no price is known
    for the model (unpriced), which is never the same as $0."""

    usd: Decimal | None
    source: str | None  # "genai-prices:<provider>/<model>" or "operator:<glob>"

    @property
    def priced(self) -> bool:
        return self.usd is not None


UNPRICED = Cost(None, None)


@dataclass(frozen=True, slots=True)
class Tiered:
    """A price that changes with the request's total input: the last tier whose `start` the
    total input exceeds applies to all tokens (genai-prices' TieredPrices)."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]  # (start, price), ascending start

    def at(self, total_input: int) -> Decimal:
        for start, price in reversed(self.tiers):
            if total_input > start:
                return price
        return self.base


Price = Decimal | Tiered


class Rates:
    """One model's prices, as in force at one time, for one provider. Immutable."""

    __slots__ = ("_order", "_tiered", "full", "full_when", "prices", "source")

    def __init__(self, source: str, prices: Mapping[str, Price], *,
                 full: Callable[[Tokens], Decimal] | None = None,
                 full_when: frozenset[str] = frozenset()) -> None:
        """`prices`: by kind (UNITS). `full` prices a request instead of this arithmetic:
        always when `full_when` is empty, else when one of those extra counters is present."""
        unknown = set(prices) - set(UNITS)
        if unknown:
            raise ValueError(f"unknown price kinds: {', '.join(sorted(unknown))}")
        self.source = source
        self.prices: Mapping[str, Price] = MappingProxyType(dict(prices))
        self.full, self.full_when = full, full_when
        # Most specific first, so a kind's own tokens are known before the enclosing kind's.
        units = sorted(prices, key=lambda u: -_DEPTH[u])
        self._order = tuple((unit, prices[unit], PER[unit],
                             tuple(p for p in _PARTS.get(unit, ()) if p in prices))
                            for unit in units)
        self._tiered = any(isinstance(p, Tiered) for p in prices.values())

    def __repr__(self) -> str:
        return f"Rates({self.source!r}, {dict(self.prices)!r})"

    def cost(self, tokens: Tokens) -> Decimal:
        """The exact cost in USD."""
        if self.full is not None and (not self.full_when
                                      or any(tokens.extra.get(k) for k in self.full_when)):
            return self.full(tokens)
        total_input = tokens.total_input
        counts = {INPUT: total_input, CACHE_READ: tokens.cache_read,
                  CACHE_WRITE: tokens.cache_write, CACHE_WRITE_1H: tokens.cache_write_1h,
                  OUTPUT: tokens.output, REQUEST: 1,
                  WEB_SEARCH: tokens.extra.get(EXTRA_WEB_SEARCH, 0)}
        own: dict[str, int] = {}
        total = Decimal(0)
        for unit, price, per, parts in self._order:
            count = max(0, counts[unit] - sum(own[p] for p in parts))
            own[unit] = count
            if count:
                rate = price.at(total_input) if isinstance(price, Tiered) else price
                total += rate * count / per
        return total

    def worst_case(self, input_tokens: int, output_tokens: int) -> Decimal:
        """An upper bound on what a request with this much input and output can cost, for a
        reservation: every input token at the dearest input-side rate (a cache write costs more
        than plain input), tiers chosen by `input_tokens`, plus any per-request price."""
        input_tokens, output_tokens = max(0, input_tokens), max(0, output_tokens)

        def rate(unit: str) -> Decimal | None:
            price = self.prices.get(unit)
            if price is None:
                return None
            return price.at(input_tokens) if isinstance(price, Tiered) else price

        input_rates = [r for u in _INPUT_SIDE if (r := rate(u)) is not None]
        total = Decimal(0)
        if input_rates:
            total += max(input_rates) * input_tokens / PER[INPUT]
        if (out := rate(OUTPUT)) is not None:
            total += out * output_tokens / PER[OUTPUT]
        if (per_request := rate(REQUEST)) is not None:
            total += per_request / PER[REQUEST]
        return total


def format_usd(value: Decimal | None) -> str:
    """`$0.000123` — the exact amount, no exponent, no trailing zeros; `unpriced` for None."""
    if value is None:
        return "unpriced"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"${text}"


def short_usd(value: Decimal | None) -> str:
    """A short amount for narrow places (mitmweb's comment column): cents from $0.01 on,
    else three significant digits (`$0.000123`)."""
    if value is None:
        return "unpriced"
    if value == 0:
        return "$0"
    if abs(value) >= Decimal("0.01"):
        return f"${value:.2f}"
    return format_usd(Decimal(f"{value:.2e}").normalize())
