"""Support writes: intake, kill switches, escalations, dead-letter retries, refund news.

The step engine itself is in `support.runner`; this module is what the surfaces (chat, API,
admin) and other apps' announcements call.
"""

from __future__ import annotations

import functools

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import Customer, RefundRequest, RefundRequestState
from billing.policy import format_money
from memory import services as memory_services
from memory.models import Message, MessageRole
from support import live
from support.models import (
    ApiKey,
    DeadLetter,
    Escalation,
    EscalationState,
    KillSwitch,
    KillSwitchScope,
    RefundNotice,
    Run,
    RunStatus,
    Ticket,
    TicketState,
)
from support.steps import enqueue_step

MAX_MESSAGE_CHARS = 20_000


class IntakeError(ValueError):
    """The message cannot be accepted as it is (empty, too long, not the customer's ticket)."""


class IdempotencyConflict(IntakeError):
    """The idempotency key was used before for a different submission (nothing was stored)."""


def _replay(*, idempotency_key: str, customer: Customer, fingerprint: str) -> Ticket | None:
    existing = Ticket.objects.filter(idempotency_key=idempotency_key).first()
    if existing is None:
        return None
    # Another customer's ticket under the key is never handed back (whatever the fingerprint).
    if existing.customer_id != customer.pk or (
        fingerprint and existing.idempotency_fingerprint != fingerprint
    ):
        raise IdempotencyConflict("this idempotency key was used for another submission")
    return existing


def _check_text(text: str) -> str:
    cleaned = text.replace("\x00", "").strip()
    if not cleaned:
        raise IntakeError("the message is empty")
    if len(cleaned) > MAX_MESSAGE_CHARS:
        raise IntakeError(f"the message is longer than {MAX_MESSAGE_CHARS} characters")
    return cleaned


def ticket_submit(
    *,
    customer: Customer,
    text: str,
    channel: str = "api",
    ticket: Ticket | None = None,
    idempotency_key: str | None = None,
    idempotency_fingerprint: str = "",
    api_key: ApiKey | None = None,
) -> Ticket:
    """Store a customer's message (a new ticket, or a follow-up on `ticket`) and, after commit,
    queue its run. No model is called here. `ticket` must be `customer`'s. With
    `idempotency_key`, a retried submission returns the ticket the first one created (also when
    two arrive at once: the key is unique); with `idempotency_fingerprint` (a digest of what
    was submitted), a reuse of the key for something else raises IdempotencyConflict.
    `api_key` is the REST API key that opened the ticket, if any.

    Raises IntakeError for an empty or oversized message or someone else's ticket."""
    cleaned = _check_text(text)
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(
            "ticket_submit must run outside a transaction (it queues work on commit)"
        )
    if ticket is not None and ticket.customer_id != customer.pk:
        raise IntakeError("that ticket does not belong to this customer")
    if ticket is None and idempotency_key:
        existing = _replay(
            idempotency_key=idempotency_key, customer=customer, fingerprint=idempotency_fingerprint
        )
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            if ticket is None:
                conversation = memory_services.conversation_start(customer=customer)
                ticket = Ticket.objects.create(
                    customer=customer,
                    conversation=conversation,
                    channel=channel,
                    subject=cleaned[:200],
                    state=TicketState.RECEIVED,
                    idempotency_key=idempotency_key,
                    idempotency_fingerprint=idempotency_fingerprint if idempotency_key else "",
                    api_key=api_key,
                )
                run = Run.objects.create(
                    ticket=ticket, checkpoint={"phase": "idle", "answered_through": 0}
                )
                memory_services.message_append(
                    conversation=conversation, role=MessageRole.CUSTOMER, content=cleaned
                )
                Run.objects.filter(pk=run.pk).update(status=RunStatus.READY)
                enqueue_step(run_id=run.pk, step=run.step)
                return ticket
            message = memory_services.message_append(
                conversation=ticket.conversation, role=MessageRole.CUSTOMER, content=cleaned
            )
            # A follow-up continues the same run: wake it if it is between messages (a run in
            # the middle of a step picks the message up when it commits).
            run = Run.objects.select_for_update().get(ticket=ticket)
            if run.status == RunStatus.FAILED:
                # Its last message was answered with the holding reply and is a dead letter for
                # staff (retrying it resumes that step); the new message is answered afresh.
                checkpoint = {
                    **run.checkpoint,
                    "phase": "idle",
                    "awaiting": None,
                    "answered_through": message.seq - 1,
                }
                Run.objects.filter(pk=run.pk).update(checkpoint=checkpoint, status=RunStatus.IDLE)
                Ticket.objects.filter(pk=ticket.pk).update(state=TicketState.IN_LANE)
                run.status = RunStatus.IDLE
            if run.status == RunStatus.IDLE:
                Run.objects.filter(pk=run.pk).update(
                    status=RunStatus.READY, updated_at=timezone.now()
                )
                enqueue_step(run_id=run.pk, step=run.step)
    except IntegrityError:
        if idempotency_key:  # a concurrent submission with the same key committed first
            existing = _replay(
                idempotency_key=idempotency_key,
                customer=customer,
                fingerprint=idempotency_fingerprint,
            )
            if existing is not None:
                return existing
        raise
    ticket.refresh_from_db()
    return ticket


