"""Runs survive killed workers and long waits: real Celery workers, real Redis, real Postgres."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.utils import timezone

from billing.models import RefundRequest
from ledgerly.llm.models import LLMCall
from support import runner, services, sweeps
from support.models import Run, RunStatus, RunStep, TicketState
from support.selectors import ticket_settled
from tests.support.conftest import customer, drive

LEASE_SECONDS = 4


def wait_for(predicate, *, timeout: float, sweep: bool = False, every: float = 0.5) -> float:
    """Poll until `predicate()`; with `sweep`, run beat's sweep each time (beat is not running
    in tests). Returns the seconds waited; fails the test on the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        if sweep:
            sweeps.runs_sweep()
        time.sleep(every)
    pytest.fail(f"condition not met within {timeout} s")


@pytest.mark.slow
def test_a_run_killed_mid_step_finishes_on_another_worker_without_repeating_a_step(
    demo_world, celery_worker_process
):
    slow = celery_worker_process(
        concurrency=1,
        LLM_SIMULATOR_LATENCY_MEDIAN_MS="3000",
        LLM_SIMULATOR_LATENCY_SIGMA="0",
        SUPPORT_STEP_LEASE_SECONDS=str(LEASE_SECONDS),
        SUPPORT_SEMANTIC_CACHE="0",
    )
    ticket = services.ticket_submit(
        customer=customer("jonas.berg@example.com"),
        text="I want a refund for my last invoice, and please reissue it with my VAT ID on it.",
    )
    run = Run.objects.get(ticket=ticket)

    # Let it commit a few steps (route, model turns, a tool batch), then kill it mid-call.
    def just_claimed() -> bool:
        # A step claimed 0.2-1 s ago and still running is a model call (3 s), not a tool batch
        # (milliseconds, which may commit between this look and the kill): kill it in flight.
        current = Run.objects.get(pk=run.pk)
        age = (timezone.now() - current.updated_at).total_seconds()
        return (
            RunStep.objects.filter(run=run).count() >= 2
            and current.status == RunStatus.RUNNING
            and 0.2 < age < 1.0
        )

    wait_for(just_claimed, timeout=60, every=0.05)
    steps_before = RunStep.objects.filter(run=run).count()
    slow.kill()
    killed_at = time.monotonic()
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING  # its step died with it

    celery_worker_process(
        concurrency=2, SUPPORT_STEP_LEASE_SECONDS=str(LEASE_SECONDS), SUPPORT_SEMANTIC_CACHE="0"
    )
    wait_for(lambda: RunStep.objects.filter(run=run).count() > steps_before, timeout=60, sweep=True)
    resumed_after = time.monotonic() - killed_at
    wait_for(lambda: ticket_settled(ticket=ticket), timeout=90, sweep=True)

    indices = list(
        RunStep.objects.filter(run=run).order_by("index").values_list("index", flat=True)
    )
    assert indices == list(range(len(indices)))  # every step committed once, none skipped
    assert RefundRequest.objects.filter(source=f"ticket:{ticket.pk}").count() <= 1
    ticket.refresh_from_db()
    assert ticket.state in (
        TicketState.AWAITING_APPROVAL,
        TicketState.ANSWERED,
        TicketState.ESCALATED,
    )
    # The bound: the lease, plus a sweep (here every 0.5 s), plus the step itself.
    assert resumed_after < LEASE_SECONDS + 10


def test_a_defer_longer_than_the_visibility_timeout_waits_in_postgres_and_runs_once(
    demo_world, sim_gateway, settings, monkeypatch
):
    from support import tasks

    queued: list[tuple[tuple[object, ...], dict[str, Any]]] = []
    monkeypatch.setattr(
        tasks.advance_run,
        "apply_async",
        lambda args=(), kwargs=None, **kw: queued.append((args, kw)),
    )
    wait = settings.CELERY_VISIBILITY_TIMEOUT + 100
    sim_gateway(fault_rate=1.0, random_faults=("rate_limited",), retry_after_s=float(wait))

    ticket = services.ticket_submit(
        customer=customer("ana.lopez@example.com"), text="Do you support SEPA direct debit?"
    )
    run = Run.objects.get(ticket=ticket)
    for _ in range(3):  # route (rules: no model call), then the FAQ step meets the 429
        run.refresh_from_db()
        if run.status == RunStatus.READY:
            runner.advance(run_id=run.pk, step=run.step)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    assert run.wake_at is not None
    assert (run.wake_at - timezone.now()).total_seconds() > settings.CELERY_VISIBILITY_TIMEOUT
    # No broker countdown anywhere near the visibility timeout: the wait is a row.
    assert all(float(kw.get("countdown") or 0) <= 60 for _, kw in queued)
    ticket.refresh_from_db()
    assert ticket.state != TicketState.FAILED

    # The provider recovers; beat's sweep finds the wake-up time has passed.
    sim_gateway()
    Run.objects.filter(pk=run.pk).update(wake_at=timezone.now())
    delivered: list[tuple[int, int]] = []
    monkeypatch.setattr(tasks.advance_run, "delay", lambda *args: delivered.append(args))
    assert sweeps.runs_sweep() == {"woken": 1, "queued": 1}
    assert sweeps.runs_sweep()["queued"] == 0  # not queued again while ready and fresh
    for run_id, step in delivered:
        runner.advance(run_id=run_id, step=step)
        runner.advance(run_id=run_id, step=step)  # a redelivery of the same task
    drive(ticket)
    assert ticket.state == TicketState.ANSWERED
    kinds = list(RunStep.objects.filter(run=run).order_by("index").values_list("kind", flat=True))
    assert kinds == ["route", "faq_answer"]  # the deferred step ran once, after the wait
    assert (
        LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="faq_answer", outcome="ok").count()
        == 1
    )
    assert LLMCall.objects.filter(ticket_id=str(ticket.pk), outcome="deferred").count() >= 1
