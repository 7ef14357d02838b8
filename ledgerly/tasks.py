"""Project-level tasks: the worker heartbeat operators (and /readyz callers) can read."""

from __future__ import annotations

import socket
import time

import redis
from celery import shared_task
from django.conf import settings

from ledgerly.redis_keys import prefixed

HEARTBEAT_KEY = "worker:heartbeat"  # under REDIS_KEY_PREFIX: heartbeat_key()


def heartbeat_key() -> str:
    return prefixed(HEARTBEAT_KEY)


@shared_task(name="ledgerly.tasks.worker_heartbeat", ignore_result=True)
def worker_heartbeat() -> None:
    """Record that some worker consumed a task from the broker just now, and which one."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.hset(heartbeat_key(), mapping={"at": time.time(), "host": socket.gethostname()})
    client.close()
