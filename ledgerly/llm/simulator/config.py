"""Simulator settings: latency, random faults, mode, seed, rate limits, batch delay.

Read from `LLM_SIMULATOR_*` environment variables by `SimulatorConfig.from_env()`; tests build a
`SimulatorConfig(...)` directly. A bad value stops start-up with ImproperlyConfigured naming the
variable (through `ledgerly.env`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ledgerly import env

MODES = ("competent", "adversarial")

# Faults that can be chosen at random by LLM_SIMULATOR_FAULT_RATE. `timeout` and the stream/tool
# faults are left out by default because they change what a caller sees beyond "retry later".
DEFAULT_RANDOM_FAULTS = ("overloaded", "rate_limited", "server_error")


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class SimulatorConfig:
    """How one simulator instance behaves. All fields have test-friendly defaults."""

    latency_median_ms: float = 0.0
    latency_sigma: float = 0.5
    fault_rate: float = 0.0
    random_faults: tuple[str, ...] = DEFAULT_RANDOM_FAULTS
    mode: str = "competent"
    seed: int = 0
    # Per-minute limits per model, applied as continuously refilled token buckets (as the API
    # does). Requests beyond them get a real 429; the headers report what is left.
    requests_per_minute: int = 4000
    input_tokens_per_minute: int = 2_000_000
    output_tokens_per_minute: int = 400_000
    # Seconds a new batch stays `in_progress` before its results exist (0 = at once).
    batch_delay_s: float = 0.0
    # Default retry-after (s) for 429/529 faults when the request does not say.
    retry_after_s: float = 2.0
    # Clocks are injectable so tests can move the cache TTL and the retirement dates.
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    today: Callable[[], dt.date] = field(default=_utc_today, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    @classmethod
    def from_env(cls, **overrides: object) -> SimulatorConfig:
        """Settings from LLM_SIMULATOR_* variables; keyword overrides win."""
        values: dict[str, object] = {
            "latency_median_ms": env.floating("LLM_SIMULATOR_LATENCY_MEDIAN_MS", 0.0),
            "latency_sigma": env.floating("LLM_SIMULATOR_LATENCY_SIGMA", 0.5),
            "fault_rate": env.floating("LLM_SIMULATOR_FAULT_RATE", 0.0),
            "random_faults": tuple(
                env.string_list("LLM_SIMULATOR_RANDOM_FAULTS", list(DEFAULT_RANDOM_FAULTS))
            ),
            "mode": env.string("LLM_SIMULATOR_MODE", "competent", choices=list(MODES)),
            "seed": env.integer("LLM_SIMULATOR_SEED", 0),
            "requests_per_minute": env.integer("LLM_SIMULATOR_RPM", 4000, minimum=1),
            "input_tokens_per_minute": env.integer("LLM_SIMULATOR_INPUT_TPM", 2_000_000, minimum=1),
            "output_tokens_per_minute": env.integer("LLM_SIMULATOR_OUTPUT_TPM", 400_000, minimum=1),
            "batch_delay_s": env.floating("LLM_SIMULATOR_BATCH_DELAY_S", 0.0),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        from django.core.exceptions import ImproperlyConfigured

        from .faults import FAULTS

        if not 0.0 <= self.fault_rate <= 1.0:
            raise ImproperlyConfigured(
                f"LLM_SIMULATOR_FAULT_RATE must be between 0 and 1, got {self.fault_rate}"
            )
        if self.mode not in MODES:
            raise ImproperlyConfigured(f"LLM_SIMULATOR_MODE must be one of {MODES}")
        unknown = [name for name in self.random_faults if name not in FAULTS]
        if unknown:
            raise ImproperlyConfigured(
                f"LLM_SIMULATOR_RANDOM_FAULTS has unknown faults {unknown}; known: {FAULTS}"
            )
