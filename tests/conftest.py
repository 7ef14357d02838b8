from __future__ import annotations

import pytest
import redis as redis_lib
from django.conf import settings


@pytest.fixture
def redis_client():
    """The run's real Redis, emptied before each test that uses it."""
    # Tests block on lists for up to a minute (process barriers): longer than redis-py's
    # default socket timeout, which a busy machine reaches while children start.
    client = redis_lib.Redis.from_url(settings.REDIS_URL, socket_timeout=120)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def test_database_url(transactional_db) -> str:
    """The run's migrated test database as a URL, for servers and workers in subprocesses."""
    from django.db import connection

    from ledgerly.testing.worker import database_url_for

    return database_url_for(connection.settings_dict)


@pytest.fixture
def celery_worker_process(test_database_url, redis_client):
    """Start real Celery workers (subprocesses) on the test database; stopped after the test."""
    from ledgerly.testing.worker import WorkerProcess

    workers: list[WorkerProcess] = []

    def start(concurrency: int = 2, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            database_url=test_database_url, concurrency=concurrency, env=env
        ).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
