"""What the approval page shows of a request: the frozen facts, earlier refunds, the
conversation, the run's steps, and the proposer's stated confidence and point of uncertainty."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Refund, RefundRequest, RefundStatus
from support.models import Run, RunStep, Ticket
from tests.billing import factories as billing_factories
from tests.staff import factories

pytestmark = pytest.mark.django_db


def _page(client, request: RefundRequest) -> str:
    response = client.get(f"/staff/approvals/{request.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_the_frozen_facts_conversation_steps_and_stated_confidence(
    viewer_client,
):
    owner = billing_factories.customer()
    ticket = factories.ticket(
        owner=owner,
        lane="agent",
        messages=(("customer", "You charged me twice for March!"), ("assistant", "Checking.")),
    )
    request = factories.proposed_request(owner=owner, source=f"ticket:{ticket.pk}")
    Ticket.objects.filter(pk=ticket.pk).update(refund_request=request)
    old_charge = billing_factories.charge(
        charged_at=timezone.now() - dt.timedelta(days=60), owner=owner
    )
    earlier = Refund.objects.create(
        ref="re_earlier_1",
        charge=old_charge,
        amount=Decimal("10.00"),
        currency=owner.currency,
        status=RefundStatus.SUCCEEDED,
        created_at=timezone.now() - dt.timedelta(days=50),
    )
    RunStep.objects.create(
        run=Run.objects.get(ticket=ticket),
        index=3,
        kind="agent_tools",
        detail={
            "calls": [
                {
                    "name": "propose_refund",
                    "input": {
                        "charge_ref": request.charge.ref,
                        "reason": "looks like a duplicate",
                        "confidence": 0.62,
                        "uncertainty": "whether the second charge was a plan change",
                    },
                }
            ]
        },
        started_at=timezone.now(),
    )

    page = _page(viewer_client, request)

    assert 'data-testid="stated-confidence">0.62<' in page
    assert "whether the second charge was a plan change" in page
    assert "propose_refund call (step 3)" in page
    assert "You charged me twice for March!" in page
    assert f'data-testid="fact-clause"><code>{request.clause}</code>' in page
    assert request.evidence["decision"]["reason"] in page
    assert f'data-testid="fact-charge"><code>{request.charge.ref}</code>' in page
    assert f'data-testid="fact-invoice">{request.charge.invoice.number}<' in page
    assert earlier.ref in page
    assert 'data-testid="fact-plan">growth monthly<' in page
    assert 'data-testid="refund-expiry"' in page


def test_a_confidence_stated_only_in_the_reason_is_read_from_it(viewer_client):
    request = factories.proposed_request()
    RefundRequest.objects.filter(pk=request.pk).update(
        reason="duplicate (agent confidence 0.55; unsure about: the invoice number)"
    )
    page = _page(viewer_client, request)
    assert 'data-testid="stated-confidence">0.55<' in page
    assert 'data-testid="stated-uncertainty">the invoice number<' in page


def test_a_request_without_any_stated_confidence_says_so(viewer_client):
    page = _page(viewer_client, factories.proposed_request())
    assert 'data-testid="stated-confidence">none stated<' in page
