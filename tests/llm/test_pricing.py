from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from ledgerly.llm.conf import build_config, check_model, model_family
from ledgerly.llm.pricing import (
    PriceTableError,
    TokenUsage,
    cost_usd,
    parse_price_table,
    to_micro_usd,
    worst_case_micro_usd,
)


@pytest.fixture
def prices():
    return build_config().prices


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # Haiku 5.5, base band: 2,000 in x $0.10 + 500 out x $0.50 per MTok
        ("claude-haiku-5-5", TokenUsage(2_000, 500, 0, 0), "0.00045"),
        # + 10,000 cache-write x $0.125 + 50,000 cache-read x $0.01
        ("claude-haiku-5-5", TokenUsage(2_000, 500, 10_000, 50_000), "0.002200"),
        # exactly 100k prompt tokens is still the base band
        ("claude-haiku-5-5", TokenUsage(100_000, 0, 0, 0), "0.01"),
        # 100,001 prompt tokens: the whole request at the doubled band
        # (60,000 x 0.20 + 40,001 x 0.02 + 1,000 x 1.00) / 1e6
        ("claude-haiku-5-5", TokenUsage(60_000, 1_000, 0, 40_001), "0.01380002"),
        # Sonnet 5.5: 1,200 x $2 + 300 x $10 + 4,000 x $2.50 + 8,000 x $0.20
        ("claude-sonnet-5-5", TokenUsage(1_200, 300, 4_000, 8_000), "0.0170"),
        ("claude-sonnet-5-5", TokenUsage(0, 0, 0, 0), "0"),
    ],
)
def test_cost_matches_hand_computed_cases(prices, model, usage, expected):
    assert cost_usd(prices[model], usage) == Decimal(expected)


def test_batch_discount_halves_every_rate(prices):
    usage = TokenUsage(1_200, 300, 4_000, 8_000)
    assert cost_usd(prices["claude-sonnet-5-5"], usage, discount=Decimal("0.5")) == Decimal(
        "0.0085"
    )


@pytest.mark.parametrize(
    ("amount", "micro"),
    [("0.0000001", 1), ("0.000001", 1), ("0.0000011", 2), ("1.5", 1_500_000), ("0", 0)],
)
def test_micro_dollars_round_up(amount, micro):
    assert to_micro_usd(Decimal(amount)) == micro


def test_worst_case_prices_every_prompt_token_as_a_cache_write(prices):
    # 1,000 prompt tokens at $2.50 (cache write > input) + 500 output at $10 = $0.0075
    assert (
        worst_case_micro_usd(prices["claude-sonnet-5-5"], prompt_tokens=1_000, max_tokens=500)
        == 7_500
    )


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-haiku-5-5", "haiku"),
        ("claude-sonnet-5-5", "sonnet"),
        ("claude-3-5-haiku-20241022", "haiku"),
        ("custom-model", "custom-model"),
    ],
)
def test_model_family(model, family):
    assert model_family(model) == family


@pytest.mark.parametrize(
    "bands",
    [
        [],
        [
            {
                "up_to_prompt_tokens": 10,
                "input": 1,
                "output": 1,
                "cache_write_5m": 1,
                "cache_read": 1,
            }
        ],
        [
            {
                "up_to_prompt_tokens": None,
                "input": "x",
                "output": 1,
                "cache_write_5m": 1,
                "cache_read": 1,
            }
        ],
        [
            {
                "up_to_prompt_tokens": None,
                "input": -1,
                "output": 1,
                "cache_write_5m": 1,
                "cache_read": 1,
            }
        ],
        [{"up_to_prompt_tokens": None, "input": 1, "output": 1, "cache_write_5m": 1}],
    ],
)
def test_malformed_price_tables_are_refused(bands):
    with pytest.raises(PriceTableError):
        parse_price_table({"claude-x": bands})


def test_defaults_pin_current_models():
    config = build_config()
    assert config.models == {"small": "claude-haiku-5-5", "large": "claude-sonnet-5-5"}


def test_a_retired_model_is_refused_at_start_up():
    import datetime as dt

    with pytest.raises(ImproperlyConfigured, match="retired on 2026-11-30"):
        check_model("LLM_MODEL_LARGE", "claude-sonnet-4-5", today=dt.date(2026, 12, 1))


def test_a_model_without_a_price_is_refused():
    with (
        override_settings(LLM_MODEL_SMALL="claude-unpriced-1"),
        pytest.raises(ImproperlyConfigured, match="no entry in LLM_PRICES"),
    ):
        build_config()
