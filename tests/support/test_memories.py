"""Facts worth remembering are extracted from quiet conversations through Message Batches."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from ledgerly.llm.models import LLMCall
from memory.models import CustomerMemory, Message
from support import memories
from support.models import Ticket
from tests.support.conftest import ask

pytestmark = pytest.mark.usefixtures("demo_world", "sim_gateway")


def go_quiet(ticket: Ticket) -> None:
    Message.objects.filter(conversation=ticket.conversation).update(
        created_at=timezone.now() - dt.timedelta(hours=2)
    )


def test_a_quiet_conversation_is_read_once_through_a_batch_and_its_facts_kept_with_provenance():
    ticket = ask(
        "jonas.berg@example.com",
        "We are a German design studio and we send about 40 invoices a month. Can I pay by SEPA?",
    )
    go_quiet(ticket)
    first = memories.memories_sweep()
    assert first["submitted"] == 1
    assert memories.memories_sweep()["submitted"] == 0  # never a second paid batch
    ticket.refresh_from_db()
    assert ticket.memory_batch_key == f"memory-extract:ticket:{ticket.pk}"
    # Polled (the simulator's batches end at once) until the results are stored.
    for _ in range(3):
        memories.memories_sweep(now=timezone.now() + dt.timedelta(minutes=5))
    ticket.refresh_from_db()
    assert ticket.memories_saved_at is not None
    kept = CustomerMemory.objects.filter(customer=ticket.customer)
    assert kept.exists()
    assert set(kept.values_list("conversation_id", flat=True)) == {ticket.conversation_id}
    calls = LLMCall.objects.filter(purpose="extract_memories")
    assert calls.exists()
    assert set(calls.values_list("run_id", flat=True)) == {f"memx-{ticket.pk}"}


def test_a_conversation_still_going_is_not_read():
    ask("ana.lopez@example.com", "Can I pay by SEPA direct debit?")
    assert memories.memories_sweep()["submitted"] == 0
