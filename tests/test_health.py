from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def serve():
    """Start the real ASGI server in a subprocess with the given environment overrides."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**overrides: str) -> str:
        port = _closed_port()
        env = {**os.environ, **overrides}
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "ledgerly.asgi:application", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _get(base + "/healthz")
            except OSError:
                time.sleep(0.1)
            else:
                return base
        raise AssertionError("server did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_healthz_answers_without_touching_dependencies(client):
    # No django_db mark: any database access here would raise.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture
def fresh_readiness(monkeypatch):
    """No readiness answer cached from an earlier test."""
    from ledgerly import health

    monkeypatch.setattr(health, "_cached", None)
    return health


@pytest.mark.django_db
def test_readyz_is_ready_when_everything_is_up(client, fresh_readiness):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "broker": "ok",
        "migrations": "ok",
    }


@pytest.mark.django_db
def test_readyz_checks_at_most_once_per_cache_period(client, fresh_readiness, monkeypatch):
    calls: list[str] = []
    checks = {name: (lambda name=name: calls.append(name)) for name in fresh_readiness.CHECKS}
    monkeypatch.setattr(fresh_readiness, "CHECKS", checks)
    monkeypatch.setattr(fresh_readiness, "READYZ_CACHE_SECONDS", 0.3)
    for _ in range(5):
        assert client.get("/readyz").status_code == 200
    assert calls == ["database", "redis", "broker", "migrations"]
    time.sleep(0.35)
    assert client.get("/readyz").status_code == 200
    assert len(calls) == 8


@pytest.mark.django_db
def test_a_hung_redis_fails_readyz_within_the_check_timeout(
    client, fresh_readiness, settings, monkeypatch
):
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        settings.REDIS_URL = url
        settings.CELERY_BROKER_URL = url
        monkeypatch.setattr(fresh_readiness, "CHECK_TIMEOUT_SECONDS", 0.5)
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis", "broker"]
    assert body["checks"]["redis"] == "error: timeout"
    assert elapsed < 3


@pytest.mark.slow
def test_readyz_names_the_database_when_it_is_down_without_its_address(serve):
    port = _closed_port()
    base = serve(DATABASE_URL=f"postgresql://ledgerly:pw-s3cret@127.0.0.1:{port}/ledgerdb")
    assert _get(base + "/healthz")[0] == 200
    status, body = _get(base + "/readyz")
    assert status == 503
    assert '"failed": ["database", "migrations"]' in body
    assert '"database": "error: unreachable"' in body
    assert '"redis": "ok"' in body
    for leak in ("127.0.0.1", str(port), "ledgerdb", "pw-s3cret", "ledgerly@", "connection"):
        assert leak not in body


@pytest.mark.slow
def test_readyz_names_redis_when_it_is_down_without_its_address(serve, test_database_url):
    port = _closed_port()
    base = serve(
        DATABASE_URL=test_database_url,
        REDIS_URL=f"redis://:pw-s3cret@127.0.0.1:{port}/0",
        CELERY_BROKER_URL=f"redis://:pw-s3cret@127.0.0.1:{port}/1",
    )
    status, body = _get(base + "/readyz")
    assert status == 503
    assert '"failed": ["redis", "broker"]' in body
    assert '"database": "ok"' in body
    assert '"redis": "error: unreachable"' in body
    for leak in ("127.0.0.1", str(port), "pw-s3cret", "Error 111"):
        assert leak not in body
