"""Functions run in separate processes (spawned) by the gateway's race tests.

Each opens its own Redis connection from the URL it is given, as a separate worker would.
"""

from __future__ import annotations

import time
from typing import Any

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
    redis_url: str, limits: RateLimits, burst_seconds: float, duration: float, barrier: Any
) -> tuple[list[float], float]:
    """Once every process has reached `barrier`, take requests from the shared limiter as fast
    as it allows for `duration` seconds; returns the times they were granted and the end."""
    limiter = RateLimiter(redis.Redis.from_url(redis_url), burst_seconds=burst_seconds)
    granted = []
    barrier.wait()
    until = time.time() + duration
    while time.time() < until:
        permit, wait = limiter.try_acquire("race", limits, input_tokens=1, output_tokens=1)
        if permit is not None:
            granted.append(time.time())
        else:
            time.sleep(min(wait, max(0.0, until - time.time())))
    return granted, until


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


def _django_child(db_name: str, env: dict[str, str]) -> None:
    """Set up Django in a spawned process against the test run's database `db_name`."""
    import os

    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "ledgerly.settings"
    import django

    django.setup()
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = db_name


def gateway_calls(
    db_name: str,
    env: dict[str, str],
    calls: int,
    headers: dict[str, str],
    run_id: str,
    barrier: Any = None,
) -> list[str]:
    """Make `calls` concurrent small-tier gateway calls (one thread each) in this process, after
    every process has reached `barrier` (if given); returns each call's result: "ok", "static"
    or the exception's class name."""
    _django_child(db_name, env)
    import concurrent.futures

    from django.db import connection

    from ledgerly import llm
    from ledgerly.llm import gateway
    from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

    gateway.install(gateway.Gateway(inner_transport=SimulatorTransport(SimulatorConfig())))
    if barrier is not None:
        barrier.wait()

    def one(_: int) -> str:
        try:
            completion = llm.complete(
                ctx=llm.CallContext.starting_now(
                    run_id=run_id, ticket_id="", customer_ref="cus_race", seconds=60
                ),
                tier="small",
                purpose="route",
                prompt="route_ticket",
                messages=[{"role": "user", "content": "Where can I find my invoices?"}],
                max_tokens=100,
                extra_headers=headers,
                fallback="static",
            )
            return "static" if completion.static else "ok"
        except llm.LLMError as exc:
            return type(exc).__name__
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=calls) as pool:
        return list(pool.map(one, range(calls)))


def reserve_and_hang(redis_url: str, limits: Limits, cost: int, hold_seconds: float) -> None:
    """Reserve `cost` and never settle: the parent kills this process (kill -9) meanwhile, as a
    worker dies between reserve and settle. Reports the reservation id on a Redis list."""
    client = redis.Redis.from_url(redis_url)
    budgets = Budgets(client, limits, prefix="ledgerly:test", hold_seconds=hold_seconds)
    outcome = budgets.reserve([Candidate(cost, 10, large=False)], run_id="killed")
    assert isinstance(outcome, Reservation)
    client.rpush("reserve_and_hang:reserved", outcome.rid)
    time.sleep(600)


def release_probe_from_elsewhere(redis_url: str, model: str) -> tuple[str, bool]:
    """In another process: ask the breaker (whose probe lease someone else holds) for admission
    and try to release the probe lease with the token it was given. Returns the verdict and
    whether the release took."""
    breaker = CircuitBreaker(
        redis.Redis.from_url(redis_url),
        failures=1,
        window_seconds=60,
        cooldown_seconds=0.1,
        probe_lease_seconds=30,
        prefix="ledgerly:test",
    )
    admission = breaker.admit(model)
    return admission.verdict.value, breaker.release_probe(model, admission.token or "guess")