# --- kill switches -------------------------------------------------------------------------------
def kill_switch_set(
    *, enabled: bool, actor: str, customer: Customer | None = None, reason: str = ""
) -> KillSwitch:
    """Turn the global switch (customer None) or one customer's on or off. While on, no agent
    work runs: new and running tickets go to staff with a holding reply."""
    scope = KillSwitchScope.CUSTOMER if customer is not None else KillSwitchScope.GLOBAL
    switch, _ = KillSwitch.objects.update_or_create(
        scope=scope,
        customer=customer,
        defaults={"enabled": enabled, "reason": reason, "updated_by": actor},
    )
    return switch


# --- escalations --------------------------------------------------------------------------------
def escalation_open(
    *, ticket: Ticket, reason: str, detail: str, facts: dict[str, object] | None = None
) -> Escalation | None:
    """Open `ticket`'s escalation with the raw facts (charges, policy, conversation, the agent's
    steps) unless one is live already; returns the new one, or None."""
    from support.selectors import escalation_facts

    if Escalation.objects.filter(
        ticket=ticket, state__in=[EscalationState.OPEN, EscalationState.CLAIMED]
    ).exists():
        return None
    try:
        with transaction.atomic():
            return Escalation.objects.create(
                ticket=ticket,
                reason=reason[:60],
                detail=detail,
                facts={**escalation_facts(ticket=ticket), **(facts or {})},
            )
    except IntegrityError:  # a concurrent step opened it first (one live per ticket)
        return None


def escalation_claim(*, escalation: Escalation, actor: User) -> bool:
    """Take an open escalation for `actor`. A conditional update: of two staff claiming at once,
    one gets it; False (nothing changed) when it was already claimed or resolved."""
    changed = Escalation.objects.filter(pk=escalation.pk, state=EscalationState.OPEN).update(
        state=EscalationState.CLAIMED, claimed_by=actor
    )
    escalation.refresh_from_db()
    return changed == 1


class EscalationClosed(ValueError):
    """The escalation is resolved: nobody replies through it any more."""


@transaction.atomic
def escalation_reply(*, escalation: Escalation, actor: User, text: str) -> Message:
    """Post a staff member's reply into the customer's conversation (role `staff`), as the
    ticket's latest reply. An open escalation is claimed for `actor` on the way. The ticket
    stays with staff (escalated) until the escalation is resolved. After commit the reply is
    published to the ticket's live events, so an open chat shows it at once.

    Raises IntakeError for an empty or oversized text, EscalationClosed when resolved."""
    cleaned = _check_text(text)
    locked = Escalation.objects.select_for_update().select_related("ticket").get(pk=escalation.pk)
    if locked.state == EscalationState.RESOLVED:
        raise EscalationClosed(f"escalation #{locked.pk} is resolved")
    if locked.state == EscalationState.OPEN:
        Escalation.objects.filter(pk=locked.pk).update(
            state=EscalationState.CLAIMED, claimed_by=actor
        )
    ticket = locked.ticket
    message = memory_services.message_append(
        conversation=ticket.conversation, role=MessageRole.STAFF, content=cleaned
    )
    Ticket.objects.filter(pk=ticket.pk).update(reply=cleaned, updated_at=timezone.now())
    ticket_id, seq, state = ticket.pk, message.seq, ticket.state
    transaction.on_commit(
        lambda: _publish_staff_reply(
            ticket_id=ticket_id, message_seq=seq, text=cleaned, state=state
        )
    )
    escalation.refresh_from_db()
    return message


def _publish_staff_reply(*, ticket_id: int, message_seq: int, text: str, state: str) -> None:
    from support import events

    events.publish(
        ticket_id=ticket_id,
        kind="reply",
        data={
            "message_seq": message_seq,
            "text": text,
            "sources": [],
            "state": state,
            "lane": "",
            "role": MessageRole.STAFF,
        },
    )


def escalation_resolve(*, escalation: Escalation, settle_ticket: bool = False) -> bool:
    """Close a live escalation (False if it was resolved already). With `settle_ticket`, an
    escalated ticket counts as answered from now on (staff dealt with it in the conversation)."""
    with transaction.atomic():
        changed = Escalation.objects.filter(
            pk=escalation.pk, state__in=[EscalationState.OPEN, EscalationState.CLAIMED]
        ).update(state=EscalationState.RESOLVED, resolved_at=timezone.now())
        if changed and settle_ticket:
            Ticket.objects.filter(pk=escalation.ticket_id, state=TicketState.ESCALATED).update(
                state=TicketState.ANSWERED, updated_at=timezone.now()
            )
    escalation.refresh_from_db()
    return changed == 1


