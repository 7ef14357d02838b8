"""Beat's run sweep under a backlog: a ready run whose message waits in the queue is re-queued
once per stale period, not on every sweep (duplicates would compete with the real steps)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from support import services, sweeps, tasks
from support.models import Run
from tests.support.conftest import customer


def test_a_stale_ready_run_is_requeued_once_per_stale_period(demo_world, monkeypatch):
    delivered: list[tuple[int, int]] = []
    monkeypatch.setattr(tasks.advance_run, "delay", lambda *args: delivered.append(args))
    ticket = services.ticket_submit(
        customer=customer("ana.lopez@example.com"), text="Do you support SEPA direct debit?"
    )
    run = Run.objects.get(ticket=ticket)
    assert delivered == [(run.pk, run.step)]  # intake queued its first step
    stale = dt.timedelta(seconds=sweeps.READY_STALE_SECONDS + 1)
    Run.objects.filter(pk=run.pk).update(updated_at=timezone.now() - stale)

    assert sweeps.runs_sweep()["queued"] == 1  # its message may have been lost: sent again
    assert sweeps.runs_sweep()["queued"] == 0  # the next sweep leaves the queued copy alone
    # Still not started a stale period later: that copy may be lost too.
    assert sweeps.runs_sweep(now=timezone.now() + stale)["queued"] == 1
    assert delivered == [(run.pk, run.step)] * 3
