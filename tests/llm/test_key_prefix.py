"""Every key the app writes in Redis starts with REDIS_KEY_PREFIX (default
`ledgerly:<LEDGERLY_ENV>`): two environments sharing one Redis never see each other's budgets,
breaker state, rate-limit buckets, hot conversation copies or caches."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.cache import cache

from ledgerly import llm
from ledgerly.llm.breaker import CircuitBreaker, Verdict
from ledgerly.llm.budget import Budgets, Candidate, Refusal, Reservation
from ledgerly.llm.conf import RateLimits
from ledgerly.llm.limiter import RateLimiter
from ledgerly.redis_keys import prefixed
from ledgerly.tasks import heartbeat_key
from memory import hot
from memory.models import Conversation
from tests.llm.conftest import run_ctx, user
from tests.llm.test_budget import make_limits

A, B = "ledgerly:staging", "ledgerly:production"
MODEL = "claude-haiku-5-5"


def test_two_prefixes_do_not_share_budgets(redis_client):
    staging = Budgets(redis_client, make_limits(daily_micro_usd=1_000), prefix=A)
    production = Budgets(redis_client, make_limits(daily_micro_usd=1_000), prefix=B)
    assert isinstance(staging.reserve([Candidate(1_000, 1, large=False)]), Reservation)

    assert isinstance(staging.reserve([Candidate(1, 1, large=False)]), Refusal)
    assert isinstance(production.reserve([Candidate(1_000, 1, large=False)]), Reservation)
    assert staging.spent()["global_day"] == production.spent()["global_day"] == 1_000


def test_two_prefixes_do_not_share_a_breaker(redis_client):
    options = {"failures": 1, "window_seconds": 60, "cooldown_seconds": 30}
    staging = CircuitBreaker(redis_client, probe_lease_seconds=5, prefix=A, **options)
    production = CircuitBreaker(redis_client, probe_lease_seconds=5, prefix=B, **options)

    assert staging.record_failure(MODEL, probe=False) == "opened"
    assert staging.admit(MODEL).verdict is Verdict.OPEN
    assert production.admit(MODEL).verdict is Verdict.CLOSED


def test_two_prefixes_do_not_share_rate_limit_buckets(redis_client):
    limits = RateLimits(rpm=60, itpm=600, otpm=600)  # bursts of 5 requests
    staging = RateLimiter(redis_client, burst_seconds=5, prefix=A)
    production = RateLimiter(redis_client, burst_seconds=5, prefix=B)
    taken = [
        staging.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)[0] for _ in "x" * 5
    ]

    assert all(taken)
    assert staging.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)[0] is None
    assert production.try_acquire("haiku", limits, input_tokens=1, output_tokens=1)[0]


@pytest.mark.django_db
def test_every_key_a_gateway_call_writes_is_under_the_prefix(gateway, redis_client):
    llm.complete(
        ctx=run_ctx(run_id="prefixed", customer_ref="cus_prefixed"),
        tier="small",
        purpose="summarise",
        prompt="summarise_conversation",
        messages=user("Customer: where is my invoice?"),
        max_tokens=100,
        fallback="none",
    )

    keys = sorted(k.decode() for k in redis_client.keys("*"))
    assert len(keys) >= 5  # day, month, customer, run usd and tokens, limiter bucket
    assert [k for k in keys if not k.startswith(f"{settings.REDIS_KEY_PREFIX}:")] == []


def test_the_default_prefix_names_the_environment():
    assert f"ledgerly:{settings.LEDGERLY_ENV}" == settings.REDIS_KEY_PREFIX


def test_memory_hot_copies_the_heartbeat_and_the_cache_use_the_prefix(settings, redis_client):
    conversation = Conversation(pk=41, customer_id=7)
    cache.set("prefix-probe", 1)
    cached = [k.decode() for k in redis_client.keys("*prefix-probe*")]
    settings.REDIS_KEY_PREFIX = B

    assert [k.startswith("ledgerly:test:") for k in cached] == [True]
    assert hot.key(conversation) == f"{B}:memory:customer:7:conv:41:recent"
    assert heartbeat_key() == f"{B}:worker:heartbeat"
    assert prefixed("memory:search:x") == f"{B}:memory:search:x"


@pytest.mark.parametrize("prefix", ["a{b}", "has space", "x" * 65])
def test_a_malformed_prefix_stops_startup_naming_the_variable(prefix):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ledgerly.settings",
            "REDIS_KEY_PREFIX": prefix,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0
    assert "REDIS_KEY_PREFIX" in result.stderr
