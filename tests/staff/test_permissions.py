"""Who may see and do what on the staff pages: anonymous → the sign-in, non-staff → 403,
staff without the approver permission read but cannot decide, approvers decide."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import Refund, RefundRequest, RefundRequestState
from support.models import AuditEntry
from tests.staff import factories
from tests.staff.conftest import signed_in

pytestmark = pytest.mark.django_db

PAGES = [
    "/staff/",
    "/staff/approvals/",
    "/staff/approvals/history/",
    "/staff/escalations/",
    "/staff/dead-letters/",
    "/staff/kill-switches/",
    "/staff/articles/",
    "/staff/operations/",
    "/staff/audit/",
]


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_are_sent_to_the_staff_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/staff/login/?next={url}"


@pytest.mark.parametrize("url", PAGES)
def test_a_signed_in_customer_gets_a_clear_403(url):
    response = signed_in(factories.customer_user()).get(url)
    assert response.status_code == 403
    assert "not a staff account" in response.content.decode()


@pytest.mark.parametrize("url", [u for u in PAGES if u != "/staff/"])
def test_staff_see_every_page(viewer_client, url):
    response = viewer_client.get(url)
    assert response.status_code == 200
    assert b"<h1>" in response.content


def test_the_sign_in_page_lets_staff_in_and_keeps_customers_out(viewer):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/staff/login/?next=/staff/escalations/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value
    customer = factories.customer_user()

    refused = client.post(
        "/staff/login/",
        {
            "username": customer.username,
            "password": factories.PASSWORD,
            "csrfmiddlewaretoken": token,
        },
    )
    assert refused.status_code == 200
    assert "not a staff account" in refused.content.decode()
    assert "_auth_user_id" not in client.session

    entered = client.post(
        "/staff/login/",
        {
            "username": "viewer",
            "password": factories.PASSWORD,
            "csrfmiddlewaretoken": token,
            "next": "/staff/escalations/",
        },
    )
    assert entered.status_code == 302
    assert entered["Location"] == "/staff/escalations/"
    assert client.get("/staff/escalations/").status_code == 200


def test_a_post_without_the_csrf_token_is_refused(approver):
    request = factories.proposed_request()
    client = Client(enforce_csrf_checks=True)
    client.force_login(approver)
    response = client.post(f"/staff/approvals/{request.pk}/approve", {"note": "ok"})
    assert response.status_code == 403
    request.refresh_from_db()
    assert request.state == RefundRequestState.PROPOSED


def test_staff_without_the_approver_permission_read_the_request_but_cannot_decide(viewer_client):
    request = factories.proposed_request()
    page = viewer_client.get(f"/staff/approvals/{request.pk}/")
    body = page.content.decode()
    assert page.status_code == 200
    assert 'data-testid="approve-button" disabled' in body
    assert "refund-approver permission" in body

    for verb in ("approve", "reject"):
        response = viewer_client.post(f"/staff/approvals/{request.pk}/{verb}", {"note": "no"})
        assert response.status_code == 403
        assert "refund-approver permission" in response.content.decode()
    request.refresh_from_db()
    assert request.state == RefundRequestState.PROPOSED
    assert not AuditEntry.objects.exists()


def test_an_approver_approves_and_the_decision_is_audited(approver, approver_client, redis_client):
    request = factories.proposed_request()
    url = f"/staff/approvals/{request.pk}/approve"
    response = approver_client.post(url, {"note": "duplicate confirmed"})
    assert response.status_code == 302
    assert response["Location"] == reverse("staff:approval", args=[request.pk])

    request.refresh_from_db()
    assert request.state == RefundRequestState.APPROVED
    assert request.decided_by == approver
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target, entry.via) == (
        approver,
        "refund_request.approve",
        f"refund_request:{request.pk}",
        f"page:{url}",
    )
    assert entry.detail["note"] == "duplicate confirmed"
    assert request.decided_at is not None
    assert entry.created_at >= request.decided_at
    assert "Approved refund request" in approver_client.get(response["Location"]).content.decode()


def test_a_second_approval_is_refused_with_409_and_not_audited(approver_client, redis_client):
    request = factories.proposed_request()
    url = f"/staff/approvals/{request.pk}/approve"
    assert approver_client.post(url, {"note": ""}).status_code == 302
    again = approver_client.post(url, {"note": ""})
    assert again.status_code == 409
    assert "approved already" in again.content.decode()
    assert AuditEntry.objects.filter(action="refund_request.approve").count() == 1
    assert not Refund.objects.exists()  # no worker here: execution is another test's


def test_rejecting_needs_a_reason(approver, approver_client, redis_client):
    request = factories.proposed_request()
    url = f"/staff/approvals/{request.pk}/reject"
    empty = approver_client.post(url, {"note": "   "})
    assert empty.status_code == 400
    assert RefundRequest.objects.get(pk=request.pk).state == RefundRequestState.PROPOSED

    done = approver_client.post(url, {"note": "outside the policy window"})
    assert done.status_code == 302
    request.refresh_from_db()
    assert (request.state, request.decision_note) == ("rejected", "outside the policy window")
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor) == ("refund_request.reject", approver)
    assert entry.via == f"page:{url}"


def test_an_unknown_request_is_a_404(approver_client):
    assert approver_client.get("/staff/approvals/999999/").status_code == 404
    assert approver_client.post("/staff/approvals/999999/approve").status_code == 404


def test_the_queue_lists_proposed_requests_only(viewer_client, approver, redis_client):
    waiting = factories.proposed_request()
    decided = factories.proposed_request()
    signed_in(approver).post(f"/staff/approvals/{decided.pk}/approve", {"note": ""})

    queue = viewer_client.get("/staff/approvals/").content.decode()
    assert f'data-testid="refund-request-row-{waiting.pk}"' in queue
    assert f'data-testid="refund-request-row-{decided.pk}"' not in queue
    history = viewer_client.get("/staff/approvals/history/").content.decode()
    assert f'data-testid="history-row-{decided.pk}"' in history
    assert f'data-testid="history-row-{waiting.pk}"' not in history


def test_an_expired_request_shows_no_buttons_and_cannot_be_approved(approver_client):
    request = factories.proposed_request()
    RefundRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now())
    page = approver_client.get(f"/staff/approvals/{request.pk}/").content.decode()
    assert "expired: can no longer be decided" in page
    assert 'data-testid="approve-button"' not in page
    response = approver_client.post(f"/staff/approvals/{request.pk}/approve", {"note": ""})
    assert response.status_code == 409
    assert "past its expiry" in response.content.decode()
    assert RefundRequest.objects.get(pk=request.pk).state == RefundRequestState.PROPOSED
    assert not AuditEntry.objects.exists()