# --- dead letters ---------------------------------------------------------------------------------
def dead_letter_retry(*, dead_letter: DeadLetter) -> bool:
    """Resume the run from its last committed checkpoint (finished steps are not repeated)."""
    with transaction.atomic():
        if (
            DeadLetter.objects.filter(
                pk=dead_letter.pk, retried_at__isnull=True, discarded_at__isnull=True
            ).update(retried_at=timezone.now())
            != 1
        ):
            return False
        run = Run.objects.select_for_update().get(pk=dead_letter.run_id)
        if run.status != RunStatus.FAILED:
            return False
        checkpoint = {**run.checkpoint, "retries": 0}
        Run.objects.filter(pk=run.pk).update(status=RunStatus.READY, checkpoint=checkpoint)
        Ticket.objects.filter(run=run).update(state=TicketState.IN_LANE)
        run.refresh_from_db()
        enqueue_step(run_id=run.pk, step=run.step)
    return True


def dead_letter_discard(*, dead_letter: DeadLetter) -> bool:
    return (
        DeadLetter.objects.filter(
            pk=dead_letter.pk, retried_at__isnull=True, discarded_at__isnull=True
        ).update(discarded_at=timezone.now())
        == 1
    )


# --- news from billing ----------------------------------------------------------------------------
_NEWS = {
    RefundRequestState.EXECUTED: "Your refund of {amount} has been issued to your original payment "
    "method. It takes 5-10 business days to appear on your statement.",
    RefundRequestState.APPROVED: "A staff member approved your refund of {amount}. It is being "
    "sent back to your original payment method now.",
    RefundRequestState.REJECTED: "A staff member reviewed your refund request for {amount} and did "
    "not approve it. {note}",
    RefundRequestState.FAILED: "Your approved refund of {amount} could not be completed, so a "
    "human on our team will look at it and reply here.",
}


def refund_request_news(*, refund_request_id: int, state: str) -> int:
    """Tell the customer, in each ticket's conversation, what happened to their request. Safe to
    run twice: each piece of news is posted once per ticket (the run's checkpoint remembers)."""
    request = RefundRequest.objects.filter(pk=refund_request_id).first()
    if request is None or state not in _NEWS or request.state != state:
        return 0
    amount = format_money(request.amount, request.currency)
    note = f"The note says: {request.decision_note}" if request.decision_note else ""
    text = _NEWS[RefundRequestState(state)].format(amount=amount, note=note).strip()
    posted = 0
    for ticket in Ticket.objects.filter(refund_request=request, customer=request.customer_id):
        with transaction.atomic():
            _, created = RefundNotice.objects.get_or_create(
                ticket=ticket, refund_request=request, state=state
            )
            if not created:
                continue
            message = memory_services.message_append(
                conversation=ticket.conversation, role=MessageRole.ASSISTANT, content=text
            )
            # An open chat shows the news at once (published after commit, like every reply).
            transaction.on_commit(
                functools.partial(
                    live.reply_committed,
                    ticket_id=ticket.pk,
                    message_seq=message.seq,
                    text=text,
                    sources=[],
                )
            )
            new_state = ticket.state
            if state in (RefundRequestState.EXECUTED, RefundRequestState.REJECTED):
                new_state = TicketState.ANSWERED
            if state == RefundRequestState.FAILED:
                new_state = TicketState.ESCALATED
                escalation_open(
                    ticket=ticket,
                    reason="refund_failed",
                    detail=request.failure_reason or "the approved refund could not be executed",
                )
            Ticket.objects.filter(pk=ticket.pk).update(
                state=new_state, reply=text, updated_at=timezone.now()
            )
            posted += 1
    return posted


# --- forget me ------------------------------------------------------------------------------------
FORGOTTEN = "[deleted at the customer's request]"


def customer_forget(*, customer: Customer) -> dict[str, int]:
    """A customer's "forget me": memory deletes what it holds for them (memories, their
    embedding-cache rows, cache-lookup logs, hot copies); support blanks the text of their
    conversations and tickets. The rows stay (a refund request points at its ticket, and staff
    must still see that one was asked for), their words do not."""
    counts = memory_services.customer_forget(customer=customer)
    with transaction.atomic():
        counts["messages"] = Message.objects.filter(conversation__customer=customer).update(
            content=FORGOTTEN
        )
        counts["tickets"] = Ticket.objects.filter(customer=customer).update(
            subject=FORGOTTEN, reply=FORGOTTEN, sources=[]
        )
        Escalation.objects.filter(ticket__customer=customer).update(facts={}, detail=FORGOTTEN)
    return counts
