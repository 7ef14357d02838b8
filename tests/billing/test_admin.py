"""The billing admin: browsable by staff, money read-only, decisions through the services."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from billing import demo, services
from billing.models import Charge, RefundRequest, RefundRequestState
from tests.billing import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def charge() -> Charge:
    return factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))


@pytest.fixture
def staff_client(client, charge):
    demo.seed_users()
    client.force_login(User.objects.get(username=demo.STAFF_USERNAME))
    return client


MODELS = [
    "customer",
    "plan",
    "subscription",
    "invoice",
    "charge",
    "refund",
    "refundrequest",
    "idempotencykey",
]


@pytest.mark.parametrize("model", MODELS)
def test_staff_can_browse_every_billing_list(staff_client, model):
    response = staff_client.get(reverse(f"admin:billing_{model}_changelist"))

    assert response.status_code == 200


def test_charge_money_fields_are_read_only(staff_client, charge):

    response = staff_client.get(reverse("admin:billing_charge_change", args=[charge.pk]))

    assert response.status_code == 200
    assert b'name="amount"' not in response.content
    assert b'name="refunded_amount"' not in response.content


@pytest.mark.parametrize(
    ("action", "state"),
    [("approve_selected", RefundRequestState.APPROVED), ("reject_selected", "rejected")],
)
def test_admin_actions_decide_refund_requests_through_the_services(
    staff_client, charge, django_capture_on_commit_callbacks, action, state
):
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent:test"
    )

    with django_capture_on_commit_callbacks():
        response = staff_client.post(
            reverse("admin:billing_refundrequest_changelist"),
            {"action": action, "_selected_action": [request.pk]},
        )

    request.refresh_from_db()
    assert response.status_code == 302
    staff = User.objects.get(username=demo.STAFF_USERNAME)
    assert (request.state, request.decided_by_id) == (state, staff.pk)


def test_admin_action_on_an_expired_request_changes_nothing(staff_client, charge):
    request = services.refund_request_create(
        customer=charge.customer,
        charge=charge,
        proposed_by="agent:test",
        at=timezone.now() - dt.timedelta(days=10),  # long expired
    )

    staff_client.post(
        reverse("admin:billing_refundrequest_changelist"),
        {"action": "approve_selected", "_selected_action": [request.pk]},
    )

    assert RefundRequest.objects.get(pk=request.pk).state == RefundRequestState.PROPOSED
