"""Backups: a dump of a seeded world, restored into a fresh database, holds every ticket, refund
and idempotency key again (`make backup` / `make restore FILE=...` run ledgerly.backup)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from billing import services as billing
from billing.models import IdempotencyKey, Refund
from billing.processor.simulator import SimulatedProcessor
from ledgerly import backup
from support import services as support
from support.models import Ticket
from tests.billing import factories

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TICKET = ("id", "customer_id", "idempotency_key", "state")
REFUND = ("id", "charge_id", "amount", "status")
KEY = ("key", "fingerprint", "recovery_point", "refund_id")


def run_backup(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledgerly.backup", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def with_database(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def rows(url: str, table: str, *columns: str) -> set[tuple[object, ...]]:
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
    )
    with psycopg.connect(url) as conn:
        return set(conn.execute(query).fetchall())


@pytest.fixture
def world(test_database_url, redis_client) -> dict[str, str]:
    """Three customers, each with a refunded charge (refund, idempotency key) and two tickets
    opened with REST idempotency keys; committed, as a running service would have them."""
    processor = SimulatedProcessor()
    processor.reset()
    staff = User.objects.create_user("backup-approver", password="x-not-used-x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="decide_refundrequest"))
    staff = User.objects.get(pk=staff.pk)
    for n in range(3):
        charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=2))
        request = billing.refund_request_create(
            customer=charge.customer, charge=charge, proposed_by="test"
        )
        request = billing.refund_request_approve(refund_request=request, actor=staff)
        billing.issue_refund(refund_request=request, processor=processor)
        for m in range(2):
            support.ticket_submit(
                customer=charge.customer,
                text=f"Question {m} from customer {n}: where is my invoice?",
                idempotency_key=f"backup-{n}-{m}-{uuid.uuid4().hex[:8]}",
            )
    processor.reset()
    return {"url": test_database_url}


def test_a_restored_dump_holds_every_ticket_refund_and_idempotency_key(world, tmp_path):
    source = world["url"]
    tickets = set(Ticket.objects.values_list(*TICKET))
    refunds = set(Refund.objects.values_list(*REFUND))
    keys = set(IdempotencyKey.objects.values_list(*KEY))
    assert (len(tickets), len(refunds), len(keys)) == (6, 3, 3)
    fresh = f"restore_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh)))
    target = with_database(source, fresh)
    file = tmp_path / "ledgerly.dump"
    env = {**os.environ, "DATABASE_URL": source}
    try:
        dumped = run_backup("dump", str(file), env=env)
        restored = run_backup("restore", str(file), "--database-url", target, env=env)

        assert dumped.returncode == 0, dumped.stderr
        assert restored.returncode == 0, restored.stderr
        assert file.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
        assert rows(target, Ticket._meta.db_table, *TICKET) == tickets
        assert rows(target, Refund._meta.db_table, *REFUND) == refunds
        assert rows(target, IdempotencyKey._meta.db_table, *KEY) == keys
        assert ("vector",) in rows(target, "pg_extension", "extname")
    finally:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(fresh))
            )


def test_the_dump_keeps_the_password_off_the_command_line():
    conninfo, env = backup._libpq("postgresql://ledgerly:s3cret@db:5432/ledgerly")

    assert "s3cret" not in conninfo
    assert env["PGPASSWORD"] == "s3cret"


def test_without_database_url_the_embedded_server_is_dumped_and_restored(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["LEDGERLY_DATA_DIR"] = str(tmp_path / "data")
    (tmp_path / "data").mkdir()

    dumped = run_backup("dump", env=env)
    (file,) = (tmp_path / "data" / "backups").glob("ledgerly-*.dump")
    restored = run_backup("restore", str(file), env=env)

    assert dumped.returncode == 0, dumped.stderr
    assert restored.returncode == 0, restored.stderr
    assert file.read_bytes()[:5] == b"PGDMP"


def test_the_client_programs_are_pgservers_own():
    import pgserver

    assert backup.client_binary("pg_dump").startswith(str(Path(pgserver.__file__).parent))


def test_restore_without_a_file_is_refused_with_usage():
    result = subprocess.run(
        ["make", "-s", "restore", "FILE="],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "MAKEFLAGS": ""},
    )

    assert result.returncode != 0
    assert "usage: make restore FILE=" in result.stderr


def test_a_missing_dump_is_a_clear_error(tmp_path):
    result = run_backup(
        "restore",
        str(tmp_path / "nope.dump"),
        env={**os.environ, "DATABASE_URL": "postgresql://x@/y"},
    )

    assert result.returncode == 1
    assert "no such dump" in result.stderr
