"""A child process for the multi-process refund tests: `python -m tests.billing.refund_worker JSON`.

It configures Django against the test database named in the JSON (the parent's test DB), waits
at an optional Redis barrier so all children call `issue_refund` at the same moment, and pushes
its outcome to a Redis list. It is a separate OS process with its own DB connection and its own
processor client: the same shape as two Celery workers on two machines.
"""

from __future__ import annotations

import json
import os
import sys


def main(raw: str) -> None:
    job = json.loads(raw)
    os.environ["DATABASE_URL"] = job["database_url"]
    os.environ["REDIS_URL"] = job["redis_url"]
    os.environ["LEDGERLY_ENV"] = "test"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledgerly.settings")
    import django

    django.setup()

    import redis

    from billing import services
    from billing.models import RefundRequest

    bus = redis.Redis.from_url(job["redis_url"])
    request = RefundRequest.objects.get(pk=job["request_id"])
    if job.get("ready_key"):
        bus.rpush(job["ready_key"], os.getpid())
        bus.blpop([job["go_key"]], timeout=60)
    try:
        refund = services.issue_refund(refund_request=request, idempotency_key=job.get("key"))
    except services.RefundError as exc:
        outcome: dict[str, object] = {"outcome": type(exc).__name__, "detail": str(exc)}
    else:
        outcome = {"outcome": "refund", "refund": refund.pk}
    bus.rpush(job["result_key"], json.dumps(outcome))


if __name__ == "__main__":
    main(sys.argv[1])
