"""Writes of the model gateway (the gateway itself calls these; other apps don't need to)."""

from __future__ import annotations

from django.db import connection, transaction

from ledgerly.llm.models import LLMCall


def llm_call_save(*, row: LLMCall) -> LLMCall:
    """Insert one call record (precondition: `row` is new, not yet saved).

    Outside a transaction it commits with synchronous_commit off: the row is durable unless the
    Postgres server itself crashes within a fraction of a second (the database then stays
    consistent but may lose the last few records), and the insert stops waiting for a disk flush,
    the largest part of the gateway's own cost per call. Inside a caller's transaction the
    caller's commit decides, so it is left alone."""
    if connection.in_atomic_block:
        row.save(force_insert=True)
        return row
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        row.save(force_insert=True)
    return row
