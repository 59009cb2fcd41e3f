"""Which price applies to a model: the operator's `[prices]` tables first, then genai-prices'
offline snapshot (MIT, shipped inside the package: no network, ever).

A lookup resolves the provider's genai-prices entry from its hosts (api.openai.com is
"openai", api.groq.com "groq", ...), or from its type when no host is known to genai-prices (a
compatible gateway most likely serves the same models), and finds the model there. The result
is cached per (provider, model), so the request path sees a dict lookup; the cache is bounded
because model names come from clients. A price valid only from some date on is chosen by the
request's time.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from aibridge.config import PriceConfig
from aibridge.pricing.cost import (
    CACHE_READ,
    CACHE_WRITE,
    CACHE_WRITE_1H,
    EXTRA_WEB_SEARCH,
    INPUT,
    OUTPUT,
    REQUEST,
    UNPRICED,
    WEB_SEARCH,
    Cost,
    Price,
    Rates,
    Tiered,
    Tokens,
)
from aibridge.textsafe import printable

if TYPE_CHECKING:
    from genai_prices import types as gp

log = logging.getLogger(__name__)

GENAI_PREFIX, OPERATOR_PREFIX = "genai-prices:", "operator:"
CACHE_LIMIT = 4096  # (provider, model) entries; a client inventing model names cannot grow it

# genai-prices price keys this module prices itself, by kind (pricing.cost.UNITS).
_KINDS = {"input_mtok": INPUT, "cache_read_mtok": CACHE_READ, "cache_write_mtok": CACHE_WRITE,
          "cache_write_1h_mtok": CACHE_WRITE_1H, "output_mtok": OUTPUT,
          "requests_kcount": REQUEST, "web_searches_kcount": WEB_SEARCH}
# Keys for usage the bridge never reports: they price nothing here, as in genai-prices when
# the usage lacks them.
_NEVER_REPORTED = frozenset({
    "storage_searches_kcount", "input_image_mtok", "cache_image_read_mtok",
    "output_image_mtok", "audio_hours", "input_audio_hours", "input_mchars",
    "cache_audio_read_mtok"})
# Provider types that genai-prices knows under another id (hosts such as
# `bedrock-runtime.*.amazonaws.com` match no host pattern of its table).
_GENAI_IDS = {"bedrock": "aws"}
# Keys for usage only some responses report (extra counters): such a response is priced by
# genai-prices itself.
_EXTRA_PRICED = {"input_audio_mtok": "prompt_audio", "output_audio_mtok": "completion_audio"}


class PricedProvider(Protocol):
    """What pricing needs of a configured provider (providers.registry.Provider has it)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def hosts(self) -> Sequence[str]: ...


def operator_rates(glob: str, price: PriceConfig) -> Rates:
    prices: dict[str, Price] = {INPUT: price.input, OUTPUT: price.output}
    # Left out, a cache rate is the input rate: cached input counts as input.
    if price.cache_read is not None:
        prices[CACHE_READ] = price.cache_read
    if price.cache_write is not None:
        prices[CACHE_WRITE] = price.cache_write
    return Rates(f"{OPERATOR_PREFIX}{glob}", prices)


class _TableEntry:
    """One model of genai-prices for one provider; Rates per price set in force."""

    __slots__ = ("by_price", "model", "provider", "static")

    def __init__(self, provider: gp.Provider, model: gp.ModelInfo) -> None:
        from genai_prices.types import ModelPrice

        self.provider, self.model = provider, model
        self.by_price: dict[int, tuple[Any, Rates]] = {}
        self.static = (rates_of(provider, model, model.prices)
                       if isinstance(model.prices, ModelPrice) else None)

    def rates(self, at: float | None) -> Rates:
        if self.static is not None:
            return self.static
        when = datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)
        price = self.model.get_prices(when)
        cached = self.by_price.get(id(price))
        if cached is None or cached[0] is not price:
            cached = (price, rates_of(self.provider, self.model, price))
            self.by_price[id(price)] = cached
        return cached[1]


def rates_of(provider: gp.Provider, model: gp.ModelInfo, price: gp.ModelPrice) -> Rates:
    """genai-prices' price set as Rates; a set with prices this module does not compute gets
    genai-prices' own calculation as `full`."""
    from genai_prices.types import TieredPrices

    source = f"{GENAI_PREFIX}{provider.id}/{model.id}"
    prices: dict[str, Price] = {}
    foreign: list[str] = []
    for key, value in vars(price).items():
        if value is None or key.startswith("_"):
            continue
        kind = _KINDS.get(key)
        if kind is None:
            if key not in _NEVER_REPORTED:
                foreign.append(key)
            continue
        if isinstance(value, TieredPrices):
            prices[kind] = Tiered(value.base, tuple((t.start, t.price) for t in value.tiers))
        else:
            prices[kind] = value
    extra_priced = frozenset(extra for key, extra in _EXTRA_PRICED.items() if key in foreign)
    unknown = [key for key in foreign if key not in _EXTRA_PRICED]
    if not unknown and not extra_priced:
        return Rates(source, prices)

    def full(tokens: Tokens) -> Decimal:
        return price.calc_price(genai_usage(tokens))["total_price"]

    # Always genai-prices when a price is of a kind unknown here; else only for responses
    # that report the extra usage the price is for.
    return Rates(source, prices, full=full,
                 full_when=frozenset() if unknown else extra_priced)


