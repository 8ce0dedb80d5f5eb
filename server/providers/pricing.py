"""USD per million input/output tokens per model, and the cost of a turn's usage.

Prices are list prices at the time of writing and are only an estimate; the deployment can override or add
models (``PriceTable(overrides)``). A model is looked up by its vendor spelling (Bedrock and OpenRouter ids
are reduced to it) and then by the longest known prefix, so dated snapshots find their family's price.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.providers.registry import canonical
from server.providers.types import Usage

# model prefix → (input USD / Mtok, output USD / Mtok)
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4": (15.0, 75.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-haiku": (0.25, 1.25),
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.4),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "o1": (15.0, 60.0),
    "o3": (2.0, 8.0),
    "o3-mini": (1.1, 4.4),
    "o4-mini": (1.1, 4.4),
    "grok-4": (3.0, 15.0),
    "grok-3": (3.0, 15.0),
    "grok-3-mini": (0.3, 0.5),
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.3, 2.5),
    "gemini-2.5-flash-lite": (0.1, 0.4),
    "gemini-2.0-flash": (0.1, 0.4),
}


class PriceTable:
    def __init__(self, overrides: Mapping[str, tuple[float, float]] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}
        self._by_length = sorted(self._prices, key=len, reverse=True)

    def price(self, model: str) -> tuple[float, float] | None:
        """(input, output) USD per million tokens, or None for an unknown (e.g. local) model."""
        name = canonical(model).lower()
        if name in self._prices:
            return self._prices[name]
        for prefix in self._by_length:
            if name.startswith(prefix) and (len(name) == len(prefix) or name[len(prefix)] in "-.:@"):
                return self._prices[prefix]
        return None

    def cost_usd(self, model: str, usage: Usage) -> float:
        price = self.price(model)
        if price is None:
            return 0.0
        return (usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1_000_000


DEFAULT_TABLE = PriceTable()


def cost_usd(model: str, usage: Usage, table: PriceTable = DEFAULT_TABLE) -> float:
    """Estimated cost of ``usage`` on ``model`` (0.0 when the model's price is unknown)."""
    return table.cost_usd(model, usage)
