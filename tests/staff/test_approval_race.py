"""Two approvers click Approve on the same request at the same moment (and each clicks twice):
real threads through the real views, a real Celery worker executing the refund. One decision,
one audit entry, one Refund row, one processor refund."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections
from django.test import Client

from billing.models import Charge, Refund, RefundRequest, RefundRequestState
from billing.processor.simulator import SimulatedProcessor
from support.models import AuditEntry
from tests.staff import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TRIALS = 3


@pytest.fixture
def processor():
    simulator = SimulatedProcessor()
    simulator.reset()
    yield simulator
    simulator.reset()


def _wait_executed(request: RefundRequest, seconds: float = 60) -> RefundRequest:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request.refresh_from_db()
        if request.state == RefundRequestState.EXECUTED:
            break
        time.sleep(0.1)
    return request


def _race(clients: list[Client], url: str) -> list[int]:
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = [0] * len(clients)

    def click(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            statuses[index] = clients[index].post(url, {"note": "race"}).status_code
        finally:
            connections.close_all()

    threads = [threading.Thread(target=click, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_two_approvers_double_clicking_at_once_make_one_refund(celery_worker_process, processor):
    celery_worker_process(concurrency=2)
    approvers = [factories.staff_user(approver=True) for _ in range(2)]
    for _ in range(TRIALS):
        request = factories.proposed_request()
        url = f"/staff/approvals/{request.pk}/approve"
        clients = []
        for user in approvers:
            for _click in range(2):  # each of them double-clicks: two sessions' worth of POSTs
                client = Client()
                client.force_login(user)
                clients.append(client)
        statuses = _race(clients, url)

        assert sorted(statuses) == [302, 409, 409, 409]
        executed = _wait_executed(request)
        assert executed.state == RefundRequestState.EXECUTED
        time.sleep(0.5)  # a stray second execution would have had time to land
        assert Refund.objects.filter(charge_id=request.charge_id).count() == 1
        assert len(processor.refunds_for(request.charge.ref)) == 1
        assert Charge.objects.get(pk=request.charge_id).refunded_amount == request.amount
        entries = AuditEntry.objects.filter(target=f"refund_request:{request.pk}")
        assert [(e.action, e.actor_id) for e in entries] == [
            ("refund_request.approve", executed.decided_by_id)
        ]
