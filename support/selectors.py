"""Support reads, scoped by their owner (the customer) wherever a customer asks."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from billing import policy
from billing import selectors as billing_selectors
from billing.models import Customer
from memory.models import Message
from support.models import SETTLED_STATES, Run, RunStatus, RunStep, Ticket


def tickets_for_customer(*, customer: Customer) -> QuerySet[Ticket]:
    return Ticket.objects.filter(customer=customer).order_by("-created_at", "-id")


def ticket_get_for_customer(*, customer: Customer, ticket_id: int) -> Ticket | None:
    return tickets_for_customer(customer=customer).filter(pk=ticket_id).first()


def ticket_settled(*, ticket: Ticket) -> bool:
    """The ticket's last message has its answer: it waits for someone, or is done."""
    ticket.refresh_from_db()
    status = Run.objects.filter(ticket=ticket).values_list("status", flat=True).first()
    return ticket.state in SETTLED_STATES and status in (RunStatus.IDLE, RunStatus.FAILED)


def ticket_messages(*, ticket: Ticket) -> list[Message]:
    return list(Message.objects.filter(conversation_id=ticket.conversation_id).order_by("seq"))


def escalation_facts(*, ticket: Ticket) -> dict[str, Any]:
    """The raw facts a staff member needs: the customer's charges with what the policy says of
    each, their refund requests, the conversation verbatim and the run's steps. No summary and
    no judgement of the customer."""
    now = timezone.now()
    customer = ticket.customer
    charges = []
    for charge in billing_selectors.charges_for_customer(customer=customer).select_related(
        "invoice"
    )[:12]:
        decision = policy.evaluate_refund(charge=charge, at=now)
        charges.append(
            {
                "ref": charge.ref,
                "invoice": charge.invoice.number,
                "amount": str(charge.amount),
                "currency": charge.currency,
                "status": charge.status,
                "charged_at": charge.charged_at.isoformat(),
                "disputed": charge.disputed_at is not None,
                "refunded_amount": str(charge.refunded_amount),
                "policy": {
                    "clause": decision.clause,
                    "refundable": str(decision.refundable_amount),
                    "reason": decision.reason,
                },
            }
        )
    requests = [
        {
            "id": r.pk,
            "charge": r.charge.ref,
            "amount": str(r.amount),
            "currency": r.currency,
            "state": r.state,
            "clause": r.clause,
        }
        for r in billing_selectors.refund_requests_for_customer(customer=customer)[:10]
    ]
    steps = [
        {"index": s.index, "kind": s.kind, "detail": s.detail}
        for s in RunStep.objects.filter(run__ticket=ticket).order_by("index")[:60]
    ]
    return {
        "customer": {"ref": customer.ref, "email": customer.email, "name": customer.name},
        "charges": charges,
        "refund_requests": requests,
        "conversation": [
            {"seq": m.seq, "role": m.role, "text": m.content}
            for m in ticket_messages(ticket=ticket)
        ],
        "route": ticket.route,
        "run_steps": steps,
    }
