"""Functions run in separate processes (spawned) by the gateway's race tests.

Each opens its own Redis connection from the URL it is given, as a separate worker would.
"""

from __future__ import annotations

import time

import redis

from ledgerly.llm.breaker import CircuitBreaker
from ledgerly.llm.budget import Budgets, Candidate, Limits, Reservation
from ledgerly.llm.conf import RateLimits
from ledgerly.llm.limiter import RateLimiter


def reserve_many(
    redis_url: str, limits: Limits, cost: int, attempts: int, start_at: float
) -> list[int]:
    """Try `attempts` reservations of `cost`; settle each to its full cost. Returns the costs
    of the reservations that were granted."""
    budgets = Budgets(redis.Redis.from_url(redis_url), limits)
    granted = []
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(attempts):
        outcome = budgets.reserve([Candidate(cost, 10, large=False)], run_id="race")
        if isinstance(outcome, Reservation):
            budgets.settle(outcome, micro_usd=cost, tokens=10)
            granted.append(cost)
    return granted


def hammer_limiter(
    redis_url: str, limits: RateLimits, burst_seconds: float, until: float
) -> list[float]:
    """Take requests from the shared limiter as fast as it allows until `until` (wall clock);
    returns the times they were granted."""
    limiter = RateLimiter(redis.Redis.from_url(redis_url), burst_seconds=burst_seconds)
    granted = []
    while time.time() < until:
        permit, wait = limiter.try_acquire("race", limits, input_tokens=1, output_tokens=1)
        if permit is not None:
            granted.append(time.time())
        else:
            time.sleep(min(wait, max(0.0, until - time.time())))
    return granted


def fail_model_calls(redis_url: str, model: str, failures: int) -> str:
    breaker = CircuitBreaker(
        redis.Redis.from_url(redis_url),
        failures=failures,
        window_seconds=60,
        cooldown_seconds=30,
        probe_lease_seconds=5,
    )
    result = ""
    for _ in range(failures):
        result = breaker.record_failure(model, probe=False)
    return result
