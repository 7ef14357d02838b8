"""Support tasks: each takes ids and calls one service or one runner step."""

from __future__ import annotations

from celery import shared_task

from support import memories, releases, runner, services, sweeps


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def advance_run(run_id: int, step: int) -> str:
    """One step of a run. Safe to run twice: a step is claimed and committed conditionally."""
    return runner.advance(run_id=run_id, step=step)


@shared_task(acks_late=True, ignore_result=True)
def sweep_runs() -> dict[str, int]:
    """Beat: wake runs whose wait is over, take over steps whose worker was lost."""
    return sweeps.runs_sweep()


@shared_task(acks_late=True, ignore_result=True)
def refund_request_changed(refund_request_id: int, state: str) -> int:
    """Billing announced a refund request's new state: tell the customer."""
    return services.refund_request_news(refund_request_id=refund_request_id, state=state)


@shared_task(acks_late=True, ignore_result=True)
def sweep_memories() -> dict[str, int]:
    """Beat: extract what to remember from conversations that went quiet (Message Batches)."""
    return memories.memories_sweep()


@shared_task(acks_late=True, ignore_result=True)
def check_releases() -> dict[str, object]:
    """Beat: compare the candidate release with the current one; roll it back past a threshold."""
    return releases.releases_check()
