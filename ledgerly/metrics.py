"""Prometheus metrics of the service, and the /metrics endpoint.

Several processes (uvicorn workers, Celery workers, beat) on one machine share one set of
figures through prometheus-client's multiprocess mode: each process writes its samples to files
under `PROMETHEUS_MULTIPROC_DIR` (which must be set, and emptied, before the processes start:
`make run` and the Docker image do both), and a scrape of any web process sums them. Without the
variable each process reports only its own figures (fine for one process, wrong for several).
A machine that runs only workers serves the same figures with `METRICS_PORT` (see
`start_worker_exporter`).

Some figures are not counted by any process but read when Prometheus scrapes: queue depth
(Redis LLEN of the Celery queues), breaker state, global budget use, and whatever an app
registers with `register_scrape_collector` (support: active runs, answer ratings). They are
read with short timeouts, and one that fails shows as `ledgerly_scrape_errors{collector}`
instead of failing the scrape.
"""

from __future__ import annotations

import atexit
import glob
import hmac
import os
import threading
from collections.abc import Callable, Iterable, Iterator

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# --- counted by the processes --------------------------------------------------------------------

TOOL_CALLS = Counter(
    "ledgerly_tool_calls_total",
    "Agent tool calls by tool and outcome (ok, error: refused input, invalid_result, exception)",
    ["tool", "outcome"],
)
TOOL_LATENCY = Histogram(
    "ledgerly_tool_latency_seconds",
    "Agent tool call duration",
    ["tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RUN_STEPS = Histogram(
    "ledgerly_run_steps",
    "Steps a run took to finish one customer message",
    ["lane"],
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30),
)
RUN_SECONDS = Histogram(
    "ledgerly_run_duration_seconds",
    "Time from a customer message to its run's end (answered, waiting or escalated)",
    ["lane"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)
RUNS_FINISHED = Counter(
    "ledgerly_runs_finished_total",
    "Runs that finished a customer message, by lane and outcome (the ticket's new state)",
    ["lane", "outcome"],
)
TICKETS_TERMINAL = Counter(
    "ledgerly_tickets_terminal_total",
    "Tickets reaching a terminal or waiting state "
    "(answered, awaiting_customer, awaiting_approval, escalated, failed)",
    ["state"],
)
ESCALATIONS = Counter("ledgerly_escalations_total", "Escalations opened, by reason", ["reason"])
CACHE_REQUESTS = Counter(
    "ledgerly_cache_requests_total",
    "Cache lookups by cache (semantic: the FAQ answer cache; lookup: tool lookups) and result",
    ["cache", "result"],
)
REFUND_DECISIONS = Counter(
    "ledgerly_refund_decisions_total",
    "Refund requests' state changes by plan segment (approved, rejected, executed, ...)",
    ["segment", "decision"],
)
GUARD_INTERVENTIONS = Counter(
    "ledgerly_guard_interventions_total",
    "Reply-guard interventions by lane and action (regenerated, replaced)",
    ["lane", "action"],
)

# --- read at scrape time -------------------------------------------------------------------------

ScrapeFn = Callable[[], Iterable[Metric]]
_scrape_collectors: dict[str, ScrapeFn] = {}
SCRAPE_TIMEOUT_SECONDS = 0.5


def register_scrape_collector(name: str, fn: ScrapeFn) -> None:
    """Read `fn`'s metrics at every scrape (apps register theirs at start-up; the name makes
    registering twice harmless)."""
    _scrape_collectors[name] = fn


def _celery_queues() -> list[str]:
    from django.conf import settings

    names = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery") or "celery"}
    for queue in getattr(settings, "CELERY_TASK_QUEUES", None) or ():
        names.add(getattr(queue, "name", str(queue)))
    return sorted(names)


def queue_depth() -> Iterable[Metric]:
    """Messages waiting in each Celery queue (the Redis transport's lists, its priority lists
    included)."""
    import redis
    from django.conf import settings

    family = GaugeMetricFamily(
        "ledgerly_queue_depth", "Messages waiting in the Celery queue", labels=["queue"]
    )
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return []
    client = redis.Redis.from_url(
        url, socket_connect_timeout=SCRAPE_TIMEOUT_SECONDS, socket_timeout=SCRAPE_TIMEOUT_SECONDS
    )
    try:
        for queue in _celery_queues():
            keys = [queue] + [f"{queue}\x06\x16{p}" for p in range(1, 10)]
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.llen(key)
                family.add_metric([queue], float(sum(pipe.execute())))
    finally:
        client.close()
    return [family]


def llm_state() -> Iterable[Metric]:
    """The shared circuit breaker's state per model and the global budget's use, from Redis."""
    from ledgerly.llm.gateway import get_gateway

    gateway = get_gateway()
    breaker = GaugeMetricFamily(
        "ledgerly_llm_breaker_open", "1 while the model's circuit breaker is open", labels=["model"]
    )
    for model in sorted(set(gateway.config.models.values())):
        breaker.add_metric([model], 1.0 if gateway.breaker.state(model) == "open" else 0.0)
    spent = gateway.budgets.spent()
    limits = gateway.budgets.limits
    budget = GaugeMetricFamily(
        "ledgerly_llm_budget_used_ratio",
        "Fraction of the global LLM budget committed (reserved and settled)",
        labels=["scope"],
    )
    budget.add_metric(["global_day"], spent["global_day"] / max(limits.daily_micro_usd, 1))
    budget.add_metric(["global_month"], spent["global_month"] / max(limits.monthly_micro_usd, 1))
    spent_usd = GaugeMetricFamily(
        "ledgerly_llm_budget_spent_usd",
        "Dollars committed against the global LLM budget",
        labels=["scope"],
    )
    spent_usd.add_metric(["global_day"], spent["global_day"] / 1e6)
    spent_usd.add_metric(["global_month"], spent["global_month"] / 1e6)
    limit = GaugeMetricFamily(
        "ledgerly_llm_budget_limit_usd", "The global LLM budget", labels=["scope"]
    )
    limit.add_metric(["global_day"], limits.daily_micro_usd / 1e6)
    limit.add_metric(["global_month"], limits.monthly_micro_usd / 1e6)
    return [breaker, budget, spent_usd, limit]


register_scrape_collector("queue", queue_depth)
register_scrape_collector("llm", llm_state)


class _ScrapeTime(Collector):
    def __init__(self, machine: _MachineFiles | None = None) -> None:
        self.machine = machine  # collected before this one: its unreadable files are known

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "ledgerly_scrape_errors",
            "1 when a scrape-time collector failed on this scrape",
            labels=["collector"],
        )
        for name, fn in sorted(_scrape_collectors.items()):
            try:
                families = list(fn())
            except Exception:  # one dependency down must not hide every other figure
                errors.add_metric([name], 1.0)
                continue
            errors.add_metric([name], 0.0)
            yield from families
        if self.machine is not None:
            errors.add_metric(["multiprocess"], 1.0 if self.machine.unreadable else 0.0)
        yield errors


