"""Liveness and readiness.

/healthz answers as long as the process does and touches no dependency, so an orchestrator
restarts only a wedged process. /readyz checks what serving needs (database, Redis, the Celery
broker, migrations) with short timeouts and says which one failed, so a load balancer stops
sending traffic without restarting anything.

/readyz is public (probes reach it unauthenticated), so it names the failed dependency and the
kind of error, never the exception text: a driver's message carries hostnames, ports, user names
and DSN fragments. The full error goes to the log. The answer is cached for
READYZ_CACHE_SECONDS (1.5 s) per process, so probes every few seconds from several balancers
cost one round of checks at most that often; once the migrations are found applied, a process
does not read the migration graph again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import redis
import structlog
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

CHECK_TIMEOUT_SECONDS = 2
READYZ_CACHE_SECONDS = 1.5
log = structlog.get_logger(__name__)


class NotReady(Exception):
    """A check's own verdict, safe to show (it names no host or credential)."""


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    # A fresh connection with a short timeout: the pool would wait its full timeout instead.
    params = connection.get_connection_params()
    params.pop("pool", None)
    params.pop("cursor_factory", None)
    params.pop("server_side_binding", None)
    with psycopg.connect(**params, connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
        conn.execute("SELECT 1")


def _ping(url: str) -> None:
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def check_redis() -> None:
    _ping(settings.REDIS_URL)


def check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        _ping(url)
        return
    from ledgerly.celery import app  # another transport (RabbitMQ): kombu connects

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT_SECONDS)


_migrations_applied = False


def check_migrations() -> None:
    global _migrations_applied
    if _migrations_applied:
        return
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise NotReady(f"{len(plan)} migration(s) not applied")
    _migrations_applied = True


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
    "migrations": check_migrations,
}


def _verdict(name: str, exc: Exception) -> str:
    """What the public answer says of a failure: the kind, never the text."""
    log.warning("readyz.check_failed", check=name, error=f"{type(exc).__name__}: {exc}"[:500])
    if isinstance(exc, NotReady):
        return f"error: {exc}"
    if isinstance(exc, TimeoutError | redis.TimeoutError | psycopg.errors.ConnectionTimeout):
        return "error: timeout"
    if isinstance(exc, redis.AuthenticationError | psycopg.errors.InvalidPassword):
        return "error: authentication failed"
    if isinstance(exc, OSError | redis.ConnectionError | psycopg.OperationalError):
        return "error: unreachable"
    return f"error: {type(exc).__name__}"


def run_checks() -> dict[str, str]:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        if name == "migrations" and results.get("database") != "ok":
            results[name] = "skipped: database unavailable"
            continue
        try:
            check()
        except Exception as exc:  # any failure means not ready; the answer says which
            results[name] = _verdict(name, exc)
        else:
            results[name] = "ok"
    return results


_lock = threading.Lock()
_cached: tuple[float, dict[str, str]] | None = None


def readiness() -> dict[str, str]:
    """The checks' results, at most READYZ_CACHE_SECONDS old (one caller checks; the others
    wait for it and share its answer)."""
    global _cached
    cached = _cached
    if cached is not None and time.monotonic() - cached[0] < READYZ_CACHE_SECONDS:
        return cached[1]
    with _lock:
        cached = _cached
        if cached is not None and time.monotonic() - cached[0] < READYZ_CACHE_SECONDS:
            return cached[1]
        results = run_checks()
        _cached = (time.monotonic(), results)
        return results


def readyz(request: HttpRequest) -> JsonResponse:
    results = readiness()
    failed = [name for name, value in results.items() if value != "ok"]
    return JsonResponse(
        {"status": "unavailable" if failed else "ready", "failed": failed, "checks": results},
        status=503 if failed else 200,
    )
