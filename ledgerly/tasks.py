"""Project-level tasks: the worker heartbeat operators (and /readyz callers) can read."""

from __future__ import annotations

import socket
import time

import redis
from celery import shared_task
from django.conf import settings

HEARTBEAT_KEY = "ledgerly:worker:heartbeat"


@shared_task(name="ledgerly.tasks.worker_heartbeat", ignore_result=True)
def worker_heartbeat() -> None:
    """Record that some worker consumed a task from the broker just now, and which one."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.hset(HEARTBEAT_KEY, mapping={"at": time.time(), "host": socket.gethostname()})
    client.close()
