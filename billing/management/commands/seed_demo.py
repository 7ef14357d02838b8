"""`manage.py seed_demo [--today YYYY-MM-DD]`: build or refresh the demo world (billing.demo)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.demo import seed_demo


class Command(BaseCommand):
    help = "Seed the SCENARIOS.md demo customers and a background crowd (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--today",
            help="The day the scenario dates are relative to (default: today, UTC).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        today = timezone.now().astimezone(dt.UTC).date()
        if options["today"]:
            try:
                today = dt.date.fromisoformat(options["today"])
            except ValueError as exc:
                raise CommandError(f"--today must be YYYY-MM-DD, got {options['today']!r}") from exc
        result = seed_demo(today=today)
        self.stdout.write(
            f"Demo data for {today.isoformat()}: {result.customers} customers, "
            f"{result.invoices} invoices, {result.charges} charges, {result.refunds} refunds, "
            f"{result.users} users."
        )
