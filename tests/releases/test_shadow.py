"""A shadow release works a sample of live tickets beside the current one: its output is
recorded, never sent; it writes no message, refund request or escalation."""

from __future__ import annotations

import pytest

from billing.models import Refund, RefundRequest
from ledgerly.llm.models import LLMCall
from memory.models import Message
from support import releases, runner, services
from support.models import (
    Escalation,
    GuardIntervention,
    Run,
    RunStatus,
    ShadowOutput,
    Ticket,
    TicketState,
)
from tests.support.conftest import customer, drive

pytestmark = pytest.mark.usefixtures("no_releases", "demo_world", "sim_gateway")


@pytest.fixture
def shadow(candidate, settings):
    settings.RELEASE_SHADOW_SAMPLE = 1.0
    return candidate("shadow", model_ids={"small": "claude-sonnet-5-5"})


def drive_run(run: Run, *, max_steps: int = 40) -> Run:
    for _ in range(max_steps):
        run.refresh_from_db()
        if run.status == RunStatus.WAITING:
            Run.objects.filter(pk=run.pk).update(status=RunStatus.READY, wake_at=None)
            continue
        if run.status != RunStatus.READY:
            break
        runner.advance(run_id=run.pk, step=run.step)
    run.refresh_from_db()
    return run


def shadow_only(email: str, text: str) -> tuple[Ticket, Run]:
    """Submit a ticket and work only its shadow: the live run is given its release (which
    starts the shadow) but takes no step, so whatever was written, the shadow wrote."""
    ticket = services.ticket_submit(customer=customer(email), text=text)
    live = Run.objects.get(ticket=ticket)
    releases.run_release_assign(run=live)
    shadow_run = Run.objects.get(shadow_of=live)
    return ticket, drive_run(shadow_run)


ANA_TWICE = "hi, you charged me twice this month, I want my money back"
BEN_TWICE = "I was billed two times for the same invoice, refund please"
JONAS_MIXED = (
    "Two things: I want a refund for my last invoice, and please reissue it with my VAT ID "
    "DE123456789 on it."
)


@pytest.mark.parametrize(
    ("email", "text"),
    [
        ("ana.lopez@example.com", ANA_TWICE),  # refund workflow, over the auto-approval limit
        ("ben.okafor@example.com", BEN_TWICE),  # auto-approved: would queue the refund itself
        ("ana.lopez@example.com", "I want to talk to a human"),  # an escalation
        ("jonas.berg@example.com", JONAS_MIXED),  # the agent and its tools
        ("emma.schulz@example.com", "How long does a refund take to show up on my card?"),
    ],
)
def test_a_shadow_sends_nothing_and_writes_nothing_but_its_record(shadow, email, text):
    who = customer(email)
    requests_before = RefundRequest.objects.filter(customer=who).count()

    ticket, run = shadow_only(email, text)

    assert run.status == RunStatus.IDLE
    assert run.settled_at is not None
    ticket.refresh_from_db()
    assert (ticket.state, ticket.reply, ticket.lane) == (TicketState.RECEIVED, "", "")
    assert list(
        Message.objects.filter(conversation=ticket.conversation).values_list("role", flat=True)
    ) == ["customer"]
    assert RefundRequest.objects.filter(customer=who).count() == requests_before
    assert not Refund.objects.filter(refund_request__customer=who).exists()
    assert not Escalation.objects.filter(ticket=ticket).exists()
    assert not GuardIntervention.objects.filter(ticket=ticket).exists()
    final = ShadowOutput.objects.filter(run=run).order_by("step").last()
    assert final is not None, "the shadow's output is recorded"
    assert final.release == shadow
    assert final.live_run_id == run.shadow_of_id
    assert final.reply
    calls = LLMCall.objects.filter(run_id=f"run-{run.pk}")
    assert set(calls.values_list("customer_id", flat=True)) <= {f"shadow:{who.ref}"}


@pytest.mark.parametrize(
    ("email", "text", "amount", "auto"),
    [
        ("ana.lopez@example.com", ANA_TWICE, "49.00", False),
        ("ben.okafor@example.com", BEN_TWICE, "19.00", True),
    ],
)
def test_a_shadow_records_the_refund_request_it_would_have_made(shadow, email, text, amount, auto):
    _ticket, run = shadow_only(email, text)

    dry = [d for o in ShadowOutput.objects.filter(run=run) for d in o.dry_runs]
    [made] = [d["result"] for d in dry if d["service"] == "refund_request_create"]
    assert made["model"] == "billing.RefundRequest"
    assert made["auto_approved"] is auto
    assert made["amount"] == amount
    assert not RefundRequest.objects.filter(pk=made["id"]).exists()  # rolled back
    final = ShadowOutput.objects.filter(run=run).order_by("step").last()
    assert final is not None
    assert f"${made['amount']}" in final.reply


def test_a_shadow_records_the_escalation_it_would_have_opened(shadow):
    ticket, run = shadow_only("ana.lopez@example.com", "I want to talk to a human")

    [output] = ShadowOutput.objects.filter(run=run)
    assert output.escalation["reason"] == "customer_asked"
    assert "human" in output.reply
    assert not Escalation.objects.filter(ticket=ticket).exists()


def test_the_live_run_answers_as_usual_beside_its_shadow(shadow):
    who = customer("ana.lopez@example.com")
    ticket = services.ticket_submit(
        customer=who, text="hi, you charged me twice this month, I want my money back"
    )
    drive(ticket)
    live = Run.objects.get(ticket=ticket)
    shadow_run = drive_run(Run.objects.get(shadow_of=live))

    ticket.refresh_from_db()
    assert live.release == releases.release_current()
    assert ticket.state == TicketState.AWAITING_APPROVAL
    assert RefundRequest.objects.filter(source=f"ticket:{ticket.pk}").count() == 1
    assert Message.objects.filter(conversation=ticket.conversation).count() == 2
    assert ShadowOutput.objects.filter(run=shadow_run, reply__contains="$49.00").count() == 1
    assert not LLMCall.objects.filter(run_id=f"run-{live.pk}", customer_id__startswith="shadow:")


def test_a_shadow_answers_only_the_message_it_was_started_for(shadow):
    who = customer("emma.schulz@example.com")
    ticket, run = shadow_only("emma.schulz@example.com", "Which plans do you offer?")
    services.ticket_submit(customer=who, text="And can I pay by SEPA?", ticket=ticket)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.READY)

    assert runner.advance(run_id=run.pk, step=Run.objects.get(pk=run.pk).step) == "idle"
    assert ShadowOutput.objects.filter(run=run).values("message_seq").distinct().count() == 1


def test_no_shadow_outside_the_sample(candidate, settings):
    settings.RELEASE_SHADOW_SAMPLE = 0.0
    candidate("shadow")
    ticket = services.ticket_submit(
        customer=customer("emma.schulz@example.com"), text="Which plans do you offer?"
    )
    drive(ticket)
    assert not Run.objects.filter(shadow_of__ticket=ticket).exists()


def test_a_shadow_does_not_see_the_live_reply_to_its_message(shadow):
    ticket = services.ticket_submit(customer=customer("jonas.berg@example.com"), text=JONAS_MIXED)
    drive(ticket)  # the live run answers first
    ticket.refresh_from_db()
    assert ticket.first_lane == "agent"
    assert ticket.reply

    shadow_run = drive_run(Run.objects.get(shadow_of__ticket=ticket))

    messages = shadow_run.checkpoint["lane_state"]["messages"]
    said = [(m["role"], m["content"]) for m in messages if isinstance(m["content"], str)]
    assert said == [("user", JONAS_MIXED)]  # not the live reply, nor the message twice
