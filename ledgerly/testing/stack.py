"""The whole stack in subprocesses for end-to-end tests: uvicorn serving `ledgerly.asgi` (as
`make run` starts it), a real Celery worker and beat, all on the test run's own database and
Redis. A browser (or any HTTP client) then talks to `stack.url` as a user would.

The test process must have committed what the servers are to see (a transactional test
database, not pytest-django's per-test transaction): they are other processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ledgerly.testing.worker import ROOT, WorkerProcess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveStack:
    """Web (uvicorn), worker and beat against `database_url` and the run's Redis."""

    def __init__(
        self,
        *,
        database_url: str,
        env: dict[str, str] | None = None,
        worker_concurrency: int = 2,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ledgerly-stack-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "LEDGERLY_ENV": "test",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.worker = WorkerProcess(
            database_url=database_url, concurrency=worker_concurrency, env=self.env
        )
        self.web: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.dir / f"{name}.log").open("wb") as out:
            return subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", *args], cwd=ROOT, env=self.env, stdout=out, stderr=out
            )

    def start(self, timeout: float = 60) -> LiveStack:
        try:
            self.web = self._spawn(
                "web",
                [
                    "uvicorn",
                    "ledgerly.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
            )
            self.worker.start(timeout=timeout)
            self.beat = self._spawn(
                "beat",
                [
                    "celery",
                    "-A",
                    "ledgerly",
                    "beat",
                    "--loglevel",
                    "WARNING",
                    "--schedule",
                    str(self.dir / "celerybeat-schedule"),
                ],
            )
            self._wait_for_web(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_web(self, timeout: float) -> None:
        if self.web is None:
            raise RuntimeError("the web server was not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.output('web')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"uvicorn did not answer /healthz: {self.output('web')[-3000:]}")

    def output(self, name: str) -> str:
        """The log of `web`, `beat` or `worker`, for a failing test's message."""
        if name == "worker":
            return self.worker.output()
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        procs = [self.web, self.beat, self.worker.proc]
        return all(p is not None and p.poll() is None for p in procs)

    def stop(self) -> None:
        for proc in (self.web, self.beat):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        self.worker.stop()
        for proc in (self.web, self.beat):
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
