"""What to remember about a customer, extracted when a conversation goes quiet.

A conversation whose last message is older than SUPPORT_CONVERSATION_QUIET_MINUTES is read by
the small model through a Message Batch (half price; the answer is not urgent). Submitting is
idempotent per ticket (the batch key), polling is one step per beat sweep, and the facts are
stored with their provenance (the conversation) through `memory.services.customer_memory_add`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from ledgerly import llm
from ledgerly.llm import batches
from ledgerly.llm import selectors as llm_selectors
from memory import services as memory_services
from memory.models import Message
from support.models import SETTLED_STATES, Ticket, TicketState

log = structlog.get_logger(__name__)
KEY_PREFIX = "memory-extract:ticket:"
FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string", "maxLength": 300}, "maxItems": 5}
    },
    "required": ["facts"],
    "additionalProperties": False,
}


def _transcript(ticket: Ticket) -> str:
    names = {"customer": "Customer", "assistant": "Assistant", "staff": "Staff"}
    lines = [
        f"{names.get(m.role, m.role)}: {m.content}"
        for m in Message.objects.filter(conversation_id=ticket.conversation_id).order_by("seq")
    ]
    return "\n".join(lines)[-12000:]


def quiet_tickets(*, now: dt.datetime, limit: int = 100) -> list[Ticket]:
    """Settled tickets whose conversation has gone quiet and whose facts were never extracted."""
    quiet_since = now - dt.timedelta(minutes=settings.SUPPORT_CONVERSATION_QUIET_MINUTES)
    return list(
        Ticket.objects.select_related("customer")
        .filter(state__in=SETTLED_STATES, memory_batch_key="")
        .exclude(state=TicketState.FAILED)
        .annotate(last_message=Max("conversation__messages__created_at"))
        .filter(last_message__lt=quiet_since)
        .order_by("updated_at")[:limit]
    )


def extraction_submit(*, ticket: Ticket) -> str:
    """Submit the ticket's extraction batch (once: the key makes a repeat return the first)."""
    key = f"{KEY_PREFIX}{ticket.pk}"
    ctx = llm.CallContext.starting_now(
        run_id=f"memx-{ticket.pk}",
        ticket_id=str(ticket.pk),
        customer_ref=ticket.customer.ref,
        seconds=24 * 3600,
    )
    batches.batch_submit(
        ctx=ctx,
        key=key,
        requests=[
            batches.BatchRequest(
                custom_id=f"ticket-{ticket.pk}",
                tier="small",
                prompt="extract_memories",
                purpose="extract_memories",
                messages=[
                    {
                        "role": "user",
                        "content": f"<conversation>\n{_transcript(ticket)}\n</conversation>",
                    }
                ],
                max_tokens=400,
                output_schema=FACTS_SCHEMA,
            )
        ],
    )
    Ticket.objects.filter(pk=ticket.pk, memory_batch_key="").update(memory_batch_key=key)
    return key


def extraction_collect(*, ticket: Ticket, results: list[batches.BatchResult]) -> int:
    """Store the facts a finished batch found (once per ticket)."""
    if (
        Ticket.objects.filter(pk=ticket.pk, memories_saved_at__isnull=True).update(
            memories_saved_at=timezone.now()
        )
        != 1
    ):
        return 0
    saved = 0
    for result in results:
        if result.outcome != "succeeded" or not result.data:
            continue
        for fact in result.data.get("facts", [])[:5]:
            if isinstance(fact, str) and fact.strip():
                memory_services.customer_memory_add(
                    customer=ticket.customer,
                    text=fact,
                    conversation=ticket.conversation,
                    source="conversation",
                )
                saved += 1
    return saved


def memories_sweep(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Beat: submit batches for quiet conversations, poll the due ones, store what ended."""
    now = now or timezone.now()
    submitted = polled = saved = 0
    for ticket in quiet_tickets(now=now):
        try:
            extraction_submit(ticket=ticket)
            submitted += 1
        except (llm.Defer, llm.BudgetExhausted, llm.ModelCallFailed) as exc:
            log.warning("support.memory_extract_deferred", ticket=ticket.pk, error=str(exc))
            break
    for batch in llm_selectors.batches_due(now).filter(key__startswith=KEY_PREFIX)[:50]:
        polled += 1
        results = batches.batch_poll(batch=batch)
        if results is None:
            continue
        owner = Ticket.objects.filter(pk=int(batch.key.removeprefix(KEY_PREFIX))).first()
        if owner is not None:
            saved += extraction_collect(ticket=owner, results=results)
    return {"submitted": submitted, "polled": polled, "saved": saved}
