from __future__ import annotations

import multiprocessing

import pytest
from django.conf import settings

from ledgerly.llm.conf import RateLimits
from ledgerly.llm.limiter import RateLimiter
from tests.llm import workers


def test_requests_beyond_the_burst_are_told_how_long_to_wait(redis_client):
    limiter = RateLimiter(redis_client, burst_seconds=2)
    limits = RateLimits(rpm=60, itpm=10**9, otpm=10**9)  # 1 per second, bucket of 2

    granted = [
        limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)[0] for _ in range(2)
    ]
    permit, wait = limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)

    assert None not in granted
    assert permit is None
    assert 0.5 < wait <= 1.0


def test_input_tokens_limit_the_rate_as_well_as_requests(redis_client):
    limiter = RateLimiter(redis_client, burst_seconds=6)
    limits = RateLimits(rpm=10_000, itpm=6_000, otpm=10**9)  # bucket of 600 input tokens

    first, _ = limiter.try_acquire("sonnet", limits, input_tokens=500, output_tokens=1)
    second, wait = limiter.try_acquire("sonnet", limits, input_tokens=500, output_tokens=1)

    assert first is not None
    assert second is None
    assert wait == pytest.approx(4.0, abs=0.1)  # 400 more tokens at 100 per second


def test_settling_gives_back_unused_output_tokens(redis_client):
    limiter = RateLimiter(redis_client, burst_seconds=6)
    limits = RateLimits(rpm=10_000, itpm=10**9, otpm=600)  # bucket of 60 output tokens

    permit, _ = limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=60)
    assert permit is not None
    limiter.settle(permit, limits, input_tokens=1, output_tokens=10)
    again, wait = limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=50)

    assert again is not None
    assert wait == 0


def test_provider_reporting_a_few_requests_left_lowers_our_bucket(redis_client):
    limiter = RateLimiter(redis_client, burst_seconds=10)
    limits = RateLimits(rpm=600, itpm=10**9, otpm=10**9)  # bucket of 100 requests
    limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)

    limiter.observe("haiku", limits, {"requests": (2, 1.0), "input-tokens": None})
    granted = [
        limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)[0] for _ in range(3)
    ]

    assert [g is not None for g in granted] == [True, True, False]


def test_provider_reporting_nothing_left_stops_us_until_its_reset(redis_client):
    limiter = RateLimiter(redis_client, burst_seconds=10)
    limits = RateLimits(rpm=600, itpm=10**9, otpm=10**9)  # bucket of 100 requests
    limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)

    limiter.observe("haiku", limits, {"requests": (0, 3.0)})
    permit, wait = limiter.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)

    assert permit is None
    assert wait == pytest.approx(3.1, abs=0.05)  # until the provider's reset, then one more


@pytest.mark.slow
def test_four_processes_sharing_the_limiter_stay_under_its_rpm(redis_client):
    rpm, burst, duration = 240, 1.0, 4.0  # 4 per second, bucket of 4
    limits = RateLimits(rpm=rpm, itpm=10**9, otpm=10**9)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        barrier = manager.Barrier(4)  # all four processes ready before anyone takes
        pending = pool.starmap_async(
            workers.hammer_limiter, [(settings.REDIS_URL, limits, burst, duration, barrier)] * 4
        )
        outcomes = pending.get(timeout=120)
    results = [granted for granted, _ in outcomes]
    until = max(end for _, end in outcomes)
    stamps = sorted(t for r in results for t in r)
    first = stamps[0]

    # Over the whole run: at most the burst plus the refill; and the limiter was not simply
    # refusing everything (at least 80% of the rate was used).
    allowed = rpm / 60 * (until - first) + rpm / 60 * burst
    assert len(stamps) <= allowed + 1
    assert len(stamps) >= 0.8 * rpm / 60 * (until - first)
    # Every sliding one-second window holds at most the rate plus the burst.
    windows = [sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps]
    assert max(windows) <= rpm / 60 + rpm / 60 * burst + 1
    # Every process got a share: the bucket is shared, not per process.
    assert min(len(r) for r in results) > 0
