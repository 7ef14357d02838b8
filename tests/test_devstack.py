"""`make run`'s orchestrator, end to end: embedded services, migrate, seed, serve, Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "LEDGERLY_ENV"}
    }
    env.update(LEDGERLY_DATA_DIR=str(data_dir), PORT=str(port), LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledgerly.devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 240
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("make run did not serve:\n" + "".join(lines[-60:]))


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return int(response.status)


@pytest.mark.slow
def test_make_run_serves_everything_and_ctrl_c_stops_it_all(tmp_path):
    port = _free_port()
    proc, lines = _start(tmp_path / "data", port)
    descendants = psutil.Process(proc.pid).children(recursive=True)
    try:
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}/admin/" in output
        assert "staff / ledgerly-demo" in output
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        assert _get(f"http://127.0.0.1:{port}/readyz") == 200
        assert _get(f"http://127.0.0.1:{port}/admin/login/") == 200
        # web, worker, beat and redis-server run under the orchestrator; postgres (daemonised by
        # pg_ctl) announces itself in its pid file
        names = " ".join(" ".join(p.cmdline()) for p in descendants if p.is_running())
        for expected in ["uvicorn", "worker", "beat", "redis-server"]:
            assert expected in names
        assert (tmp_path / "data" / "pg" / "postmaster.pid").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    _gone, alive = psutil.wait_procs(descendants, timeout=20)
    assert not alive, [p.pid for p in alive]
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()


@pytest.mark.slow
def test_a_second_make_run_reuses_the_data(tmp_path):
    port = _free_port()
    for _ in range(2):
        proc, _lines = _start(tmp_path / "data", port)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert proc.returncode == 0
    assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
