"""The gateway's configuration, read once from Django settings and validated loudly.

`config()` is cached per process; tests that override settings get a fresh one (setting_changed).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ledgerly.llm.pricing import ModelPrice, PriceTableError, parse_price_table, to_micro_usd

log = structlog.get_logger(__name__)

TIERS = ("small", "large")

# Models Anthropic has announced retirement dates for. A retired model is refused at start-up;
# one retiring within RETIREMENT_WARNING_DAYS is allowed with a warning, never as a default.
MODEL_RETIREMENTS: dict[str, dt.date] = {
    "claude-sonnet-4-5": dt.date(2026, 11, 30),
    "claude-sonnet-4-5-20250929": dt.date(2026, 11, 30),
}
RETIREMENT_WARNING_DAYS = 60

_FAMILY = re.compile(r"claude-(?:\d+-)*(haiku|sonnet|opus)")


def model_family(model: str) -> str:
    """Rate-limit family of a model id ('claude-haiku-5-5' -> 'haiku'); unknown ids stand alone."""
    match = _FAMILY.search(model)
    return match.group(1) if match else model


@dataclass(frozen=True, slots=True)
class RateLimits:
    rpm: int
    itpm: int
    otpm: int


@dataclass(frozen=True)
class GatewayConfig:
    models: dict[str, str]  # tier -> exact model id
    prices: dict[str, ModelPrice]
    batch_discount: Decimal
    run_budget_tokens: int
    run_budget_micro_usd: int
    customer_daily_micro_usd: int
    daily_micro_usd: int
    monthly_micro_usd: int
    warn_fraction: float
    downgrade_fraction: float
    breaker_failures: int
    breaker_window_seconds: int
    breaker_cooldown_seconds: int
    rate_limits: dict[str, RateLimits]  # family -> limits
    rate_burst_seconds: float
    max_retries: int
    retry_after_cap_seconds: float
    call_timeout_seconds: float
    api_key: str | None
    simulator_url: str | None = None
    backend: str = "simulator"  # "anthropic" or "simulator": who answers model calls
    prompt_caching: bool = True  # cache_control on the static system prompt and tools

    def price(self, model: str) -> ModelPrice:
        return self.prices[model]

    def limits_for(self, model: str) -> RateLimits:
        return self.rate_limits[model_family(model)]


def _rate_limits(raw: dict[str, Any]) -> dict[str, RateLimits]:
    limits: dict[str, RateLimits] = {}
    for family, values in raw.items():
        try:
            limits[family] = RateLimits(
                rpm=int(values["rpm"]), itpm=int(values["itpm"]), otpm=int(values["otpm"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"LLM_RATE_LIMITS[{family!r}] needs integer rpm, itpm and otpm, got {values!r}."
            ) from exc
        if min(limits[family].rpm, limits[family].itpm, limits[family].otpm) <= 0:
            raise ImproperlyConfigured(f"LLM_RATE_LIMITS[{family!r}] limits must be positive.")
    return limits


def check_model(setting: str, model: str, *, today: dt.date | None = None) -> None:
    """Refuse a retired model; warn about one retiring soon."""
    today = today or dt.datetime.now(dt.UTC).date()
    retires = MODEL_RETIREMENTS.get(model)
    if retires is None:
        return
    if today >= retires:
        raise ImproperlyConfigured(f"{setting}={model!r}: that model was retired on {retires}.")
    if (retires - today).days <= RETIREMENT_WARNING_DAYS:
        log.warning("llm.model_retiring", setting=setting, model=model, retires=str(retires))


def build_config() -> GatewayConfig:
    """Read and validate the gateway's settings; raises ImproperlyConfigured on any bad value."""
    models = {"small": settings.LLM_MODEL_SMALL, "large": settings.LLM_MODEL_LARGE}
    for tier, model in models.items():
        check_model(f"LLM_MODEL_{tier.upper()}", model)
    try:
        prices = parse_price_table(settings.LLM_PRICES)
    except PriceTableError as exc:
        raise ImproperlyConfigured(f"LLM_PRICES / LLM_PRICES_JSON: {exc}.") from exc
    rate_limits = _rate_limits(settings.LLM_RATE_LIMITS)
    for tier, model in models.items():
        if model not in prices:
            raise ImproperlyConfigured(
                f"LLM_MODEL_{tier.upper()}={model!r} has no entry in LLM_PRICES (LLM_PRICES_JSON)."
            )
        if model_family(model) not in rate_limits:
            raise ImproperlyConfigured(
                f"LLM_MODEL_{tier.upper()}={model!r}: no LLM_RATE_LIMITS for family "
                f"{model_family(model)!r}."
            )
    if not 0 < settings.LLM_BUDGET_WARN_FRACTION <= settings.LLM_BUDGET_DOWNGRADE_FRACTION <= 1:
        raise ImproperlyConfigured(
            "Need 0 < LLM_BUDGET_WARN_FRACTION <= LLM_BUDGET_DOWNGRADE_FRACTION <= 1."
        )
    return GatewayConfig(
        models=models,
        prices=prices,
        batch_discount=Decimal(settings.LLM_BATCH_DISCOUNT),
        run_budget_tokens=settings.LLM_RUN_BUDGET_TOKENS,
        run_budget_micro_usd=to_micro_usd(settings.LLM_RUN_BUDGET_USD),
        customer_daily_micro_usd=to_micro_usd(settings.LLM_CUSTOMER_DAILY_BUDGET_USD),
        daily_micro_usd=to_micro_usd(settings.LLM_DAILY_BUDGET_USD),
        monthly_micro_usd=to_micro_usd(settings.LLM_MONTHLY_BUDGET_USD),
        warn_fraction=settings.LLM_BUDGET_WARN_FRACTION,
        downgrade_fraction=settings.LLM_BUDGET_DOWNGRADE_FRACTION,
        breaker_failures=settings.LLM_BREAKER_FAILURES,
        breaker_window_seconds=settings.LLM_BREAKER_WINDOW_SECONDS,
        breaker_cooldown_seconds=settings.LLM_BREAKER_COOLDOWN_SECONDS,
        rate_limits=rate_limits,
        rate_burst_seconds=settings.LLM_RATE_LIMIT_BURST_SECONDS,
        max_retries=settings.LLM_MAX_RETRIES,
        retry_after_cap_seconds=settings.LLM_RETRY_AFTER_CAP_SECONDS,
        call_timeout_seconds=settings.LLM_CALL_TIMEOUT_SECONDS,
        api_key=settings.ANTHROPIC_API_KEY,
        simulator_url=settings.LLM_SIMULATOR_URL,
        backend=_backend(),
        prompt_caching=settings.LLM_PROMPT_CACHING,
    )


def _backend() -> str:
    """LLM_BACKEND, or when unset the key's presence (settings refuse "unset, no key" in
    production)."""
    backend = settings.LLM_BACKEND or ("anthropic" if settings.ANTHROPIC_API_KEY else "simulator")
    if backend not in ("anthropic", "simulator"):
        raise ImproperlyConfigured(f"LLM_BACKEND must be anthropic or simulator, got {backend!r}.")
    if backend == "anthropic" and not settings.ANTHROPIC_API_KEY:
        raise ImproperlyConfigured('LLM_BACKEND is "anthropic" but ANTHROPIC_API_KEY is not set.')
    return backend


@functools.cache
def config() -> GatewayConfig:
    return build_config()


def _reset(*, setting: str, **_: object) -> None:
    if setting.startswith("LLM_") or setting in ("ANTHROPIC_API_KEY", "REDIS_URL"):
        config.cache_clear()
        from ledgerly.llm import gateway  # late: gateway imports models

        gateway.reset()


setting_changed.connect(_reset)
