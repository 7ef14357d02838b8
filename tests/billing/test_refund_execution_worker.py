"""Approval → a real Celery worker runs billing.tasks.execute_refund → money moves once."""

from __future__ import annotations

import time

import pytest

from billing import tasks
from billing.models import Charge, Refund, RefundRequest, RefundRequestState

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _wait_for_state(request: RefundRequest, state: str, seconds: float = 60) -> RefundRequest:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request.refresh_from_db()
        if request.state == state:
            return request
        time.sleep(0.1)
    return request


def test_approved_request_is_executed_once_by_a_worker_even_when_delivered_twice(
    celery_worker_process, make_approved_request, processor
):
    celery_worker_process(concurrency=2)

    request = make_approved_request()  # approval queues execute_refund on commit
    tasks.execute_refund.delay(request.pk)  # a duplicate delivery of the same task

    assert _wait_for_state(request, RefundRequestState.EXECUTED).state == "executed"
    time.sleep(1)  # give the duplicate time to run too
    assert len(processor.refunds_for(request.charge.ref)) == 1
    assert Refund.objects.filter(refund_request=request).count() == 1
    assert Charge.objects.get(pk=request.charge_id).refunded_amount == request.amount


def test_worker_retries_transient_processor_errors_until_the_refund_is_made(
    celery_worker_process, make_approved_request, processor
):
    celery_worker_process(concurrency=1)
    processor.inject("server_error", times=2)

    request = make_approved_request()

    assert _wait_for_state(request, RefundRequestState.EXECUTED).state == "executed"
    assert processor.pending_faults() == 0
    assert len(processor.refunds_for(request.charge.ref)) == 1
