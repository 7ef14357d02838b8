"""Backups of Ledgerly's Postgres database: `make backup [FILE=...]` and `make restore FILE=...`.

    python -m ledgerly.backup dump [FILE]                      # pg_dump -Fc, default .data/backups/
    python -m ledgerly.backup restore FILE [--database-url URL]

The database is DATABASE_URL, or, when it is unset, the embedded server of `make run`
(LEDGERLY_DATA_DIR/pg, started for the command if it is not running). The client programs are the
ones the `pgserver` wheel ships beside its PostgreSQL 16 server, so the dump format matches the
embedded server's version; without the wheel (the production image), `pg_dump`/`pg_restore` from
PATH. PostgreSQL 16 clients dump any server up to 16, which is what production runs
(pgvector/pgvector:pg16).

A dump is the custom format (`-Fc`: compressed, restorable selectively), without owners or
grants, so it restores into a database owned by another role. A restore runs in one transaction
(all or nothing) and first drops the objects the dump recreates (`--clean --if-exists`): restore
into a fresh database, or stop web, workers and beat before restoring over the live one
(RUNBOOK.md). The password never appears on a command line: it is passed in PGPASSWORD.

Why not a Django management command: a restore replaces the tables Django would be reading, and
neither needs Django, only the URL.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent


class BackupError(Exception):
    pass


def data_dir() -> Path:
    return Path(os.environ.get("LEDGERLY_DATA_DIR", str(ROOT / ".data")))


def client_binary(name: str) -> str:
    """pgserver's own pg_dump/pg_restore (same version as the embedded server), else PATH's."""
    try:
        import pgserver
    except ImportError:
        found = shutil.which(name)
        if found is None:
            raise BackupError(f"{name} not found: install the PostgreSQL 16 client") from None
        return found
    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


@contextlib.contextmanager
def database_url(explicit: str | None = None) -> Iterator[str]:
    """The URL to work on: `explicit`, DATABASE_URL, or the embedded server (started if need be,
    and stopped afterwards if this command started it)."""
    url = explicit or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from ledgerly.devstack import start_postgres

    server = start_postgres(data_dir() / "pg")
    try:
        yield server.url
    finally:
        server.stop()  # type: ignore[operator]  # pgserver keeps a server others still use


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password, and the environment that carries it."""
    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}), env


def _run(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr}")


def default_file(now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return data_dir() / "backups" / f"ledgerly-{stamp}.dump"


def dump(*, url: str, file: Path) -> Path:
    """Write the whole database at `url` to `file` (pg_dump -Fc); returns the file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    conninfo, env = _libpq(url)
    partial = file.with_name(file.name + ".partial")  # never leave a truncated dump under the name
    _run(
        [
            client_binary("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--file={partial}",
            f"--dbname={conninfo}",
        ],
        env,
    )
    partial.replace(file)
    return file


def restore(*, url: str, file: Path) -> None:
    """Restore `file` (a dump made by `dump`) into the database at `url`, in one transaction,
    replacing the objects it contains."""
    if not file.is_file():
        raise BackupError(f"no such dump: {file}")
    conninfo, env = _libpq(url)
    _run(
        [
            client_binary("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={conninfo}",
            str(file),
        ],
        env,
    )


def _redacted(url: str) -> str:
    params = conninfo_to_dict(url)
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledgerly.backup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dump_cmd = commands.add_parser("dump", help="pg_dump -Fc the database to FILE")
    dump_cmd.add_argument("file", nargs="?", type=Path, help="default: .data/backups/<time>.dump")
    dump_cmd.add_argument("--database-url", help="default: DATABASE_URL, else the embedded server")
    restore_cmd = commands.add_parser("restore", help="pg_restore FILE into the database")
    restore_cmd.add_argument("file", type=Path)
    restore_cmd.add_argument("--database-url", help="default: DATABASE_URL, else embedded")
    args = parser.parse_args(argv)
    try:
        with database_url(args.database_url) as url:
            if args.command == "dump":
                written = dump(url=url, file=args.file or default_file())
                print(f"[ledgerly] dumped {_redacted(url)} to {written}", flush=True)
            else:
                restore(url=url, file=args.file)
                print(f"[ledgerly] restored {args.file} into {_redacted(url)}", flush=True)
    except BackupError as exc:
        print(f"[ledgerly] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
