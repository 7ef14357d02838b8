"""Beat's sweep over runs: long waits and lost steps are rows, not broker countdowns."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q
from django.utils import timezone

from support.models import Run, RunStatus

# A ready run whose task has not started for this long lost its message (a broker restart).
READY_STALE_SECONDS = 30


def runs_sweep(*, now: dt.datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Queue the next step of every run that is due: a wait whose wake-at has passed, a step
    whose worker's lease expired (taken over by whoever gets the task), and a ready run whose
    task message was lost. Queuing twice is harmless: a step is claimed before it runs."""
    from support.tasks import advance_run

    now = now or timezone.now()
    waking = list(
        Run.objects.filter(status=RunStatus.WAITING, wake_at__lte=now).values_list("pk", flat=True)[
            :limit
        ]
    )
    woken = Run.objects.filter(pk__in=waking, status=RunStatus.WAITING).update(
        status=RunStatus.READY, wake_at=None, updated_at=now
    )
    stale = now - dt.timedelta(seconds=READY_STALE_SECONDS)
    due = list(
        Run.objects.filter(
            Q(pk__in=waking, status=RunStatus.READY)
            | Q(status=RunStatus.RUNNING, lease_until__lt=now)
            | Q(status=RunStatus.READY, updated_at__lte=stale)
        ).values_list("pk", "step")[:limit]
    )
    # A stale ready run is usually only waiting behind a backlog, its message still queued:
    # stamped as re-queued now, it is sent again only if it stays untouched another stale
    # period, not on every sweep (bench/load.py: a 1,000-ticket burst had each run re-queued
    # every 10 s while it drained, thousands of duplicate tasks competing with real steps).
    Run.objects.filter(
        pk__in=[pk for pk, _ in due], status=RunStatus.READY, updated_at__lte=stale
    ).update(updated_at=now)
    for run_id, step in due:
        advance_run.delay(run_id, step)
    return {"woken": woken, "queued": len(due)}
