"""Pytest plugin: a private Postgres+pgvector and Redis for each test run.

Loaded with `-p ledgerly.testing.services` (pyproject addopts), so it runs before pytest-django
reads the settings. It always starts its own servers under a temporary directory, whatever
DATABASE_URL or REDIS_URL say, so a run never touches a database set up by hand. To run against
servers of your own on purpose, set LEDGERLY_TEST_EXTERNAL_SERVICES=1 with both URLs.
"""

from __future__ import annotations

import os

from ledgerly import devstack

if os.environ.get("LEDGERLY_TEST_EXTERNAL_SERVICES") == "1":
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        raise SystemExit("LEDGERLY_TEST_EXTERNAL_SERVICES=1 needs DATABASE_URL and REDIS_URL")
else:
    devstack.use_private_services()


os.environ["LEDGERLY_ENV"] = "test"
os.environ.pop("ANTHROPIC_API_KEY", None)  # tests never reach the internet
os.environ.pop("SENTRY_DSN", None)
os.environ.setdefault("LOG_LEVEL", "WARNING")
