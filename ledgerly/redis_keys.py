"""Names of the keys the app writes in Redis, under the environment's prefix.

Every key starts with REDIS_KEY_PREFIX (default `ledgerly:<LEDGERLY_ENV>`), so a staging and a
production deployment, or two test runs, sharing one Redis never read each other's budgets,
breaker state, rate-limit buckets, hot conversation copies or caches. The gateway's classes
(ledgerly/llm/budget.py, breaker.py, limiter.py) take the same prefix as a constructor argument.
"""

from __future__ import annotations

from django.conf import settings


def prefixed(name: str) -> str:
    """`name` under this environment's prefix."""
    return f"{settings.REDIS_KEY_PREFIX}:{name}"
