"""A real Celery worker in a subprocess, for tests about queues, redelivery and killed workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


class WorkerProcess:
    """`celery -A ledgerly worker` against the given database URL and the run's Redis."""

    def __init__(
        self, *, database_url: str, concurrency: int = 2, env: dict[str, str] | None = None
    ) -> None:
        self.env = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.gettempdir()) / f"ledgerly-worker-{os.getpid()}-{id(self)}.log"

    def start(self, timeout: float = 30) -> WorkerProcess:
        from ledgerly.celery import app

        hostname = f"test-{os.getpid()}-{id(self)}@%h"
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ledgerly",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(self.concurrency),
            "--hostname",
            hostname,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=out, stderr=out)  # noqa: S603
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.output()[-3000:]}")
            replies = app.control.ping(timeout=0.5)
            if any(self.node_prefix in name for reply in replies for name in reply):
                return self
        raise RuntimeError(f"celery worker did not answer a ping: {self.output()[-3000:]}")

    @property
    def node_prefix(self) -> str:
        return f"test-{os.getpid()}-{id(self)}@"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to ack, requeue or clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def database_url_for(settings_dict: dict[str, object]) -> str:
    """A URL for the database Django is connected to (the test database during tests)."""
    host = settings_dict.get("HOST") or ""
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    name = settings_dict["NAME"]
    port = settings_dict.get("PORT") or ""
    if str(host).startswith("/"):
        return f"postgresql://{user}:{password}@/{name}?host={host}"
    return f"postgresql://{user}:{password}@{host}:{port or 5432}/{name}"
