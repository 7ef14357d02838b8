"""The price table and cost arithmetic: exact Decimal dollars, integer micro-dollars for budgets.

A request's prompt length (input + cache-write + cache-read tokens) picks its price band, and the
whole request is priced at that band, as Anthropic prices long-context requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MILLION = Decimal(1_000_000)
RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_read")


class PriceTableError(ValueError):
    """The configured price table is malformed (names the model and the field)."""


@dataclass(frozen=True, slots=True)
class PriceBand:
    """USD per million tokens for prompts of at most `up_to_prompt_tokens` (None: no limit)."""

    up_to_prompt_tokens: int | None
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_read: Decimal


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    bands: tuple[PriceBand, ...]  # ascending by limit; the last one has no limit

    def band_for(self, prompt_tokens: int) -> PriceBand:
        for band in self.bands:
            if band.up_to_prompt_tokens is None or prompt_tokens <= band.up_to_prompt_tokens:
                return band
        return self.bands[-1]  # unreachable after validation: the last band is unbounded


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


def cost_usd(price: ModelPrice, usage: TokenUsage, *, discount: Decimal | None = None) -> Decimal:
    """Exact cost of one request; `discount` (0.50 for Message Batches) comes off every rate."""
    band = price.band_for(usage.prompt_tokens)
    total = (
        usage.input_tokens * band.input
        + usage.output_tokens * band.output
        + usage.cache_creation_input_tokens * band.cache_write_5m
        + usage.cache_read_input_tokens * band.cache_read
    ) / MILLION
    if discount:
        total *= 1 - discount
    return total


def to_micro_usd(amount: Decimal) -> int:
    """Whole micro-dollars, rounded up so budgets never under-count."""
    return math.ceil(amount * MILLION)


def worst_case_micro_usd(price: ModelPrice, *, prompt_tokens: int, max_tokens: int) -> int:
    """The most a request can cost: every prompt token at the dearer of input and cache-write
    rates (a cache write costs more than plain input), plus all `max_tokens` of output."""
    band = price.band_for(prompt_tokens)
    dearest_input = max(band.input, band.cache_write_5m)
    return to_micro_usd((prompt_tokens * dearest_input + max_tokens * band.output) / MILLION)


def parse_price_table(raw: Mapping[str, object]) -> dict[str, ModelPrice]:
    """Validate settings.LLM_PRICES into ModelPrice objects; raises PriceTableError."""
    table: dict[str, ModelPrice] = {}
    for model, bands_raw in raw.items():
        if not isinstance(bands_raw, list) or not bands_raw:
            raise PriceTableError(f"{model}: expected a non-empty list of price bands")
        bands: list[PriceBand] = []
        for index, band in enumerate(bands_raw):
            if not isinstance(band, Mapping):
                raise PriceTableError(f"{model} band {index}: expected an object")
            limit = band.get("up_to_prompt_tokens")
            if limit is not None and (not isinstance(limit, int) or limit <= 0):
                raise PriceTableError(f"{model} band {index}: up_to_prompt_tokens must be > 0")
            rates: dict[str, Decimal] = {}
            for field in RATE_FIELDS:
                try:
                    rates[field] = Decimal(str(band[field]))
                except (KeyError, InvalidOperation) as exc:
                    raise PriceTableError(f"{model} band {index}: bad or missing {field}") from exc
                if not rates[field].is_finite() or rates[field] < 0:
                    raise PriceTableError(f"{model} band {index}: {field} must be >= 0")
            bands.append(PriceBand(up_to_prompt_tokens=limit, **rates))
        limits = [b.up_to_prompt_tokens for b in bands]
        if limits[-1] is not None or None in limits[:-1]:
            raise PriceTableError(f"{model}: only the last band may (and must) be unbounded")
        bounded = [limit for limit in limits if limit is not None]
        if bounded != sorted(set(bounded)):
            raise PriceTableError(f"{model}: band limits must be strictly ascending")
        table[model] = ModelPrice(model=model, bands=tuple(bands))
    return table
