"""`manage.py ingest_helpcenter`: index the help-center articles (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from memory import services
from memory.knowledge import HELPCENTER_DIR


class Command(BaseCommand):
    help = "Ingest the help-center articles into the knowledge base (unchanged ones cost nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--directory", type=Path, default=HELPCENTER_DIR)
        parser.add_argument(
            "--prune",
            action="store_true",
            help="also delete articles whose file is gone (staff-made articles included)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = services.helpcenter_ingest(directory=options["directory"], prune=options["prune"])
        self.stdout.write(
            f"help center: {len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(report.deleted)} deleted, "
            f"{report.chunks_written} chunks written, knowledge base v{report.kb_version}"
        )
