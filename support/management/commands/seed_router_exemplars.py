"""`manage.py seed_router_exemplars [FILE]`: load the router's labelled examples (idempotent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from support import router

DEFAULT = Path(__file__).resolve().parents[2] / "data" / "router_exemplars.jsonl"


class Command(BaseCommand):
    help = "Embed and store the router's labelled example tickets (safe to run twice)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", nargs="?", default=str(DEFAULT))

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.exists():
            raise CommandError(f"no such file: {path}")
        count = 0
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                router.exemplar_add(text=row["text"], lane=row["lane"], source="seed")
            except (ValueError, KeyError) as exc:
                raise CommandError(f"{path}:{number}: {exc}") from exc
            count += 1
        self.stdout.write(f"router exemplars: {count} loaded from {path.name}")
