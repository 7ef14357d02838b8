from __future__ import annotations

import time

import pytest

from ledgerly.tasks import heartbeat_key, worker_heartbeat


@pytest.mark.slow
def test_a_real_worker_consumes_tasks_from_the_broker(celery_worker_process, redis_client):
    celery_worker_process()
    worker_heartbeat.delay()
    deadline = time.monotonic() + 20
    while not redis_client.exists(heartbeat_key()) and time.monotonic() < deadline:
        time.sleep(0.05)
    beat = redis_client.hgetall(heartbeat_key())
    assert float(beat[b"at"]) > time.time() - 30
    assert beat[b"host"]
