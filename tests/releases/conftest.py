from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Customer
from memory import services as memory_services
from support import releases
from support.models import Release, Run, RunStatus, ShadowOutput, Ticket, TicketState
from tests.support.conftest import (  # noqa: F401 (fixtures)
    demo_world,
    seeded_world,
    sim_gateway,
)


@pytest.fixture
def no_releases(transactional_db) -> Iterator[None]:
    """Releases made by a test are gone after it (set up before the demo world, so torn down
    after it has removed the tickets and their runs)."""
    yield
    ShadowOutput.objects.all().delete()
    Run.objects.filter(shadow_of__isnull=False).delete()
    Run.objects.update(release=None)
    Release.objects.all().delete()


@pytest.fixture
def candidate(no_releases) -> Callable[..., Release]:
    """A candidate release started as `mode` (its pins laid over the current release's)."""

    def start(
        mode: str = "canary", *, share: str | None = "1", name: str = "r2", **pins: object
    ) -> Release:
        release = releases.release_create(name=name, actor="test", **pins)  # type: ignore[arg-type]
        return releases.release_start(
            release=release,
            mode=mode,
            share=Decimal(share) if mode == "canary" and share else None,
            actor="staff:test",
        )

    return start


@pytest.fixture
def runs_of(no_releases) -> Callable[..., list[Run]]:
    """Settled runs of a release with known latency, cost and outcome, created `ago` before
    now (live runs with tickets of their own; `shadow=True`: shadows of new live runs)."""
    customer = Customer.objects.order_by("pk").first()
    assert customer is not None, "the demo world is seeded"

    def make(
        release: Release,
        n: int,
        *,
        latency_s: float = 2.0,
        cost: str = "0.0100",
        outcome: str = "completed",
        ago: dt.timedelta = dt.timedelta(minutes=5),
        shadow: bool = False,
        settled: bool = True,
    ) -> list[Run]:
        made = []
        created = timezone.now() - ago
        for _ in range(n):
            ticket = Ticket.objects.create(
                customer=customer,
                conversation=memory_services.conversation_start(customer=customer),
                state=TicketState.ANSWERED,
            )
            live = Run.objects.create(ticket=ticket, status=RunStatus.IDLE)
            run = Run.objects.create(shadow_of=live, status=RunStatus.IDLE) if shadow else live
            Run.objects.filter(pk=run.pk).update(
                release=release,
                created_at=created,
                settled_at=created + dt.timedelta(seconds=latency_s) if settled else None,
                outcome=outcome if settled else "",
                cost_usd=Decimal(cost),
            )
            made.append(run)
        return made

    return make
