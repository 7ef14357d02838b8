"""Chaos: faults while golden-mix load runs, then count what was lost, refunded twice, overspent.

Starts the same stack as bench/load.py (bench/stack.py) with shorter recovery timers (a step's
lease 30 s, beat's run sweep every 5 s, the broker's visibility timeout 60 s, the refund
reconciler every 10 s) and small budgets, so the budget guard is really tested: a per-customer
daily budget that the busiest demo customers reach during the run, and a global daily budget.
While tickets arrive at `rate` per minute (each submission retried, with one idempotency key,
until accepted, as a client of the REST API would), a staff member approves the refund requests
waiting for a decision every 20 s (so refunds execute while faults land), and on a schedule:

    SIGKILL one worker (restarted 5 s later)       restart Redis (SIGKILL, 3 s down)
    restart Postgres (immediate stop, 3 s down)    a 429/529 storm from the model (20 s)
    SIGKILL both workers (restarted 5 s later)     SIGKILL a worker while refunds execute

then the load stops and the stack settles (the sweeps resume killed runs, the reconciler finishes
interrupted refunds) until every accepted ticket is answered or waiting, or `--settle` passes.

    python bench/chaos.py [--rate 120] [--duration 240] [--settle 300]

* accepted: submissions that got a ticket id (after retries); refused: those that never did.
* terminal: accepted tickets answered, awaiting the customer or staff, escalated, or failed into
  a dead letter (dead_letters says how many); waiting: runs waiting for a wake-up time (a
  deferral or a paused budget).
* lost: accepted tickets missing from the database, or neither terminal nor waiting after the
  settle period.
* refunded_twice: charges refunded more than once or beyond their amount (Refund rows), refund
  requests with more than one refund, and refunds the payment processor's ledger holds twice
  for one idempotency key or that have no Refund row.
* budget_overshoot_usd: LLMCall spend today above the global daily budget, plus each customer's
  spend above the per-customer daily budget (0 when every budget held).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import load
import stack as st

CHAOS_ENV = {
    **load.BENCH_ENV,
    "SUPPORT_STEP_LEASE_SECONDS": "30",
    "SUPPORT_SWEEP_EVERY_SECONDS": "5",
    "CELERY_VISIBILITY_TIMEOUT_SECONDS": "60",
    "CELERY_UNACKED_RESTORE_INTERVAL_SECONDS": "5",
    "REFUND_RECONCILE_AFTER_SECONDS": "10",
    "REFUND_RECONCILE_EVERY_SECONDS": "10",
}


class Retrying:
    """Submit with one idempotency key until accepted (a client of the API retrying a 5xx or a
    dropped connection), for up to `patience` seconds."""

    def __init__(self, submit: Callable[..., int], *, patience: float = 60.0) -> None:
        self.submit = submit
        self.patience = patience
        self.path = getattr(submit, "path", "?") + " (retried with an Idempotency-Key)"
        self.retries: Counter[str] = Counter()

    def __call__(self, ticket: st.Ticket) -> int:
        key = f"chaos-{uuid.uuid4().hex}"
        deadline = time.monotonic() + self.patience
        pause = 0.5
        while True:
            try:
                return self.submit(ticket, key)
            except Exception as exc:
                self.retries[type(exc).__name__] += 1
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 5.0)


class Staff(threading.Thread):
    """Approves every refund request waiting for a decision, every `every` seconds."""

    def __init__(self, every: float = 20.0) -> None:
        super().__init__(daemon=True, name="staff")
        self.every = every
        self.approved = 0
        self.errors: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db import connections

        from billing import services
        from billing.models import RefundRequest

        while not self.stopping.wait(self.every):
            try:
                staff = get_user_model().objects.get(username="staff")
                for request in RefundRequest.objects.filter(state="proposed")[:200]:
                    try:
                        services.refund_request_approve(refund_request=request, actor=staff)
                        self.approved += 1
                    except Exception as exc:  # decided meanwhile, expired, or a fault
                        self.errors[type(exc).__name__] += 1
            except Exception as exc:  # Postgres restarting
                self.errors[type(exc).__name__] += 1
            finally:
                connections.close_all()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def schedule(
    stack: st.Stack,
    t0: float,
    log: list[dict[str, Any]],
    stop: threading.Event,
    supervisor: Supervisor,
) -> None:
    """The faults, at fixed offsets from t0 (seconds)."""

    def at(offset: float) -> bool:
        wait = t0 + offset - time.monotonic()
        return not (wait > 0 and stop.wait(wait))

    def note(event: str, **detail: Any) -> None:
        entry = {"t": round(time.monotonic() - t0, 1), "event": event, **detail}
        log.append(entry)
        st.say(f"chaos: {entry}")

    def kill_workers(indexes: Sequence[int], down: float = 5.0) -> None:
        with supervisor.hold(indexes):
            for i in indexes:
                stack.kill_worker(i)
            note("SIGKILL workers", workers=list(indexes))
            time.sleep(down)
            for i in indexes:
                stack.start_worker(i)
            note("workers restarted", workers=list(indexes))

    supervisor.note = note

    steps: list[tuple[float, Callable[[], None]]] = [
        (20, lambda: kill_workers([0])),
        (50, lambda: note("redis restarted", down_s=round(stack.restart_redis(down_seconds=3), 1))),
        (
            85,
            lambda: note(
                "postgres restarted", down_s=round(stack.restart_postgres(down_seconds=3), 1)
            ),
        ),
        (120, lambda: storm(stack, note, seconds=20)),
        (165, lambda: kill_workers([0, 1])),
        (200, lambda: kill_workers([1])),
    ]
    for offset, action in steps:
        if not at(offset):
            return
        try:
            action()
        except Exception as exc:  # a harness failure is reported, the run goes on
            note("harness error", error=f"{type(exc).__name__}: {exc}"[:300])


class Supervisor(threading.Thread):
    """What systemd or Kubernetes does for a worker: start it again when its process exits
    (except while the schedule holds it down on purpose). Each restart is an event."""

    def __init__(self, stack: st.Stack) -> None:
        super().__init__(daemon=True, name="supervisor")
        self.stack = stack
        self.note: Callable[..., None] = lambda event, **detail: st.say(f"{event} {detail}")
        self.held: set[int] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)

    @contextlib.contextmanager
    def hold(self, indexes: Sequence[int]) -> Iterator[None]:
        with self.lock:
            self.held |= set(indexes)
        try:
            yield
        finally:
            with self.lock:
                self.held -= set(indexes)

    def run(self) -> None:
        while not self.stopping.wait(1):
            with self.lock:
                for index, proc in enumerate(self.stack.workers):
                    if index in self.held or proc is None or proc.poll() is None:
                        continue
                    self.note("worker exited; supervisor restarts it", worker=index,
                              code=proc.returncode)  # fmt: skip
                    self.stack.start_worker(index)


def storm(stack: st.Stack, note: Callable[..., None], *, seconds: float) -> None:
    """Every model request answered 429 or 529 for `seconds` (the simulator restarted with a
    fault rate of 1), then the normal simulator again."""
    stack.start_simulator(
        LLM_SIMULATOR_FAULT_RATE="1.0", LLM_SIMULATOR_RANDOM_FAULTS="overloaded,rate_limited"
    )
    note("429/529 storm begins", seconds=seconds)
    time.sleep(seconds)
    stack.start_simulator()
    note("429/529 storm ends")


# --- counting -----------------------------------------------------------------------------------
def refunded_twice() -> dict[str, Any]:
    from django.db.models import Count, Sum

    from billing.models import Charge, Refund
    from billing.processor.simulator import SimulatedProcessor

    succeeded = Refund.objects.filter(status="succeeded")
    per_charge = {
        row["charge"]: row
        for row in succeeded.values("charge").annotate(n=Count("pk"), total=Sum("amount"))
    }
    amounts = dict(Charge.objects.filter(pk__in=per_charge).values_list("pk", "amount"))
    over_amount = [c for c, row in per_charge.items() if row["total"] > amounts[c]]
    # One charge may be refunded in parts by several requests; twice for one request is wrong.
    per_request = (
        Refund.objects.exclude(refund_request=None)
        .values("refund_request")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    ledger = SimulatedProcessor().all_refunds()
    keys = Counter(r.idempotency_key for r in ledger)
    ledger_twice = sum(1 for n in keys.values() if n > 1)
    known = set(
        Refund.objects.exclude(idempotency_key=None).values_list("idempotency_key", flat=True)
    )
    unrecorded = sum(1 for k in keys if k not in known)
    return {
        "charges_over_amount": len(over_amount),
        "requests_refunded_twice": per_request,
        "processor_keys_applied_twice": ledger_twice,
        "processor_refunds_without_row": unrecorded,
        "refunds_succeeded": succeeded.count(),
        "charges_refunded": len(per_charge),
        "charges_refunded_more_than_once": sum(1 for row in per_charge.values() if row["n"] > 1),
        "processor_refunds": len(ledger),
    }


def budget_overshoot() -> dict[str, Any]:
    import datetime as dt

    from django.conf import settings
    from django.db.models import Sum
    from django.utils import timezone

    from ledgerly.llm.models import LLMCall

    today = timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    calls = LLMCall.objects.filter(created_at__gte=today)
    spent = calls.aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)
    daily = Decimal(settings.LLM_DAILY_BUDGET_USD)
    per_customer = Decimal(settings.LLM_CUSTOMER_DAILY_BUDGET_USD)
    by_customer = dict(
        calls.values("customer_id").annotate(s=Sum("cost_usd")).values_list("customer_id", "s")
    )
    customer_over = {c: s - per_customer for c, s in by_customer.items() if s > per_customer}
    global_over = max(Decimal(0), spent - daily)
    return {
        "spent_usd": float(round(spent, 6)),
        "daily_budget_usd": float(daily),
        "customer_daily_budget_usd": float(per_customer),
        "global_over_usd": float(round(global_over, 6)),
        "customers_over": {c: float(round(v, 6)) for c, v in customer_over.items()},
        "customers_at_budget": sum(1 for s in by_customer.values() if s >= per_customer * 9 / 10),
        "overshoot_usd": float(round(global_over + sum(customer_over.values(), Decimal(0)), 6)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=120.0, help="tickets per minute")
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of load")
    parser.add_argument("--settle", type=float, default=300.0, help="seconds to settle after")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--customer-budget-usd", default="0.02")
    parser.add_argument("--daily-budget-usd", default="1.00")
    parser.add_argument("--submit", choices=["auto", "api", "inprocess"], default="auto")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    env = {
        **CHAOS_ENV,
        "LLM_CUSTOMER_DAILY_BUDGET_USD": args.customer_budget_usd,
        "LLM_DAILY_BUDGET_USD": args.daily_budget_usd,
    }
    options = st.Options(
        workers=args.workers, concurrency=args.concurrency, keep=args.keep, env=env
    )
    load_before = st.machine_load()
    with st.Stack(options) as stack:
        result = run_chaos(stack, args)
    result["machine_load_before"] = load_before
    print(json.dumps(result), flush=True)


def run_chaos(stack: st.Stack, args: argparse.Namespace) -> dict[str, Any]:
    from support.models import DeadLetter, Ticket

    tickets = st.golden_mix()
    plain = load.make_submitter(stack, args.submit, tickets)
    submit = Retrying(plain)
    st.say(f"submitting through {submit.path}")
    load.warm_up(plain, tickets, args.workers)

    events: list[dict[str, Any]] = []
    stop = threading.Event()
    driver = load.Driver(submit, threads=128)
    staff = Staff()
    sampler = load.Sampler()
    sampler.start()
    staff.start()
    t0 = time.monotonic()
    supervisor = Supervisor(stack)
    supervisor.start()
    chaos = threading.Thread(
        target=schedule, args=(stack, t0, events, stop, supervisor), daemon=True
    )
    chaos.start()
    try:
        driver.steady(tickets, rate_per_min=args.rate, seconds=args.duration)
        driver.wait()
        chaos.join(timeout=120)
        st.say(f"load done after {time.monotonic() - t0:.0f} s; settling")
        accepted = [s.ticket_pk for s in driver.submissions if s.ticket_pk is not None]
        settle_s = load.drain(accepted, timeout=args.settle)
    finally:
        stop.set()
        supervisor.stop()
        driver.close()
        staff.stop()
        sampler.stop()

    refused = [s.error for s in driver.submissions if s.ticket_pk is None]
    rows = load.ticket_rows(accepted)
    missing = [pk for pk in accepted if pk not in rows]
    terminal = [r for r in rows.values() if r.done]
    waiting = [r for r in rows.values() if r.waiting]
    stuck = [r for r in rows.values() if not (r.done or r.waiting)]
    twice = refunded_twice()
    budget = budget_overshoot()
    result = {
        "bench": "chaos",
        "accepted": len(accepted),
        "terminal": len(terminal),
        "lost": len(missing) + len(stuck),
        "refunded_twice": twice["charges_over_amount"]
        + twice["requests_refunded_twice"]
        + twice["processor_keys_applied_twice"]
        + twice["processor_refunds_without_row"],
        "budget_overshoot_usd": budget["overshoot_usd"],
        # The detail behind the five figures.
        "submitted": len(driver.submissions),
        "refused": len(refused),
        "refused_errors": dict(Counter(e.split(":")[0] for e in refused)),
        "submit_retries": dict(submit.retries),
        "waiting": len(waiting),
        "missing": len(missing),
        "stuck": [(r.pk, r.state, r.run_status) for r in stuck][:20],
        "dead_letters": DeadLetter.objects.filter(run__ticket__in=accepted).count(),
        "states": dict(Counter(r.state for r in rows.values())),
        "escalation_reasons": escalation_reasons(accepted),
        "settle_s": round(settle_s, 1),
        "refunds": twice,
        "refund_approvals": staff.approved,
        "budget": budget,
        "events": events,
        "in_flight_max": sampler.max_between(t0, time.monotonic())[0],
        "tickets_in_db": Ticket.objects.count(),
        "submit_path": submit.path,
        "machine_load_after": st.machine_load(),
    }
    st.say(
        f"accepted {result['accepted']}, terminal {result['terminal']}, waiting "
        f"{result['waiting']}, lost {result['lost']}, refunded twice {result['refunded_twice']}, "
        f"overshoot ${result['budget_overshoot_usd']}"
    )
    return result


def escalation_reasons(pks: Sequence[int]) -> dict[str, int]:
    from support.models import Escalation

    out: dict[str, int] = defaultdict(int)
    for reason in Escalation.objects.filter(ticket__in=pks).values_list("reason", flat=True):
        out[reason] += 1
    return dict(sorted(out.items()))


if __name__ == "__main__":
    main()
