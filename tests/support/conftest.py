from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.core.management import call_command

from billing.models import Customer
from ledgerly.llm import gateway as gateway_module
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from support import runner, services
from support.models import Run, RunStatus, Ticket


@pytest.fixture(scope="module")
def seeded_world(django_db_setup, django_db_blocker) -> Iterator[int]:
    """The demo world, the help center and the router's exemplars, seeded once per module
    (seeding takes seconds, most tests take less) and flushed after it. Tests are transactional
    (tickets and model calls need real commits), so Django's per-test flush is skipped while
    the module runs and `demo_world` undoes what each test did instead. Yields the highest user
    id of the seed."""
    from django.contrib.auth.models import User
    from django.db.models import Max
    from django.test import TransactionTestCase

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransactionTestCase, "_fixture_teardown", lambda self: None)
        with django_db_blocker.unblock():
            call_command("seed_demo", verbosity=0)
            call_command("ingest_helpcenter", verbosity=0)
            call_command("seed_router_exemplars", verbosity=0)
            last_user = User.objects.aggregate(last=Max("pk"))["last"] or 0
        yield last_user
    with django_db_blocker.unblock():
        call_command("flush", verbosity=0, interactive=False)


@pytest.fixture
def demo_world(seeded_world, transactional_db, redis_client) -> Iterator[None]:
    """The seeded demo world (real Postgres, committed), put back as seeded after the test."""
    yield
    world_reset(last_user=seeded_world)


def world_reset(*, last_user: int) -> None:
    """Undo what a test did: every customer's tickets, conversations, memories and refund
    requests (the evaluation's own reset), and the rows no customer owns."""
    from django.contrib.auth.models import User

    from billing.models import RefundRequest
    from ledgerly.llm.models import LLMBatch, LLMCall
    from memory.models import (
        CustomerMemory,
        SemanticCacheEntry,
        SemanticCacheLookup,
    )
    from support.evaluation import reset_customer
    from support.models import ApiKey, AuditEntry, KillSwitch, RouterExemplar

    touched = set(Ticket.objects.values_list("customer_id", flat=True)) | set(
        RefundRequest.objects.values_list("customer_id", flat=True)
    )
    for who in Customer.objects.filter(pk__in=touched):
        reset_customer(who)
    KillSwitch.objects.all().delete()
    RouterExemplar.objects.exclude(source="seed").delete()
    for model in (LLMCall, LLMBatch, SemanticCacheEntry, SemanticCacheLookup, CustomerMemory):
        model.objects.all().delete()
    # What a test's own staff and integrations left (both hold their user by PROTECT).
    AuditEntry.objects.all().delete()
    ApiKey.objects.filter(owner_id__gt=last_user).delete()
    User.objects.filter(pk__gt=last_user).delete()


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
