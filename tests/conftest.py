from __future__ import annotations

import pytest
import redis as redis_lib
from django.conf import settings


@pytest.fixture
def redis_client():
    """The run's real Redis, emptied before each test that uses it."""
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()
