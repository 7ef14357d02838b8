"""Builders for the staff-page tests: staff users with and without the approver permission, a
customer login, proposed refund requests, tickets with escalations and dead letters."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from django.contrib.auth.models import Permission, User
from django.utils import timezone

from billing import services as billing_services
from billing.models import Customer, Interval, PlanCode, RefundRequest
from memory import services as memory_services
from memory.models import MessageRole
from support.models import (
    DeadLetter,
    Escalation,
    Run,
    RunStatus,
    Ticket,
    TicketState,
)
from tests.billing import factories as billing_factories

PASSWORD = "staff-test-password"
_seq = itertools.count(1)


def staff_user(*, approver: bool, username: str | None = None) -> User:
    user = User.objects.create_user(
        username or f"staff{next(_seq)}", password=PASSWORD, is_staff=True
    )
    if approver:
        user.user_permissions.add(Permission.objects.get(codename="decide_refundrequest"))
    return User.objects.get(pk=user.pk)  # fresh: empty permission cache


def customer_user() -> User:
    return User.objects.create_user(f"customer{next(_seq)}@example.test", password=PASSWORD)


def proposed_request(
    *,
    code: str = PlanCode.GROWTH,
    interval: str = Interval.MONTHLY,
    owner: Customer | None = None,
    source: str = "",
    days_ago: int = 2,
) -> RefundRequest:
    """A refund request that needs a staff decision (a full refund within the window, above
    the automatic-approval limit)."""
    charge = billing_factories.charge(
        charged_at=timezone.now() - dt.timedelta(days=days_ago),
        code=code,
        interval=interval,
        owner=owner,
    )
    request = billing_services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="test", source=source
    )
    if not request.requires_approval or request.amount <= Decimal(25):
        raise AssertionError(f"expected a request that needs approval, got {request}")
    return request


def ticket(
    *,
    owner: Customer | None = None,
    state: str = TicketState.ANSWERED,
    lane: str = "faq",
    messages: tuple[tuple[str, str], ...] = (("customer", "hello?"), ("assistant", "Hi!")),
) -> Ticket:
    owner = owner or billing_factories.customer()
    conversation = memory_services.conversation_start(customer=owner)
    for role, text in messages:
        memory_services.message_append(conversation=conversation, role=role, content=text)
    made = Ticket.objects.create(
        customer=owner,
        conversation=conversation,
        state=state,
        lane=lane,
        first_lane=lane,
        subject=messages[0][1][:200] if messages else "",
    )
    Run.objects.create(
        ticket=made,
        status=RunStatus.IDLE,
        checkpoint={"phase": "idle", "answered_through": conversation.last_seq},
    )
    return made


def escalation(*, owner: Customer | None = None) -> Escalation:
    made = ticket(
        owner=owner,
        state=TicketState.ESCALATED,
        lane="agent",
        messages=(
            (MessageRole.CUSTOMER, "I opened a chargeback by mistake, can you refund me?"),
            (MessageRole.ASSISTANT, "A person on our team will look at this and reply here."),
        ),
    )
    return Escalation.objects.create(
        ticket=made,
        reason="disputed_charge",
        detail="the charge is disputed: refunds through support are not allowed",
        facts={"charges": []},
    )


def dead_letter() -> DeadLetter:
    made = ticket(state=TicketState.FAILED, lane="faq")
    run = Run.objects.get(ticket=made)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, step=1)
    return DeadLetter.objects.create(
        run=run, error="ZeroDivisionError: division by zero", step=1, checkpoint=run.checkpoint
    )
