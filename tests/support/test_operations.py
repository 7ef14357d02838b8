"""Intake, kill switches, dead letters and refund news, end to end in one process."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction

from billing import services as billing_services
from billing.models import RefundRequest, RefundRequestState
from billing.processor.simulator import SimulatedProcessor
from memory.models import Message
from support import runner, services
from support.lanes import faq
from support.models import (
    DeadLetter,
    Escalation,
    Run,
    RunStatus,
    RunStep,
    Ticket,
    TicketState,
)
from tests.support.conftest import ask, customer, drive

pytestmark = pytest.mark.usefixtures("demo_world", "sim_gateway")


# --- intake ------------------------------------------------------------------------------------
def test_a_message_is_stored_with_its_ticket_and_run_and_no_model_is_called():
    from ledgerly.llm.models import LLMCall

    ticket = services.ticket_submit(customer=customer("ana.lopez@example.com"), text="hello?")
    assert ticket.state == TicketState.RECEIVED
    assert Run.objects.get(ticket=ticket).status == RunStatus.READY
    assert list(
        Message.objects.filter(conversation=ticket.conversation).values_list("content", flat=True)
    ) == ["hello?"]
    assert ticket.conversation.customer_id == ticket.customer_id
    assert not LLMCall.objects.exists()


@pytest.mark.parametrize("text", ["", "   ", "\x00\x00", "x" * (services.MAX_MESSAGE_CHARS + 1)])
def test_a_bad_message_is_refused_and_nothing_is_stored(text):
    with pytest.raises(services.IntakeError):
        services.ticket_submit(customer=customer("ana.lopez@example.com"), text=text)
    assert not Ticket.objects.exists()
    assert not Message.objects.exists()


def test_a_follow_up_on_someone_elses_ticket_is_refused():
    ticket = services.ticket_submit(customer=customer("ana.lopez@example.com"), text="hi")
    with pytest.raises(services.IntakeError):
        services.ticket_submit(
            customer=customer("ben.okafor@example.com"), text="me too", ticket=ticket
        )
    assert Message.objects.filter(conversation=ticket.conversation).count() == 1


def test_intake_refuses_to_run_inside_a_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        services.ticket_submit(customer=customer("ana.lopez@example.com"), text="hi")
    assert not Ticket.objects.exists()


def test_a_retried_submission_with_the_same_key_creates_one_ticket():
    ana = customer("ana.lopez@example.com")
    first = services.ticket_submit(customer=ana, text="hi", idempotency_key="k-1")
    again = services.ticket_submit(customer=ana, text="hi", idempotency_key="k-1")
    assert first.pk == again.pk
    assert Ticket.objects.count() == 1


# --- kill switches --------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["global", "customer"])
def test_a_kill_switch_sends_tickets_to_staff_without_agent_work(scope):
    from ledgerly.llm.models import LLMCall

    ana = customer("ana.lopez@example.com")
    services.kill_switch_set(
        enabled=True, actor="staff:test", customer=ana if scope == "customer" else None
    )
    ticket = ask("ana.lopez@example.com", "I was charged twice, please refund the duplicate")
    assert ticket.state == TicketState.ESCALATED
    assert Escalation.objects.get(ticket=ticket).reason == "kill_switch"
    assert not RefundRequest.objects.exists()
    assert not LLMCall.objects.filter(ticket_id=str(ticket.pk)).exists()
    assert "paused" in ticket.reply


def test_a_customer_kill_switch_leaves_other_customers_alone():
    services.kill_switch_set(
        enabled=True, actor="staff:test", customer=customer("ben.okafor@example.com")
    )
    ticket = ask("ana.lopez@example.com", "Can I pay by SEPA direct debit?")
    assert ticket.state == TicketState.ANSWERED


def test_switching_it_off_again_restores_agent_work():
    services.kill_switch_set(enabled=True, actor="staff:test")
    services.kill_switch_set(enabled=False, actor="staff:test")
    assert (
        ask("ana.lopez@example.com", "Can I pay by SEPA direct debit?").state
        == TicketState.ANSWERED
    )


# --- dead letters ------------------------------------------------------------------------------
def test_a_step_that_keeps_failing_becomes_a_dead_letter_and_a_retry_resumes_it(
    monkeypatch, settings
):
    settings.SUPPORT_STEP_RETRIES = 1
    real = faq.answer_question
    monkeypatch.setattr(faq, "answer_question", lambda *a, **k: 1 / 0)
    ticket = ask("ana.lopez@example.com", "Can I pay by SEPA direct debit?")
    assert ticket.state == TicketState.FAILED
    letter = DeadLetter.objects.get(run__ticket=ticket)
    assert "ZeroDivisionError" in letter.error
    assert letter.checkpoint["lane"] == "faq"  # the last committed checkpoint: routed, not answered
    steps_before = list(RunStep.objects.filter(run__ticket=ticket).values_list("kind", flat=True))
    assert steps_before == ["route"]

    monkeypatch.setattr(faq, "answer_question", real)
    assert services.dead_letter_retry(dead_letter=letter)
    assert not services.dead_letter_retry(dead_letter=letter)  # once
    drive(ticket)
    assert ticket.state == TicketState.ANSWERED
    kinds = list(
        RunStep.objects.filter(run__ticket=ticket).order_by("index").values_list("kind", flat=True)
    )
    assert kinds == ["route", "faq_answer"]  # the finished route step was not repeated


def test_a_duplicate_delivery_of_a_step_does_nothing():
    ticket = services.ticket_submit(
        customer=customer("ana.lopez@example.com"), text="Can I pay by SEPA?"
    )
    run = Run.objects.get(ticket=ticket)
    # Routed by the rules (no model), so its lane step follows in the same task.
    assert runner.advance(run_id=run.pk, step=0) == "route+faq_answer"
    assert runner.advance(run_id=run.pk, step=0) == "not-claimed"
    assert runner.advance(run_id=run.pk, step=1) == "not-claimed"
    assert list(RunStep.objects.filter(run=run).values_list("kind", flat=True)) == [
        "route",
        "faq_answer",
    ]


# --- refund news -------------------------------------------------------------------------------
def test_an_executed_refund_is_told_in_the_customers_conversation():
    SimulatedProcessor().reset()
    ticket = ask("ana.lopez@example.com", "you charged me twice this month, refund the duplicate")
    request = RefundRequest.objects.get(source=f"ticket:{ticket.pk}")
    staff = User.objects.create_user("approver", password="x-not-used-x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="decide_refundrequest"))
    staff = User.objects.get(pk=staff.pk)
    billing_services.refund_request_approve(refund_request=request, actor=staff)
    billing_services.issue_refund(refund_request=RefundRequest.objects.get(pk=request.pk))
    request.refresh_from_db()
    assert request.state == RefundRequestState.EXECUTED
    # The task billing sends by name (a worker would run it): posted once, however often.
    assert services.refund_request_news(refund_request_id=request.pk, state="executed") == 1
    assert services.refund_request_news(refund_request_id=request.pk, state="executed") == 0
    ticket.refresh_from_db()
    assert ticket.state == TicketState.ANSWERED
    assert "$49.00 has been issued" in ticket.reply
    last = Message.objects.filter(conversation=ticket.conversation).order_by("-seq").first()
    assert last is not None
    assert last.content == ticket.reply


# --- forget me ------------------------------------------------------------------------------------
def test_forget_me_blanks_the_customers_words_and_leaves_other_customers_alone():
    from memory.models import SemanticCacheLookup

    mine = ask("ana.lopez@example.com", "My company is Lopez Design, can I pay by SEPA?")
    theirs = ask("ben.okafor@example.com", "Can I pay by SEPA direct debit?")
    counts = services.customer_forget(customer=customer("ana.lopez@example.com"))
    assert counts["messages"] >= 2
    texts = set(
        Message.objects.filter(conversation=mine.conversation).values_list("content", flat=True)
    )
    assert texts == {services.FORGOTTEN}
    assert not SemanticCacheLookup.objects.filter(question__icontains="Lopez Design").exists()
    assert (
        Message.objects.filter(conversation=theirs.conversation)
        .exclude(content=services.FORGOTTEN)
        .count()
        == 2
    )


def test_a_new_message_on_a_failed_ticket_is_answered(monkeypatch, settings):
    settings.SUPPORT_STEP_RETRIES = 0
    real = faq.answer_question
    monkeypatch.setattr(faq, "answer_question", lambda *a, **k: 1 / 0)
    ticket = ask("ana.lopez@example.com", "Can I pay by SEPA direct debit?")
    assert ticket.state == TicketState.FAILED
    monkeypatch.setattr(faq, "answer_question", real)
    services.ticket_submit(
        customer=customer("ana.lopez@example.com"),
        text="hello? which cards do you accept?",
        ticket=ticket,
    )
    drive(ticket)
    assert ticket.state == TicketState.ANSWERED
    assert DeadLetter.objects.filter(run__ticket=ticket).count() == 1  # still there for staff


# --- budgets ------------------------------------------------------------------------------------
def test_a_spent_customer_budget_makes_the_run_visibly_wait_for_the_next_day(settings, sim_gateway):
    from django.utils import timezone

    settings.LLM_CUSTOMER_DAILY_BUDGET_USD = Decimal("0.000001")
    sim_gateway()
    ticket = services.ticket_submit(
        customer=customer("ana.lopez@example.com"), text="Can I pay by SEPA direct debit?"
    )
    run = Run.objects.get(ticket=ticket)
    for _ in range(3):
        run.refresh_from_db()
        if run.status == RunStatus.READY:
            runner.advance(run_id=run.pk, step=run.step)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    assert "budget" in run.wait_reason
    assert run.wake_at is not None
    assert run.wake_at.date() == (timezone.now() + dt.timedelta(days=1)).date()
    ticket.refresh_from_db()
    assert ticket.state not in (TicketState.FAILED, TicketState.ANSWERED)
