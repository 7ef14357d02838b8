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


@pytest.mark.django_db
def test_readyz_is_ready_when_everything_is_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "migrations": "ok"}


@pytest.mark.slow
def test_readyz_names_the_database_when_it_is_down(serve):
    base = serve(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres")
    assert _get(base + "/healthz")[0] == 200
    status, body = _get(base + "/readyz")
    assert status == 503
    assert '"failed": ["database", "migrations"]' in body
    assert '"redis": "ok"' in body


@pytest.mark.slow
def test_readyz_names_redis_when_it_is_down(serve, test_database_url):
    base = serve(DATABASE_URL=test_database_url, REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0")
    status, body = _get(base + "/readyz")
    assert status == 503
    assert '"failed": ["redis"]' in body
    assert '"database": "ok"' in body