def genai_usage(tokens: Tokens) -> Any:
    """The tokens as genai-prices counts them: input is the total, cache included."""
    from genai_prices import Usage

    values: dict[str, int] = {
        "input_tokens": tokens.total_input, "output_tokens": tokens.output,
        "cache_read_tokens": tokens.cache_read, "cache_write_tokens": tokens.cache_write,
        "cache_write_1h_tokens": tokens.cache_write_1h}
    extra = tokens.extra
    optional = {"input_audio_tokens": extra.get("prompt_audio", 0),
                "output_audio_tokens": extra.get("completion_audio", 0),
                "output_reasoning_tokens": tokens.reasoning,
                "web_searches": extra.get(EXTRA_WEB_SEARCH, 0)}
    values.update({k: v for k, v in optional.items() if v})
    return Usage(**{k: v for k, v in values.items() if v})


class PriceBook:
    """The prices of one configuration: built at start and on every reload, then read-only
    (its caches aside)."""

    def __init__(self, operator: Mapping[str, PriceConfig] | None = None,
                 providers: Iterable[PricedProvider] = (), *, table: bool = True) -> None:
        """`operator`: `[prices]` by model name or glob, in file order. `table`: use
        genai-prices (off: operator prices only)."""
        operator = operator or {}
        self._exact = {k.lower(): operator_rates(k, v) for k, v in operator.items()
                       if not _is_glob(k)}
        self._globs = [(re.compile(fnmatch.translate(k.lower())), operator_rates(k, v))
                       for k, v in operator.items() if _is_glob(k)]
        self._table = table
        self._providers: dict[str, gp.Provider | None] = {}
        self._snapshot: list[gp.Provider] = []
        if table:
            from genai_prices.data_snapshot import get_snapshot

            self._snapshot = get_snapshot().providers
            for p in providers:
                # A provider API may name its genai-prices entry (`prices_id`: "google" for
                # Gemini) for hosts the table does not know.
                self._providers[p.name] = self._genai_provider(
                    getattr(p, "prices_id", None) or p.type, p.hosts)
        self._operator_cache: dict[str, Rates | None] = {}
        self._table_cache: dict[tuple[str, str, str], _TableEntry | None] = {}

    @classmethod
    def from_config(cls, prices: Mapping[str, PriceConfig],
                    providers: Iterable[PricedProvider]) -> PriceBook:
        return cls(prices, providers)

    def describe(self) -> str:
        """One start-up line: where prices come from."""
        from importlib.metadata import version

        table = (f"genai-prices {version('genai-prices')} (offline table)" if self._table
                 else "no price table")
        globs = self.operator_globs
        operator = f"; operator [prices] for {printable(', '.join(globs), 300)}" if globs else ""
        return f"costs: {table}{operator}; a model without a price is recorded unpriced"

    @property
    def operator_globs(self) -> list[str]:
        return [r.source.removeprefix(OPERATOR_PREFIX)
                for r in [*self._exact.values(), *(rates for _, rates in self._globs)]]

    def rates(self, provider: str, provider_type: str, *models: str,
              at: float | None = None) -> Rates | None:
        """The rates for the first of `models` (e.g. the model that answered, then the one
        asked for) the operator prices, else the first genai-prices knows; None: unpriced.
        `provider` is the configured provider name, `at` the request's epoch time."""
        for model in models:
            if model and (rates := self._operator(model)) is not None:
                return rates
        if self._table:
            for model in models:
                if model and (entry := self._table_entry(provider, provider_type, model)):
                    return entry.rates(at)
        return None

    def cost(self, provider: str, provider_type: str, model: str | Sequence[str],
             tokens: Tokens, at: float | None = None) -> Cost:
        models = (model,) if isinstance(model, str) else tuple(model)
        rates = self.rates(provider, provider_type, *models, at=at)
        if rates is None:
            return UNPRICED
        try:
            return Cost(rates.cost(tokens), rates.source)
        except Exception:  # a price set genai-prices itself cannot apply to these tokens
            log.debug("pricing: %s failed for %s", rates.source, tokens, exc_info=True)
            return UNPRICED

    # -- lookups ------------------------------------------------------------------------------

    def _operator(self, model: str) -> Rates | None:
        key = model.lower()
        try:
            return self._operator_cache[key]
        except KeyError:
            pass
        rates = self._exact.get(key)
        if rates is None:
            rates = next((r for pattern, r in self._globs if pattern.match(key)), None)
        _bounded_put(self._operator_cache, key, rates)
        return rates

    def _table_entry(self, provider: str, provider_type: str, model: str) -> _TableEntry | None:
        key = (provider, provider_type, model)
        try:
            return self._table_cache[key]
        except KeyError:
            pass
        entry = None
        genai = (self._providers[provider] if provider in self._providers
                 else self._genai_provider(provider_type, ()))
        if genai is not None:
            found = genai.find_model(model, all_providers=self._snapshot)
            if found is not None:
                entry = _TableEntry(genai, found)
        _bounded_put(self._table_cache, key, entry)
        return entry

    def _genai_provider(self, provider_type: str, hosts: Sequence[str]) -> gp.Provider | None:
        for host in hosts:
            # A wildcard host (`*.openai.azure.com`) is matched with a sample label in its place.
            url = "https://" + ".".join("x" if label == "*" else label
                                        for label in host.split("."))
            for candidate in self._snapshot:
                if re.match(candidate.api_pattern, url):
                    return candidate
        genai_id = _GENAI_IDS.get(provider_type, provider_type)
        return next((p for p in self._snapshot if p.id == genai_id), None)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _bounded_put(cache: dict, key: object, value: object) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()  # rare (only with thousands of model names); refilled from here on
    cache[key] = value
