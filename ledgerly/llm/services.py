"""Writes of the model gateway (the gateway itself calls these; other apps don't need to)."""

from __future__ import annotations

from django.db import connection, transaction

from ledgerly.llm.errors import CalledInsideTransaction
from ledgerly.llm.models import LLMCall


def check_outside_transaction(what: str) -> None:
    """Refuse to go on inside a caller's transaction (CalledInsideTransaction).

    A paid call's LLMCall record must be committed whatever its caller does next: written in the
    caller's transaction, a rollback would erase the record of money spent (and the transaction
    would stay open for the length of a model call). The check is Django's own for durable
    blocks, as `billing.services.issue_refund` uses: it passes outside any atomic block, and
    inside the test case's wrapping transaction (which tests roll back on purpose). Outside a
    transaction it touches no connection (a call must not take one from the pool for its whole
    length); inside one, the empty durable block without a savepoint sends nothing."""
    if not connection.in_atomic_block:
        return
    try:
        with transaction.atomic(durable=True, savepoint=False):
            pass
    except RuntimeError as exc:
        raise CalledInsideTransaction(
            f"{what} must not run inside a database transaction (transaction.atomic): "
            "a rollback would lose the record of a paid model call; call it before or after"
        ) from exc


def llm_call_save(*, row: LLMCall) -> LLMCall:
    """Insert one call record (precondition: `row` is new, not yet saved).

    Outside a transaction it commits with synchronous_commit off: the row is durable unless the
    Postgres server itself crashes within a fraction of a second (the database then stays
    consistent but may lose the last few records), and the insert stops waiting for a disk flush,
    the largest part of the gateway's own cost per call. Inside a caller's transaction the
    caller's commit decides, so it is left alone (only the gateway's own transactions and the
    test case's)."""
    if connection.in_atomic_block:
        row.save(force_insert=True)
        return row
    # One statement, one round trip: set_config(..., true) is SET LOCAL for the statement's own
    # implicit transaction, so it holds when that transaction commits.
    fields = [f for f in LLMCall._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
    table = connection.ops.quote_name(LLMCall._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {placeholders} "  # noqa: S608 (names from the model)
            "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit "
            "RETURNING id",
            values,
        )
        row.pk = cursor.fetchone()[0]
    row._state.adding = False
    return row
