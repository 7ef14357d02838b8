"""Support's figures read at scrape time (registered with ledgerly.metrics at start-up): runs
in flight by status, and answer ratings. Counts from Postgres under a short statement timeout."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from support.models import AnswerRating, Run, RunStatus

ACTIVE = (RunStatus.READY, RunStatus.RUNNING, RunStatus.WAITING)


def support_state() -> Iterable[Metric]:
    active = GaugeMetricFamily(
        "ledgerly_active_runs", "Runs working on a customer message, by status", labels=["status"]
    )
    ratings = CounterMetricFamily(
        "ledgerly_answer_ratings",
        "Customers' ratings of answers (helpful: true/false), by lane",
        labels=["lane", "helpful"],
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 500")
        counts: dict[str, int] = {str(status): 0 for status in ACTIVE}
        runs = Run.objects.filter(status__in=ACTIVE).values("status").annotate(n=Count("id"))
        for run in runs:
            counts[str(run["status"])] = int(run["n"])
        for status, count in counts.items():
            active.add_metric([str(status)], float(count))
        verdicts = AnswerRating.objects.values("lane", "helpful").annotate(n=Count("id"))
        for verdict in verdicts.order_by("lane", "helpful"):
            helpful = "true" if verdict["helpful"] else "false"
            ratings.add_metric([verdict["lane"], helpful], float(verdict["n"]))
    return [active, ratings]
