"""Concurrency and crash tests for issue_refund: real threads, real OS processes, kill -9.

Each test repeats its race several times (TRIALS_*), each trial on a fresh charge, because one
lucky interleaving proves little.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from billing import services
from billing.models import (
    Charge,
    IdempotencyKey,
    RecoveryPoint,
    Refund,
    RefundRequest,
    RefundRequestState,
    RefundStatus,
)
from billing.processor.simulator import SimulatedProcessor
from tests.billing import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TRIALS_THREADS = 5  # 16 threads per trial, for each processor latency (so 10 in all)
TRIALS_PROCESSES = 3  # 4 OS processes per trial
TRIALS_OVER_REFUND = 5  # 8 threads, 8 different keys per trial
TRIALS_KILL = 2  # one child killed with SIGKILL per trial


@pytest.fixture(autouse=True)
def _drop_queued_tasks(redis_client):
    """Approvals here queue execute_refund for a worker no test starts; drop them afterwards."""
    yield
    redis_client.flushdb()


def _race_in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except services.RefundError as exc:
            results[index] = type(exc).__name__
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _assert_refunded_once(request: RefundRequest, processor: SimulatedProcessor) -> None:
    charge = Charge.objects.get(pk=request.charge_id)
    request.refresh_from_db()
    assert len(processor.refunds_for(charge.ref)) == 1
    assert Refund.objects.filter(charge=charge).count() == 1
    assert Refund.objects.get(charge=charge).status == RefundStatus.SUCCEEDED
    assert (charge.refunded_amount, charge.refund_pending_amount) == (request.amount, 0)
    assert request.state == RefundRequestState.EXECUTED


@pytest.mark.parametrize("trial", range(TRIALS_THREADS))
@pytest.mark.parametrize("latency", [0.0, 0.2], ids=["instant-processor", "slow-processor"])
def test_same_request_same_key_from_16_threads_refunds_once(
    trial, latency, make_approved_request, processor
):
    request = make_approved_request()
    # A slow processor holds the first caller in flight; an instant one races the key insert.
    processor.inject("latency", seconds=latency)

    results = _race_in_threads(
        16,
        lambda _: (
            services.issue_refund(
                refund_request=RefundRequest.objects.get(pk=request.pk), processor=processor
            ).pk
        ),
    )

    _assert_refunded_once(request, processor)
    refund_id = Refund.objects.get(refund_request=request).pk
    outcomes = Counter("refund" if r == refund_id else r for r in results)
    assert set(outcomes) <= {"refund", "RefundInFlight"}
    assert outcomes["refund"] >= 1


def _child_env_url() -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


def _spawn(job: dict[str, object]) -> subprocess.Popen[bytes]:
    payload = {"database_url": _child_env_url(), "redis_url": settings.REDIS_URL, **job}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.billing.refund_worker", json.dumps(payload)],
        cwd=settings.BASE_DIR,
        env={**os.environ, "LOG_LEVEL": "ERROR"},
    )


@pytest.mark.parametrize("trial", range(TRIALS_PROCESSES))
def test_same_request_same_key_from_4_processes_refunds_once(
    trial, make_approved_request, processor, redis_client
):
    request = make_approved_request()
    ready, go, done = f"t{trial}:ready", f"t{trial}:go", f"t{trial}:done"
    children = [
        _spawn({"request_id": request.pk, "ready_key": ready, "go_key": go, "result_key": done})
        for _ in range(4)
    ]
    for _ in children:
        assert redis_client.blpop([ready], timeout=60) is not None
    processor.inject("latency", seconds=0.3)
    redis_client.rpush(go, *["go"] * len(children))
    outcomes = [json.loads(redis_client.blpop([done], timeout=60)[1]) for _ in children]
    for child in children:
        assert child.wait(timeout=30) == 0

    _assert_refunded_once(request, processor)
    kinds = Counter(outcome["outcome"] for outcome in outcomes)
    assert set(kinds) <= {"refund", "RefundInFlight"}
    assert kinds["refund"] >= 1


@pytest.mark.parametrize("trial", range(TRIALS_OVER_REFUND))
def test_different_keys_racing_never_refund_more_than_the_charge(
    trial, make_approved_request, processor
):
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))  # 49.00
    # Eight approved requests over-commit the charge on purpose: refund_request_create refuses to
    # make more than is left, so the first two come from it and the rest are written as rows, as
    # if approved before the others existed. issue_refund must still never refund past 49.00.
    requests = [make_approved_request(charge=charge, amount=Decimal("20.00")) for _ in range(2)]
    for n in range(6):
        extra = RefundRequest.objects.get(pk=requests[0].pk)
        extra.pk = None
        extra.idempotency_key = f"{requests[0].idempotency_key}-extra-{n}"
        extra.save()
        requests.append(extra)
    processor.inject("latency", seconds=0.05, times=8)

    results = _race_in_threads(
        8,
        lambda i: services.issue_refund(refund_request=requests[i], processor=processor).pk,
    )

    charge.refresh_from_db()
    succeeded = Refund.objects.filter(charge=charge, status=RefundStatus.SUCCEEDED).count()
    assert succeeded == 2  # 20 + 20 fit in 49; a third 20 never does
    assert charge.refunded_amount == Decimal("40.00") == processor.total_refunded(charge.ref)
    assert charge.refund_pending_amount == 0
    assert Counter(type(r).__name__ if isinstance(r, int) else r for r in results) == {
        "int": 2,
        "RefundNotAllowed": 6,
    }


@pytest.mark.parametrize("trial", range(TRIALS_KILL))
def test_process_killed_after_processor_applied_is_completed_once_by_the_reconciler(
    trial, make_approved_request, processor, redis_client
):
    request = make_approved_request()
    processor.inject("slow_after_apply", seconds=60)
    child = _spawn({"request_id": request.pk, "result_key": f"k{trial}:done"})
    deadline = time.monotonic() + 60
    while not processor.refunds_for(request.charge.ref) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processor.refunds_for(request.charge.ref)  # the money moved at the processor...

    os.kill(child.pid, signal.SIGKILL)  # ...and the process dies before recording it
    assert child.wait(timeout=30) == -signal.SIGKILL

    key = IdempotencyKey.objects.get(key=request.idempotency_key)
    assert (key.recovery_point, key.locked_at is not None) == (RecoveryPoint.REFUND_RESERVED, True)
    assert Charge.objects.get(pk=request.charge_id).refund_pending_amount == request.amount
    # While the lock is fresh nobody else may touch it...
    with pytest.raises(services.RefundInFlight):
        services.issue_refund(refund_request=request, processor=processor)
    assert services.refunds_reconcile(processor=processor) == {
        "succeeded": 0,
        "declined": 0,
        "retry_later": 0,
        "failed": 0,
    }
    # ...once it is stale, the reconciler finishes it with the same key.
    later = timezone.now() + dt.timedelta(seconds=settings.REFUND_RECONCILE_AFTER_SECONDS + 1)
    assert services.refunds_reconcile(now=later, processor=processor)["succeeded"] == 1
    assert services.refunds_reconcile(now=later, processor=processor)["succeeded"] == 0

    _assert_refunded_once(request, processor)
    assert redis_client.llen(f"k{trial}:done") == 0  # the child never reported


def test_reconciler_and_a_late_retry_racing_record_the_result_once(
    make_approved_request, processor
):
    request = make_approved_request()
    processor.inject("timeout_after_apply")
    with pytest.raises(services.RefundRetryable):
        services.issue_refund(refund_request=request, processor=processor)
    IdempotencyKey.objects.filter(key=request.idempotency_key).update(
        updated_at=timezone.now() - dt.timedelta(hours=1)
    )
    processor.inject("latency", seconds=0.2, times=2)

    later = timezone.now() + dt.timedelta(seconds=settings.REFUND_RECONCILE_AFTER_SECONDS + 1)
    work = [
        lambda: services.refunds_reconcile(now=later, processor=processor),
        lambda: services.issue_refund(
            refund_request=RefundRequest.objects.get(pk=request.pk), processor=processor
        ),
    ]
    _race_in_threads(2, lambda i: work[i]())

    _assert_refunded_once(request, processor)
