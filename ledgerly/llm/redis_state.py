"""The gateway's Redis connection (one pool per process; redis-py re-creates it after a fork)."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)


def reset() -> None:
    client.cache_clear()
