from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.core.management import call_command

from billing.models import Customer
from ledgerly.llm import gateway as gateway_module
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from support import runner, services
from support.models import Run, RunStatus, Ticket


@pytest.fixture
def demo_world(transactional_db, redis_client) -> None:
    """The seeded demo world, the help center and the router's exemplars (real Postgres)."""
    call_command("seed_demo", verbosity=0)
    call_command("ingest_helpcenter", verbosity=0)
    call_command("seed_router_exemplars", verbosity=0)


@pytest.fixture
def sim_gateway(redis_client, settings) -> Iterator[Callable[..., gateway_module.Gateway]]:
    """Install a gateway answered by an in-process simulator built from `SimulatorConfig(**kw)`
    (default: the competent, zero-latency one)."""
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_RETRY_AFTER_CAP_SECONDS = 2.0

    def install(transport: object | None = None, **config: object) -> gateway_module.Gateway:
        config.setdefault("retry_after_s", 0.01)
        inner = transport or SimulatorTransport(SimulatorConfig(**config))  # type: ignore[arg-type]
        gw = gateway_module.Gateway(inner_transport=inner)  # type: ignore[arg-type]
        gateway_module.install(gw)
        return gw

    install()
    yield install
    gateway_module.install(None)


def customer(email: str) -> Customer:
    return Customer.objects.get(email=email)


def drive(ticket: Ticket, *, max_steps: int = 40) -> Ticket:
    """Run the ticket's steps in this process until its last message is answered (the worker
    would do the same, one task per step)."""
    for _ in range(max_steps):
        run = Run.objects.get(ticket=ticket)
        if run.status == RunStatus.WAITING:
            Run.objects.filter(pk=run.pk).update(status=RunStatus.READY, wake_at=None)
            continue
        if run.status != RunStatus.READY:
            break
        runner.advance(run_id=run.pk, step=run.step)
    ticket.refresh_from_db()
    return ticket


def ask(email: str, *messages: str) -> Ticket:
    """A demo customer sends `messages` one after another, each after the last was answered."""
    who = customer(email)
    ticket = services.ticket_submit(customer=who, text=messages[0])
    drive(ticket)
    for text in messages[1:]:
        services.ticket_submit(customer=who, text=text, ticket=ticket)
        drive(ticket)
    ticket.refresh_from_db()
    return ticket
