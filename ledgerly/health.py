"""Liveness and readiness.

/healthz answers as long as the process does and touches no dependency, so an orchestrator
restarts only a wedged process. /readyz checks what serving needs (database, Redis/broker,
migrations) with short timeouts and says which one failed, so a load balancer stops sending
traffic without restarting anything.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

CHECK_TIMEOUT_SECONDS = 2


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


def check_redis() -> None:
    for url in {settings.REDIS_URL, settings.CELERY_BROKER_URL}:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
            socket_timeout=CHECK_TIMEOUT_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()


def check_migrations() -> None:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise RuntimeError(f"{len(plan)} migration(s) not applied")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "migrations": check_migrations,
}


def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        if name == "migrations" and results.get("database") != "ok":
            results[name] = "skipped: database unavailable"
            continue
        try:
            check()
        except Exception as exc:  # any failure means not ready; the message says which and why
            results[name] = f"error: {type(exc).__name__}: {exc}".strip()[:300]
        else:
            results[name] = "ok"
    ready = all(value == "ok" for value in results.values())
    failed = [name for name, value in results.items() if value != "ok"]
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "failed": failed, "checks": results},
        status=200 if ready else 503,
    )