class _ThisProcess(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def ensure_multiprocess_dir() -> None:
    """Make PROMETHEUS_MULTIPROC_DIR if it is missing: prometheus-client writes a process's
    samples there as they are counted, and a missing directory makes every count raise."""
    path = multiprocess_dir()
    if path:
        os.makedirs(path, exist_ok=True)


class _MachineFiles(multiprocess.MultiProcessCollector):
    """The machine's processes' files, summed, leaving out any that cannot be read (a process
    killed right after making its file leaves it empty: one such file must not fail every
    scrape); when one was left out, `ledgerly_scrape_errors{collector="multiprocess"}` is 1."""

    def __init__(self, path: str) -> None:
        self._path = path  # registered by hand: the parent would check the path and register
        self.unreadable = 0

    def collect(self) -> Iterable[Metric]:
        os.makedirs(self._path, exist_ok=True)
        readable, unreadable = [], 0
        for name in sorted(glob.glob(os.path.join(self._path, "*.db"))):
            try:
                self._read_metrics([name])
            except Exception:  # struct.error, OSError: a torn or vanished file
                unreadable += 1
                continue
            readable.append(name)
        self.unreadable = unreadable
        yield from self.merge(readable, accumulate=True)


def registry() -> CollectorRegistry:
    """What a scrape reports: every process's samples (multiprocess mode) or this process's,
    plus the scrape-time figures."""
    reg = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    machine = _MachineFiles(path) if path else None
    reg.register(machine or _ThisProcess())
    reg.register(_ScrapeTime(machine))
    return reg


def exposition() -> bytes:
    return generate_latest(registry())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics in the Prometheus text format. With METRICS_TOKEN set, only for a scraper
    that sends it as a bearer token; without, serve it on the internal network only."""
    from django.conf import settings

    token = getattr(settings, "METRICS_TOKEN", None)
    if not token and settings.PRODUCTION:
        # The web port is the public one: production serves its figures (costs, refund
        # decisions, budgets) only to a scraper with the token; workers' METRICS_PORT is
        # internal.
        return HttpResponse("not found\n", status=404, content_type="text/plain")
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("metrics need the scraper's bearer token\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


# --- process lifecycle ---------------------------------------------------------------------------

_exporter_lock = threading.Lock()
_exporter_started = False


def mark_this_process_dead() -> None:
    """Drop this process's live gauges from the shared files (at exit)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())


atexit.register(mark_this_process_dead)


def start_worker_exporter(port: int) -> None:
    """Serve this machine's figures on `port` (a worker machine with no web process): the
    multiprocess files when PROMETHEUS_MULTIPROC_DIR is set, else this process's."""
    global _exporter_started
    from prometheus_client import start_http_server

    with _exporter_lock:
        if _exporter_started:
            return
        start_http_server(port, addr="0.0.0.0", registry=registry())  # noqa: S104
        _exporter_started = True
