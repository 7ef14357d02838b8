"""Load: a steady rate of golden-mix tickets for a few minutes, then a burst of 1,000 at once.

Starts the production shape on this machine (bench/stack.py: web, two worker processes standing
for two machines, beat, embedded Postgres and Redis, the model simulator over HTTP with a 1.5 s
median latency and a lognormal tail) and submits the first message of every case in
tests/golden/{faq,refund,agent}.jsonl, round-robin, each as its case's customer, open loop (a
ticket is submitted on schedule whether or not earlier ones are answered).

    python bench/load.py [--rate 300] [--duration 180] [--burst 1000]
                         [--knee 150,300,450,600 --step-seconds 60] [--submit api|inprocess]

Figures, all read from the rows (Ticket, Run, RunStep, LLMCall) after the run drains:

* tickets_per_min: tickets of the steady phase answered per minute while it ran (the offered
  rate is `rate`; the system keeps up when the two match and the backlog stays flat).
* in_flight_max: the most runs at once that were accepted and not yet answered (ready, queued
  or running a step), sampled every 0.5 s; running_max: of those, steps a worker held.
* p95_s_by_lane: submit to answer (the run's last committed step), per lane the router chose,
  steady phase only; burst_p95_s_by_lane the same for the burst.
* calls_per_ticket / cost_per_ticket_usd: LLMCall rows and their cost per ticket (all phases).
* cpu_ms_per_ticket: CPU (user + system) of the web, worker and beat processes per answered
  ticket; infra_cpu_ms_per_ticket adds Postgres, Redis and the simulator separately.
* errors: submissions refused, tickets failed (dead letter) and tickets neither answered nor
  waiting when the drain ends. burst_unsettled: burst tickets in neither state.

Before the measured phases the whole mix is played once (cold_pass: its own figures), so the
phases run with the caches a live service has warm: the golden mix has 120 distinct texts, and
repeats find the FAQ answer cache and the retrieval cache (a repeated FAQ costs no model call).

The machine's load average, and who used its cores in each phase (steady_cpu_share: the stack,
the load generator, everything else), are printed with the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import stack as st


# --- submitting ---------------------------------------------------------------------------------
@dataclass
class Submission:
    ticket: st.Ticket
    at: float  # monotonic
    ticket_pk: int | None = None
    error: str = ""
    ms: float = 0.0


class InProcessSubmitter:
    """`support.services.ticket_submit` from this process (what the API view calls)."""

    path = "inprocess: support.services.ticket_submit"

    def __init__(self) -> None:
        from billing.models import Customer

        self._customers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._model = Customer

    def _customer(self, email: str) -> Any:
        with self._lock:
            if email not in self._customers:
                self._customers[email] = self._model.objects.get(email=email)
            return self._customers[email]

    def __call__(self, ticket: st.Ticket, key: str | None = None) -> int:
        from django.db import connections

        from support.services import ticket_submit

        try:
            customer = self._customer(ticket.customer)
            return int(ticket_submit(customer=customer, text=ticket.text, idempotency_key=key).pk)
        finally:
            connections.close_all()


class ApiSubmitter:
    """POST /api/v1/tickets with one integration key (scope tickets, owned by the demo staff
    user, not bound to a customer), naming each ticket's customer in the body."""

    path = "api: POST /api/v1/tickets"

    def __init__(self, stack: st.Stack) -> None:
        import httpx2 as httpx

        self._key = api_key(stack)
        self._client = httpx.Client(
            base_url=stack.web_url,
            timeout=60,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )

    def __call__(self, ticket: st.Ticket, key: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {self._key}"}
        if key:
            headers["Idempotency-Key"] = key
        body = {"text": ticket.text, "customer": ticket.customer}
        response = self._client.post("/api/v1/tickets", json=body, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return int(response.json()["id"])


def api_key(stack: st.Stack) -> str:
    """A tickets-scope integration key, made by the management command."""
    import subprocess

    args = ["create_api_key", "bench", "--scope", "tickets", "--owner", "staff", "--skip-checks"]
    out = subprocess.run(  # noqa: S603
        [st.PY, str(st.ROOT / "manage.py"), *args],
        cwd=st.ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The command prints the key (<prefix>.<secret>) once, on its own line.
    lines = [line.strip() for line in out.splitlines() if "." in line]
    if not lines:
        raise RuntimeError(f"create_api_key printed no key: {out!r}")
    return lines[-1]


def api_available() -> bool:
    from django.core.management import get_commands

    return "create_api_key" in get_commands()


class Driver:
    """Open-loop submission: ticket i at its scheduled time, on a pool of threads."""

    def __init__(self, submit: Callable[..., int], *, threads: int = 64) -> None:
        self.submit = submit
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="submit")
        self.submissions: list[Submission] = []
        self._futures: list[Future[None]] = []

    def _one(self, sub: Submission) -> None:
        t0 = time.monotonic()
        try:
            sub.ticket_pk = self.submit(sub.ticket)
        except Exception as exc:  # the system under test refused: counted, not fatal
            sub.error = f"{type(exc).__name__}: {exc}"[:300]
        sub.ms = (time.monotonic() - t0) * 1000

    def steady(self, tickets: Sequence[st.Ticket], *, rate_per_min: float, seconds: float) -> None:
        """Submit at `rate_per_min` for `seconds`, cycling through `tickets`."""
        count = int(rate_per_min * seconds / 60)
        gap = 60.0 / rate_per_min
        t0 = time.monotonic()
        for i in range(count):
            wait = t0 + i * gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._go(tickets[i % len(tickets)])

    def burst(self, tickets: Sequence[st.Ticket], *, count: int, offset: int = 0) -> None:
        for i in range(count):
            self._go(tickets[(offset + i) % len(tickets)])

    def _go(self, ticket: st.Ticket) -> None:
        sub = Submission(ticket=ticket, at=time.monotonic())
        self.submissions.append(sub)
        self._futures.append(self.pool.submit(self._one, sub))

    def wait(self) -> None:
        for future in self._futures:
            future.result()
        self._futures.clear()

    def close(self) -> None:
        self.wait()
        self.pool.shutdown()


# --- sampling in-flight runs ----------------------------------------------------------------
class Sampler(threading.Thread):
    """Every `every` seconds: runs accepted and not yet answered (ready or running), and of those
    running (a worker holds the step). Keeps the series, for the maxima and the report."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True, name="sampler")
        self.every = every
        self.series: list[tuple[float, int, int, int]] = []  # (t, in_flight, running, waiting)
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.db import connections
        from django.db.models import Count

        from support.models import Run

        while not self.stopping.is_set():
            try:
                counts = dict(
                    Run.objects.filter(status__in=["ready", "running", "waiting"])
                    .values_list("status")
                    .annotate(n=Count("pk"))
                    .values_list("status", "n")
                )
                ready, running = counts.get("ready", 0), counts.get("running", 0)
                waiting = counts.get("waiting", 0)
                self.series.append((time.monotonic(), ready + running, running, waiting))
            except Exception as exc:  # Postgres restarting (chaos): keep sampling
                st.say(f"sampler: {type(exc).__name__}")
                connections.close_all()
            self.stopping.wait(self.every)
        connections.close_all()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)

    def max_between(self, t0: float, t1: float) -> tuple[int, int]:
        rows = [(f, r) for t, f, r, _ in self.series if t0 <= t <= t1]
        return (max((f for f, _ in rows), default=0), max((r for _, r in rows), default=0))

    def in_flight_now(self) -> int:
        return self.series[-1][1] if self.series else 0


# --- reading the figures --------------------------------------------------------------------
@dataclass
class TicketRow:
    pk: int
    lane: str
    state: str
    run_status: str
    created_at: dt.datetime
    answered_at: dt.datetime | None
    calls: int = 0
    cost: float = 0.0

    @property
    def done(self) -> bool:
        from support.models import SETTLED_STATES

        return self.state in SETTLED_STATES and self.run_status in ("idle", "failed")

    @property
    def waiting(self) -> bool:
        return self.run_status == "waiting"

    @property
    def latency_s(self) -> float | None:
        if self.answered_at is None or not self.done:
            return None
        return (self.answered_at - self.created_at).total_seconds()


def ticket_rows(pks: Sequence[int]) -> dict[int, TicketRow]:
    from django.db.models import Count, Max, Sum

    from ledgerly.llm.models import LLMCall
    from support.models import Ticket

    rows: dict[int, TicketRow] = {}
    for chunk in _chunks(list(pks), 2000):
        for pk, lane, state, status, created, answered in (
            Ticket.objects.filter(pk__in=chunk)
            .annotate(answered=Max("run__steps__finished_at"))
            .values_list("pk", "first_lane", "state", "run__status", "created_at", "answered")
        ):
            rows[pk] = TicketRow(pk, lane or "none", state, status or "", created, answered)
        calls = (
            LLMCall.objects.filter(ticket_id__in=[str(pk) for pk in chunk])
            .values("ticket_id")
            .annotate(n=Count("pk"), cost=Sum("cost_usd"))
        )
        for row in calls:
            ticket = rows.get(int(row["ticket_id"]))
            if ticket is not None:
                ticket.calls, ticket.cost = row["n"], float(row["cost"] or 0)
    return rows


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def percentile(values: Sequence[float], q: float) -> float:
    from support.evaluation import percentile as pct

    return round(pct(list(values), q), 2)


def p95_by_lane(rows: Sequence[TicketRow]) -> dict[str, float]:
    by_lane: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.latency_s is not None:
            by_lane[row.lane].append(row.latency_s)
    return {lane: percentile(v, 95) for lane, v in sorted(by_lane.items())}


def drain(pks: Sequence[int], *, timeout: float, quiet: bool = False) -> float:
    """Wait until every ticket is answered or waiting (or `timeout`); returns the time taken."""
    from django.db import connections

    from support.models import SETTLED_STATES, Ticket

    t0 = time.monotonic()
    pending = list(pks)
    last_report = 0.0
    while pending and time.monotonic() - t0 < timeout:
        try:
            settled = set(
                Ticket.objects.filter(
                    pk__in=pending, state__in=SETTLED_STATES, run__status__in=["idle", "failed"]
                ).values_list("pk", flat=True)
            ) | set(
                Ticket.objects.filter(pk__in=pending, run__status="waiting").values_list(
                    "pk", flat=True
                )
            )
        except Exception as exc:  # a restarting database (chaos)
            st.say(f"drain: {type(exc).__name__}")
            connections.close_all()
            time.sleep(1)
            continue
        pending = [pk for pk in pending if pk not in settled]
        if not quiet and time.monotonic() - last_report > 15:
            st.say(f"drain: {len(pending)} of {len(pks)} not answered yet")
            last_report = time.monotonic()
        if pending:
            time.sleep(1)
    return time.monotonic() - t0


def completed_between(rows: Sequence[TicketRow], t0: dt.datetime, t1: dt.datetime) -> int:
    return sum(
        1 for r in rows if r.done and r.answered_at is not None and t0 <= r.answered_at <= t1
    )


def now() -> dt.datetime:
    from django.utils import timezone

    return timezone.now()


# --- a phase ----------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    rate: float  # offered, per minute (0 for a burst)
    t0: float = 0.0
    t1: float = 0.0
    wall0: dt.datetime | None = None
    wall1: dt.datetime | None = None
    pks: list[int] = field(default_factory=list)
    submit_errors: list[str] = field(default_factory=list)


def run_phase(
    driver: Driver,
    name: str,
    tickets: Sequence[st.Ticket],
    *,
    rate: float = 0.0,
    seconds: float = 0.0,
    burst: int = 0,
) -> Phase:
    phase = Phase(name=name, rate=rate)
    start = len(driver.submissions)
    phase.t0, phase.wall0 = time.monotonic(), now()
    if burst:
        driver.burst(tickets, count=burst, offset=start)
        driver.wait()
    else:
        driver.steady(tickets, rate_per_min=rate, seconds=seconds)
        driver.wait()
    phase.t1, phase.wall1 = time.monotonic(), now()
    subs = driver.submissions[start:]
    phase.pks = [s.ticket_pk for s in subs if s.ticket_pk is not None]
    phase.submit_errors = [s.error for s in subs if s.error]
    took = [s.ms for s in subs]
    st.say(
        f"{name}: {len(subs)} submitted in {phase.t1 - phase.t0:.1f} s "
        f"(submit p50 {percentile(took, 50)} ms, p95 {percentile(took, 95)} ms), "
        f"{len(phase.submit_errors)} refused"
        + (f"; first: {phase.submit_errors[0]}" if phase.submit_errors else "")
    )
    return phase


def warm_up(submit: Callable[..., int], tickets: Sequence[st.Ticket], workers: int) -> None:
    """A few tickets of each lane first, so each worker's first model loads and imports are
    not timed as load."""
    picks: list[st.Ticket] = []
    for lane in st.LANE_FILES:
        picks.extend([t for t in tickets if t.lane == lane][: 2 * workers])
    pks = [submit(t) for t in picks]
    took = drain(pks, timeout=180, quiet=True)
    st.say(f"warm-up: {len(pks)} tickets answered in {took:.1f} s")


def cold_pass(stack: st.Stack, submit: Callable[..., int], tickets: Sequence[st.Ticket]) -> dict:
    """Every ticket of the mix once, 8 at a time, before the measured phases: the golden mix
    has 120 distinct texts, so later phases repeat them and find the FAQ answer cache and the
    retrieval cache warm. What the first pass costs is reported on its own."""
    mark0 = st.cpu_mark(stack)
    cpu0 = st.cpu_seconds({**stack.app_processes(), **stack.infra_processes()})
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        pks = list(pool.map(submit, tickets))
    drain(pks, timeout=600, quiet=True)
    took = time.monotonic() - t0
    cpu1 = st.cpu_seconds({**stack.app_processes(), **stack.infra_processes()})
    rows = list(ticket_rows(pks).values())
    figures = {
        "tickets": len(pks),
        "seconds": round(took, 1),
        "per_min": round(len(pks) * 60 / took, 1),
        "cpu_ms_per_ticket_with_infra": round(
            sum(cpu1.get(k, 0) - cpu0.get(k, 0) for k in cpu1) * 1000 / max(len(pks), 1)
        ),
        "calls_per_ticket": round(sum(r.calls for r in rows) / max(len(rows), 1), 3),
        "cpu_share": st.cpu_share(mark0, st.cpu_mark(stack)),
    }
    st.say(f"cold pass: {figures}")
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=300.0, help="steady tickets per minute")
    parser.add_argument("--duration", type=float, default=180.0, help="steady seconds")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--knee", default="", help="rates to step through first, e.g. 150,300,600")
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="threads per worker")
    parser.add_argument("--web-workers", type=int, default=1)
    parser.add_argument("--submit", choices=["auto", "api", "inprocess"], default="auto")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with the logs")
    args = parser.parse_args(argv)

    options = st.Options(
        workers=args.workers,
        concurrency=args.concurrency,
        web_workers=args.web_workers,
        keep=args.keep,
        env=BENCH_ENV,
    )
    load_before = st.machine_load()
    with st.Stack(options) as stack:
        result = run_load(stack, args)
    result["machine_load_before"] = load_before
    print(json.dumps(result), flush=True)


# The API's own per-key and per-customer limits are for abuse, not for a load test's few keys.
BENCH_ENV = {
    "API_RATE_LIMIT_PER_KEY_PER_MINUTE": "100000",
    "API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE": "100000",
}


def make_submitter(stack: st.Stack, mode: str, tickets: Sequence[st.Ticket]) -> Any:
    if mode == "api" or (mode == "auto" and api_available()):
        return ApiSubmitter(stack)
    return InProcessSubmitter()


def run_load(stack: st.Stack, args: argparse.Namespace) -> dict[str, Any]:
    tickets = st.golden_mix()
    submit = make_submitter(stack, args.submit, tickets)
    st.say(f"submitting through {submit.path}; {len(tickets)} golden tickets in the mix")
    warm_up(submit, tickets, args.workers)
    cold = cold_pass(stack, submit, tickets)

    sampler = Sampler()
    sampler.start()
    driver = Driver(submit)
    app_pids = stack.app_processes()
    cpu0, infra0 = st.cpu_seconds(app_pids), st.cpu_seconds(stack.infra_processes())
    pg0 = st.postgres_cpu_seconds(stack)
    knee_steps: list[dict[str, Any]] = []
    try:
        for rate in [float(r) for r in args.knee.split(",") if r.strip()]:
            mark0 = st.cpu_mark(stack)
            phase = run_phase(
                driver, f"knee {rate:g}/min", tickets, rate=rate, seconds=args.step_seconds
            )
            share = st.cpu_share(mark0, st.cpu_mark(stack))
            knee_steps.append({**step_figures(phase, sampler), "cpu_share": share})
            drain(phase.pks, timeout=args.drain_timeout)
        mark0 = st.cpu_mark(stack)
        steady = run_phase(
            driver, f"steady {args.rate:g}/min", tickets, rate=args.rate, seconds=args.duration
        )
        steady_cpu = st.cpu_share(mark0, st.cpu_mark(stack))
        backlog_end_of_steady = sampler.in_flight_now()
        drain(steady.pks, timeout=args.drain_timeout)
        burst = Phase(name="no burst", rate=0.0, t0=time.monotonic(), t1=time.monotonic())
        burst_drain_s = 0.0
        if args.burst:
            burst = run_phase(driver, f"burst {args.burst}", tickets, burst=args.burst)
            burst_drain_s = drain(burst.pks, timeout=args.drain_timeout)
        t_end = time.monotonic()
    finally:
        driver.close()
        sampler.stop()
    tasks = task_totals()
    cpu1, infra1 = st.cpu_seconds(app_pids), st.cpu_seconds(stack.infra_processes())
    pg1 = st.postgres_cpu_seconds(stack)
    load_after = st.machine_load()

    all_pks = [pk for s in driver.submissions if s.ticket_pk is not None for pk in [s.ticket_pk]]
    rows = ticket_rows(all_pks)
    steady_rows = [rows[pk] for pk in steady.pks if pk in rows]
    burst_rows = [rows[pk] for pk in burst.pks if pk in rows]
    every = list(rows.values())
    answered = [r for r in every if r.done]
    failed = [r for r in every if r.state == "failed"]
    unsettled = [r for r in every if not (r.done or r.waiting)]
    submit_errors = [s.error for s in driver.submissions if s.error]

    assert steady.wall0 is not None
    assert steady.wall1 is not None
    minutes = (steady.wall1 - steady.wall0).total_seconds() / 60
    per_min = completed_between(steady_rows, steady.wall0, steady.wall1) / minutes
    in_flight_max, running_max = sampler.max_between(burst.t0, t_end)
    steady_in_flight, steady_running = sampler.max_between(steady.t0, steady.t1)
    cpu_app = sum(cpu1.get(k, 0) - cpu0.get(k, 0) for k in cpu1)
    cpu_infra = {k: round(infra1.get(k, 0) - infra0.get(k, 0), 1) for k in infra1}
    cpu_infra["postgres"] = round(pg1 - pg0, 1)
    n = max(len(answered), 1)
    result = {
        "bench": "load",
        "tickets_per_min": round(per_min, 1),
        "in_flight_max": in_flight_max,
        "p95_s_by_lane": p95_by_lane(steady_rows),
        "calls_per_ticket": round(sum(r.calls for r in every) / max(len(every), 1), 3),
        "cost_per_ticket_usd": round(sum(r.cost for r in every) / max(len(every), 1), 6),
        "cpu_ms_per_ticket": round(cpu_app * 1000 / n),
        "errors": len(submit_errors) + len(failed) + len(unsettled),
        # What the figures above were measured with and around.
        "offered_per_min": args.rate,
        "steady_seconds": args.duration,
        "steady_tickets": len(steady.pks),
        "steady_backlog_at_end": backlog_end_of_steady,
        "steady_in_flight_max": steady_in_flight,
        "steady_running_max": steady_running,
        # Who used the 2 cores during the steady phase (the machine is shared).
        "steady_cpu_share": steady_cpu,
        "burst": args.burst,
        "burst_accept_s": round(burst.t1 - burst.t0, 1),
        "burst_drain_s": round(burst_drain_s, 1),
        "burst_running_max": running_max,
        "burst_unsettled": sum(1 for r in burst_rows if not (r.done or r.waiting)),
        "burst_p95_s_by_lane": p95_by_lane(burst_rows),
        "p50_s_by_lane": {
            lane: percentile(
                [r.latency_s for r in steady_rows if r.lane == lane and r.latency_s is not None], 50
            )
            for lane in p95_by_lane(steady_rows)
        },
        "errors_detail": {
            "submit_refused": len(submit_errors),
            "failed": len(failed),
            "unsettled": len(unsettled),
            "waiting": sum(1 for r in every if r.waiting),
        },
        "states": _counts(r.state for r in every),
        "infra_cpu_s": cpu_infra,
        "infra_cpu_ms_per_ticket": round(sum(cpu_infra.values()) * 1000 / n),
        "cold_pass": cold,
        "knee": knee_steps,
        # Tasks the workers ran per ticket, against the steps they committed: the difference is
        # duplicate deliveries (a sweep re-queuing a run whose message is only waiting).
        "tasks_per_ticket": {
            name.rsplit(".", 1)[-1]: round(n / max(len(every), 1), 2) for name, n in tasks.items()
        },
        "steps_per_ticket": round(steps_of(all_pks) / max(len(every), 1), 2),
        "submit_path": submit.path,
        "workers": args.workers,
        "threads_per_worker": args.concurrency,
        "machine_load_after": load_after,
    }
    st.say(
        f"steady {args.rate:g}/min: {per_min:.1f}/min answered, p95 by lane "
        f"{result['p95_s_by_lane']}; burst {args.burst}: in flight max {in_flight_max} "
        f"(running {running_max}), drained in {burst_drain_s:.0f} s; errors {result['errors']}; "
        f"cpu {result['cpu_ms_per_ticket']} ms/ticket app + {result['infra_cpu_ms_per_ticket']} "
        f"infra; load {load_after}"
    )
    return result


def task_totals() -> dict[str, int]:
    """Tasks run so far, by name, summed over the live workers (Celery's own counters)."""
    from ledgerly.celery import app

    totals: dict[str, int] = defaultdict(int)
    for stats in (app.control.inspect(timeout=5).stats() or {}).values():
        for name, n in stats.get("total", {}).items():
            totals[name] += n
    return dict(totals)


def steps_of(pks: Sequence[int]) -> int:
    from support.models import RunStep

    return sum(
        RunStep.objects.filter(run__ticket__in=chunk).count() for chunk in _chunks(list(pks), 2000)
    )


def step_figures(phase: Phase, sampler: Sampler) -> dict[str, Any]:
    drain(phase.pks, timeout=300, quiet=True)
    rows = list(ticket_rows(phase.pks).values())
    assert phase.wall0 is not None
    assert phase.wall1 is not None
    minutes = (phase.wall1 - phase.wall0).total_seconds() / 60
    latencies = [r.latency_s for r in rows if r.latency_s is not None]
    in_flight, running = sampler.max_between(phase.t0, phase.t1)
    figures = {
        "offered_per_min": phase.rate,
        "answered_per_min": round(completed_between(rows, phase.wall0, phase.wall1) / minutes, 1),
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "in_flight_max": in_flight,
        "running_max": running,
        "errors": len(phase.submit_errors) + sum(1 for r in rows if r.state == "failed"),
        "load1": st.machine_load()["load1"],
    }
    st.say(f"{phase.name}: {figures}")
    return figures


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for v in values:
        out[v] += 1
    return dict(sorted(out.items()))


if __name__ == "__main__":
    main()
