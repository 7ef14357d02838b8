"""Staff decide refund requests through the API as the key's owner: approving runs the refund
once on a real Celery worker (a second approval is a 409), the approver permission is enforced,
every decision is in the audit trail with the key it came through."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from billing import services as billing_services
from billing.models import Charge, Refund, RefundRequest, RefundRequestState
from billing.processor.simulator import SimulatedProcessor
from support.models import AuditEntry
from tests.api.conftest import bearer, error_code, post_json
from tests.billing import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def processor(redis_client):
    simulator = SimulatedProcessor()
    simulator.reset()
    yield simulator
    simulator.reset()


@pytest.fixture
def proposed(transactional_db) -> RefundRequest:
    """A $49 monthly charge from 3 days ago and a proposed refund that needs staff approval."""
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=3))
    request = billing_services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="test"
    )
    assert request.state == RefundRequestState.PROPOSED
    return request


def _wait_for(request: RefundRequest, state: str, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request.refresh_from_db()
        if request.state == state:
            break
        time.sleep(0.2)
    return request.state


@pytest.mark.slow
def test_staff_approve_through_the_api_makes_exactly_one_refund(
    celery_worker_process, processor, proposed, make_key, approver
):
    celery_worker_process(concurrency=2)
    key = make_key("staff")
    url = f"/api/v1/refund-requests/{proposed.pk}/approve"

    first = post_json(Client(), url, {"note": "duplicate confirmed"}, key)
    second = post_json(Client(), url, {}, key)

    assert first.status_code == 200
    assert first.json()["state"] == "approved"
    assert first.json()["decided_by"] == approver.username
    assert (second.status_code, error_code(second)) == (409, "refund_request_decided")
    assert _wait_for(proposed, RefundRequestState.EXECUTED) == "executed"
    time.sleep(1)
    assert Refund.objects.filter(refund_request=proposed).count() == 1
    assert len(processor.refunds_for(proposed.charge.ref)) == 1
    assert Charge.objects.get(pk=proposed.charge_id).refunded_amount == proposed.amount
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.target) == (
        "refund_request.approve",
        f"refund_request:{proposed.pk}",
    )
    assert entry.actor_id == approver.pk
    assert entry.via == f"api_key:{key.split('.')[0]}"


@pytest.mark.slow
def test_two_keys_approving_at_once_make_one_decision(proposed, make_key, redis_client):
    keys = [make_key("staff"), make_key("staff")]
    barrier = threading.Barrier(2)
    statuses: list[Any] = [None, None]

    def approve(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            url = f"/api/v1/refund-requests/{proposed.pk}/approve"
            statuses[i] = post_json(Client(), url, {}, keys[i]).status_code
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(statuses) == [200, 409]
    assert AuditEntry.objects.filter(action="refund_request.approve").count() == 1


def test_a_staff_key_without_the_approver_permission_is_a_403(
    api_client, proposed, make_key, plain_staff
):
    key = make_key("staff", owner=plain_staff)

    response = post_json(api_client, f"/api/v1/refund-requests/{proposed.pk}/approve", {}, key)

    assert (response.status_code, error_code(response)) == (403, "forbidden")
    proposed.refresh_from_db()
    assert proposed.state == RefundRequestState.PROPOSED
    assert AuditEntry.objects.count() == 0
    # Reading the queue needs only the staff scope.
    assert api_client.get("/api/v1/refund-requests", headers=bearer(key)).status_code == 200


def test_a_tickets_key_cannot_decide(api_client, proposed, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    response = post_json(api_client, f"/api/v1/refund-requests/{proposed.pk}/approve", {}, key)
    assert response.status_code == 403
    proposed.refresh_from_db()
    assert proposed.state == RefundRequestState.PROPOSED


def test_reject_needs_a_reason_and_records_it(api_client, proposed, make_key, redis_client):
    key = make_key("staff")
    url = f"/api/v1/refund-requests/{proposed.pk}/reject"

    without = post_json(api_client, url, {"reason": "  "}, key)
    with_reason = post_json(api_client, url, {"reason": "the charge was used"}, key)

    assert without.status_code == 422
    assert with_reason.status_code == 200
    assert with_reason.json()["state"] == "rejected"
    assert with_reason.json()["decision_note"] == "the charge was used"
    assert AuditEntry.objects.get().action == "refund_request.reject"


def test_list_filters_by_state_and_unknown_ids_are_404(
    api_client, proposed, make_key, redis_client
):
    key = make_key("staff")

    proposed_list = api_client.get(
        "/api/v1/refund-requests", {"state": "proposed"}, headers=bearer(key)
    ).json()
    approved_list = api_client.get(
        "/api/v1/refund-requests", {"state": "approved"}, headers=bearer(key)
    ).json()
    missing = post_json(api_client, "/api/v1/refund-requests/987654/approve", {}, key)

    assert [r["id"] for r in proposed_list["items"]] == [proposed.pk]
    assert proposed_list["items"][0]["charge"] == proposed.charge.ref
    assert proposed_list["items"][0]["evidence"]
    assert approved_list["count"] == 0
    assert (missing.status_code, error_code(missing)) == (404, "not_found")


def test_signed_in_staff_decide_through_the_session_with_csrf(proposed, approver, redis_client):
    client = Client(enforce_csrf_checks=True)
    client.force_login(approver)
    client.get("/admin/")  # a page with a form sets the CSRF cookie
    url = f"/api/v1/refund-requests/{proposed.pk}/reject"

    without = client.post(url, {"reason": "no"}, content_type="application/json")
    with_token = client.post(
        url,
        {"reason": "outside the policy"},
        content_type="application/json",
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )

    assert (without.status_code, error_code(without)) == (403, "csrf_failed")
    assert with_token.status_code == 200
    entry = AuditEntry.objects.get()
    assert (entry.actor_id, entry.via) == (approver.pk, "api_session")
