"""An approved request that can no longer move money ends visibly as failed, with the reason,
instead of staying "approved" forever; nothing moves, and nothing else changes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import services, tasks
from billing.models import Charge, RefundRequest, RefundRequestState

pytestmark = pytest.mark.django_db


def _reload(request: RefundRequest) -> RefundRequest:
    return RefundRequest.objects.get(pk=request.pk)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"disputed_at": timezone.now()}, "disputed"),
        ({"refunded_amount": Decimal("49.00")}, "exceeds what is left"),
    ],
)
def test_execute_refund_closes_a_request_that_can_no_longer_run(
    make_approved_request, processor, change, reason
):
    request = make_approved_request()
    Charge.objects.filter(pk=request.charge_id).update(**change)

    assert tasks.execute_refund.run(request.pk) is None

    request = _reload(request)
    assert request.state == RefundRequestState.FAILED
    assert reason in request.failure_reason
    assert processor.all_refunds() == []


def test_reconciler_closes_an_approval_that_expired_before_it_ran(make_approved_request, processor):
    request = make_approved_request()
    later = request.expires_at + dt.timedelta(minutes=5)

    counts = services.refunds_reconcile(now=later, processor=processor)

    request = _reload(request)
    assert counts["failed"] == 1
    assert request.state == RefundRequestState.FAILED
    assert "expired" in request.failure_reason
    assert processor.all_refunds() == []


def test_a_decline_records_its_reason(make_approved_request, processor):
    request = make_approved_request()
    processor.inject("decline")

    with pytest.raises(services.RefundDeclined):
        services.issue_refund(refund_request=request, processor=processor)

    assert "declined" in _reload(request).failure_reason


@pytest.mark.parametrize(
    "state", [RefundRequestState.PROPOSED, RefundRequestState.REJECTED, RefundRequestState.EXECUTED]
)
def test_only_an_approved_request_without_an_attempt_is_closed(make_approved_request, state):
    request = make_approved_request()
    RefundRequest.objects.filter(pk=request.pk).update(state=state)

    changed = services.refund_request_fail_unexecutable(refund_request=request, reason="test")

    assert changed is False
    assert _reload(request).state == state


def test_an_approved_request_with_an_attempt_in_flight_is_not_closed(
    make_approved_request, processor
):
    request = make_approved_request()
    processor.inject("server_error")
    with pytest.raises(services.RefundRetryable):
        services.issue_refund(refund_request=request, processor=processor)

    changed = services.refund_request_fail_unexecutable(refund_request=request, reason="test")

    assert changed is False
    assert _reload(request).state == RefundRequestState.APPROVED
    # and the retry still completes it
    services.issue_refund(refund_request=request, processor=processor)
    executed = _reload(request)
    assert executed.state == RefundRequestState.EXECUTED
    assert executed.failure_reason == ""
