"""What a customer watching a ticket is told: status texts, and the live events the runner sends.

`ticket_status(ticket=...)` reads the ticket, its run and its refund request (Postgres, the
truth) and says in the customer's words what is going on: "Checking your invoices…", "Waiting
for a staff member to approve a $49.00 refund", or a clear notice when the assistant cannot
answer now (budget paused, service degraded, kill switch on). The chat page renders it, the
polling endpoint returns it, and the runner publishes it as a `status` event (support/events.py)
when a step starts, a reply is committed or a run has to wait.

Publishing is best effort and happens after commit: an event never announces a row that a
rollback took back, and a lost event only delays the page until its next poll.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import Q

from billing.models import RefundRequest, RefundRequestState
from billing.policy import format_money
from support import events
from support.models import KillSwitch, KillSwitchScope, Lane, Run, RunStatus, Ticket, TicketState

WORKING_TEXT = {
    "route": "Reading your message…",
    Lane.FAQ: "Looking in the help center…",
    Lane.REFUND: "Checking your invoices…",
    Lane.AGENT: "Looking into your account…",
}
NOTICES = {
    "kill_switch": "Our automated assistant is paused right now. A member of our support team "
    "will answer you here.",
    "budget_paused": "Our automated assistant has reached its usage limit for today, so it is "
    "paused. Your message is saved and will be answered when it resumes, or you can ask for a "
    "person now.",
    "degraded": "Our assistant is having trouble reaching its language model, so answers are "
    "slower than usual. We're still working on your message.",
    "failed": "Something went wrong on our side while preparing your answer. Our support team "
    "has been told and will reply here.",
}
WITH_STAFF_TEXT = (
    "A member of our support team has your conversation and will reply here (Monday to Friday, "
    "08:00-18:00 CET)."
)


@dataclass(frozen=True)
class Status:
    text: str  # what to show now ("" when nothing is pending)
    state: str  # the ticket's state
    working: bool  # the assistant is working on the last message right now
    notice: str = ""  # "", or a key of NOTICES (a failure the page shows prominently)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kill_switch_on(ticket: Ticket) -> bool:
    return KillSwitch.objects.filter(
        Q(scope=KillSwitchScope.GLOBAL)
        | Q(scope=KillSwitchScope.CUSTOMER, customer=ticket.customer_id),
        enabled=True,
    ).exists()


def phase_text(checkpoint: dict[str, Any]) -> str:
    """The working status for the step a run is about to take."""
    if checkpoint.get("phase") in (None, "idle", "route"):
        return WORKING_TEXT["route"]
    return WORKING_TEXT.get(str(checkpoint.get("lane") or ""), WORKING_TEXT[Lane.AGENT])


def waiting_notice(wait_reason: str) -> str:
    """The notice for a run that waits (see support.runner._wait's reasons)."""
    if "budget" in wait_reason:
        return "budget_paused"
    return "degraded"


def refund_waiting_text(request: RefundRequest) -> str:
    amount = format_money(request.amount, request.currency)
    if request.state == RefundRequestState.PROPOSED:
        return f"Waiting for a staff member to approve a {amount} refund"
    if request.state == RefundRequestState.APPROVED:
        return f"Your {amount} refund is approved and being sent"
    return ""


def ticket_status(*, ticket: Ticket) -> Status:
    """Where `ticket` stands, for its customer (read fresh from the rows)."""
    run = Run.objects.filter(ticket=ticket).only("status", "checkpoint", "wait_reason").first()
    state = ticket.state
    if run is not None and run.status in (RunStatus.READY, RunStatus.RUNNING):
        if _kill_switch_on(ticket):
            return Status(NOTICES["kill_switch"], state, True, "kill_switch")
        return Status(phase_text(run.checkpoint), state, True)
    if run is not None and run.status == RunStatus.WAITING:
        notice = waiting_notice(run.wait_reason)
        return Status(NOTICES[notice], state, True, notice)
    if state == TicketState.FAILED or (run is not None and run.status == RunStatus.FAILED):
        return Status(NOTICES["failed"], state, False, "failed")
    if state == TicketState.AWAITING_APPROVAL and ticket.refund_request_id:
        request = RefundRequest.objects.filter(pk=ticket.refund_request_id).first()
        if request is not None:
            return Status(refund_waiting_text(request), state, False)
    if state == TicketState.ESCALATED:
        if _kill_switch_on(ticket):
            return Status(NOTICES["kill_switch"], state, False, "kill_switch")
        return Status(WITH_STAFF_TEXT, state, False)
    return Status("", state, False)


def release_label(checkpoint: dict[str, Any]) -> str:
    """What answered: the run's release when it has one, else its prompt versions and models
    (the run records them per purpose), at most 100 characters (AnswerRating.release)."""
    pins = checkpoint.get("pins")
    if isinstance(pins, dict) and pins.get("release"):
        return str(pins["release"])[:100]
    if checkpoint.get("release"):
        return str(checkpoint["release"])[:100]
    versions = checkpoint.get("versions") or {}
    prompts = sorted(set((versions.get("prompts") or {}).values()))
    models = sorted(set((versions.get("models") or {}).values()))
    return " ".join([*prompts, *models])[:100]


# --- what the runner publishes (after commit) ---------------------------------------------------
def publish_status(*, ticket_id: int, text: str, state: str, notice: str = "") -> None:
    events.publish(
        ticket_id=ticket_id,
        kind="status",
        data={"text": text, "state": state, "working": True, "notice": notice},
    )


def step_started(*, ticket: Ticket, checkpoint: dict[str, Any]) -> None:
    """A worker took a step of the ticket's run: say what it is doing."""
    publish_status(ticket_id=ticket.pk, text=phase_text(checkpoint), state=ticket.state)


def run_waiting(*, ticket_id: int, reason: str) -> None:
    notice = waiting_notice(reason)
    state = Ticket.objects.filter(pk=ticket_id).values_list("state", flat=True).first() or ""
    publish_status(ticket_id=ticket_id, text=NOTICES[notice], state=state, notice=notice)


def reply_committed(
    *, ticket_id: int, message_seq: int, text: str, sources: list[dict[str, str]]
) -> None:
    """The reply (already guarded) and the ticket's status after it."""
    ticket = Ticket.objects.filter(pk=ticket_id).first()
    if ticket is None:
        return
    status = ticket_status(ticket=ticket)
    events.publish(
        ticket_id=ticket_id,
        kind="reply",
        data={
            "message_seq": message_seq,
            "text": text,
            "sources": sources,
            "state": ticket.state,
            "lane": ticket.lane,
            "role": "assistant",
            "status": status.as_dict(),
        },
    )
