"""What requests cost: token counts priced by genai-prices' offline table or the operator's
`[prices]`, in exact decimal USD. `cost` is the arithmetic, `prices` the lookup."""

from aibridge.pricing.cost import (
    UNPRICED,
    Cost,
    Rates,
    Tiered,
    Tokens,
    format_usd,
    short_usd,
)
from aibridge.pricing.prices import PriceBook, PricedProvider

# The actor metadata key naming an actor's team (the report's and telemetry's `team`).
TEAM_KEY = "Team"

__all__ = ["TEAM_KEY", "UNPRICED", "Cost", "PriceBook", "PricedProvider", "Rates", "Tiered",
           "Tokens", "format_usd", "short_usd"]
