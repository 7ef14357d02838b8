"""What the run engine tells the operators: each step's span and log context, and the line,
span and metrics of a finished message (`run.finished`: tokens, cost, outcome).

A message's trace starts with the web request that brought it; its traceparent is kept in the
run's checkpoint, so a step taken by another worker after a sweep (a lost lease, a wait) still
belongs to the ticket's trace rather than to the sweep's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import structlog
from django.utils import timezone

from ledgerly import metrics, tracing
from support.models import Run

log = structlog.get_logger("support.run")


def message_begun(checkpoint: dict[str, Any], *, step: int) -> dict[str, Any]:
    """The checkpoint of a message being started, with where and when it started."""
    return {
        **checkpoint,
        "message_step": step,
        "message_started_at": timezone.now().isoformat(),
        "traceparent": tracing.traceparent() or checkpoint.get("traceparent", ""),
    }


@contextlib.contextmanager
def step_scope(
    *, run_id: int, ticket_id: int, step: int, checkpoint: dict[str, Any]
) -> Iterator[Any]:
    """The span of one step and the log context of everything it does (run, ticket, lane)."""
    parent = tracing.context_from_traceparent(str(checkpoint.get("traceparent") or ""))
    lane = str(checkpoint.get("lane") or "")
    with (
        structlog.contextvars.bound_contextvars(run_id=run_id, ticket_id=ticket_id, lane=lane),
        tracing.tracer().start_as_current_span(
            "support.step",
            context=parent,
            attributes={
                "ledgerly.run_id": run_id,
                "ledgerly.ticket_id": ticket_id,
                "ledgerly.step": step,
                "ledgerly.lane": lane,
                "ledgerly.phase": str(checkpoint.get("phase") or ""),
            },
        ) as span,
    ):
        yield span


def routed(lane: str) -> None:
    """The router chose a lane: the rest of the step's lines and calls carry it."""
    structlog.contextvars.bind_contextvars(lane=lane)


def step_done(span: Any, *, kind: str, tokens: int, cost: Any) -> None:
    tracing.set_attributes(span, **{"ledgerly.kind": kind, "ledgerly.tokens": tokens})
    tracing.set_attributes(span, **{"ledgerly.cost_usd": cost})


def guard_intervened(*, lane: str, action: str) -> None:
    metrics.GUARD_INTERVENTIONS.labels(lane or "none", action).inc()


def semantic_cache(detail: dict[str, Any]) -> None:
    result = detail.get("cache")
    if result in ("hit", "miss"):
        metrics.CACHE_REQUESTS.labels("semantic", result).inc()


def escalated(reason: str) -> None:
    metrics.ESCALATIONS.labels(reason or "unknown").inc()


def run_finished(*, run_id: int, checkpoint: dict[str, Any], outcome: str, step: int) -> None:
    """The message is done (answered, waiting for the customer or staff, escalated, failed):
    its last log line, its run span and its metrics, with the run's tokens and cost."""
    totals = Run.objects.filter(pk=run_id).values("tokens", "cost_usd", "ticket_id").first()
    if totals is None:
        return
    lane = str(checkpoint.get("lane") or "")
    steps = max(step + 1 - int(checkpoint.get("message_step", 0) or 0), 1)
    started_at = checkpoint.get("message_started_at")
    seconds = 0.0
    if started_at:
        seconds = max((timezone.now() - dt.datetime.fromisoformat(started_at)).total_seconds(), 0)
    metrics.RUNS_FINISHED.labels(lane or "none", outcome).inc()
    metrics.TICKETS_TERMINAL.labels(outcome).inc()
    metrics.RUN_STEPS.labels(lane or "none").observe(steps)
    metrics.RUN_SECONDS.labels(lane or "none").observe(seconds)
    fields: dict[str, Any] = {
        "run_id": run_id,
        "ticket_id": totals["ticket_id"],
        "lane": lane,
        "outcome": outcome,
        "steps": steps,
        "tokens": int(totals["tokens"] or 0),
        "cost_usd": float(totals["cost_usd"] or 0),
        "duration_ms": round(seconds * 1000),
    }
    tracing.record_span(
        "support.run",
        seconds=seconds,
        parent=tracing.context_from_traceparent(str(checkpoint.get("traceparent") or "")),
        error="failed" if outcome == "failed" else None,
        attributes={f"ledgerly.{k}": v for k, v in fields.items()},
    )
    log.info("run.finished", **fields)
