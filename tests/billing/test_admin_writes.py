"""The admin never writes a money row back: its change forms are view-only, so a Save cannot
overwrite what a refund committed in the meantime (a lost update of the ledger or a decision)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import demo, services
from billing.admin import ChargeAdmin, RefundRequestAdmin
from billing.models import Charge, RefundRequest, RefundRequestState
from tests.billing import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_superuser(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", password="x-not-used-x"))
    return client


def _form_fields(html: str) -> dict[str, str]:
    """What the browser would post back: every named input of the change form, as rendered."""
    fields = {}
    for tag in re.findall(r"<input[^>]*>", html):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and name[1] not in {"csrfmiddlewaretoken", "_save", "_continue"}:
            fields[name[1]] = value[1] if value else ""
    return fields


def _save_change_form(client: Client, url: str) -> int:
    fields = _form_fields(client.get(url).content.decode())
    return client.post(url, {**fields, "_save": "Save"}).status_code


@pytest.mark.parametrize(
    "model", ["charge", "invoice", "subscription", "refund", "idempotencykey", "refundrequest"]
)
def test_money_rows_cannot_be_saved_from_the_admin_even_by_a_superuser(
    admin_client_superuser, make_approved_request, processor, model
):
    request = make_approved_request()
    services.issue_refund(refund_request=request, processor=processor)
    rows = {
        "charge": lambda: request.charge,
        "invoice": lambda: request.charge.invoice,
        "subscription": lambda: request.charge.invoice.subscription,
        "refund": lambda: request.refund,
        "idempotencykey": lambda: request.refund.idempotency_keys.get(),
        "refundrequest": lambda: request,
    }
    url = reverse(f"admin:billing_{model}_change", args=[rows[model]().pk])

    assert admin_client_superuser.get(url).status_code == 200  # still browsable
    assert _save_change_form(admin_client_superuser, url) == 403


def test_a_charge_form_loaded_before_a_refund_cannot_undo_it(
    admin_client_superuser, make_approved_request, processor, monkeypatch
):
    # The interleaving a real race would need luck for: the admin loads the charge (Save
    # pressed), then a refund commits, then the admin writes its copy of the row back.
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    url = reverse("admin:billing_charge_change", args=[charge.pk])
    fields = _form_fields(admin_client_superuser.get(url).content.decode())
    stale = Charge.objects.get(pk=charge.pk)
    monkeypatch.setattr(ChargeAdmin, "get_object", lambda *args, **kwargs: stale)
    services.issue_refund(refund_request=make_approved_request(charge=charge), processor=processor)

    admin_client_superuser.post(url, {**fields, "_save": "Save"})

    charge.refresh_from_db()
    assert (charge.refunded_amount, charge.refund_pending_amount) == (Decimal("49.00"), 0)
    with pytest.raises(services.RefundNotAllowed):  # nothing is left to refund a second time
        services.refund_request_create(customer=charge.customer, charge=charge, proposed_by="x")


def test_a_refund_request_form_loaded_before_a_rejection_cannot_reopen_it(
    admin_client_superuser, staff_user, monkeypatch
):
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent"
    )
    url = reverse("admin:billing_refundrequest_change", args=[request.pk])
    fields = _form_fields(admin_client_superuser.get(url).content.decode())
    stale = RefundRequest.objects.get(pk=request.pk)
    monkeypatch.setattr(RefundRequestAdmin, "get_object", lambda *args, **kwargs: stale)
    services.refund_request_reject(refund_request=request, actor=staff_user, note="no")

    admin_client_superuser.post(url, {**fields, "_save": "Save"})

    request.refresh_from_db()
    assert (request.state, request.decided_by_id) == (RefundRequestState.REJECTED, staff_user.pk)


def test_view_only_refund_requests_still_offer_the_decision_actions(client):
    demo.seed_users()
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    services.refund_request_create(customer=charge.customer, charge=charge, proposed_by="agent")
    client.force_login(User.objects.get(username=demo.STAFF_USERNAME))

    html = client.get(reverse("admin:billing_refundrequest_changelist")).content.decode()

    assert ('value="approve_selected"' in html, 'value="reject_selected"' in html) == (True, True)
