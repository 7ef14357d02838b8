"""Reads of the gateway's records: calls per ticket and per run, spend summaries, batches due."""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.db.models import Count, QuerySet, Sum

from ledgerly.llm.models import LLMBatch, LLMCall


def llm_calls_for_ticket(*, ticket_id: object) -> QuerySet[LLMCall]:
    return LLMCall.objects.filter(ticket_id=str(ticket_id)).order_by("id")


def llm_calls_for_run(*, run_id: object) -> QuerySet[LLMCall]:
    return LLMCall.objects.filter(run_id=str(run_id)).order_by("id")


def llm_spend_for_run(*, run_id: object) -> dict[str, object]:
    """Recorded cost, tokens and step count of one run (all steps, failed ones included)."""
    totals = LLMCall.objects.filter(run_id=str(run_id)).aggregate(
        cost=Sum("cost_usd"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cache_read_input_tokens=Sum("cache_read_input_tokens"),
        cache_creation_input_tokens=Sum("cache_creation_input_tokens"),
        steps=Count("id"),
    )
    return {
        k: (v if v is not None else (Decimal(0) if k == "cost" else 0)) for k, v in totals.items()
    }


def batches_due(now: datetime.datetime) -> QuerySet[LLMBatch]:
    """Message Batches to poll now (for the beat sweep that calls `batches.batch_poll`), the
    longest waiting first."""
    return LLMBatch.objects.filter(state=LLMBatch.State.PROCESSING, next_poll_at__lte=now).order_by(
        "next_poll_at", "id"
    )
