"""issue_refund and the refund-request lifecycle, one caller at a time (races are elsewhere)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from billing import services, tasks
from billing.models import (
    Charge,
    IdempotencyKey,
    RecoveryPoint,
    Refund,
    RefundRequest,
    RefundRequestState,
    RefundStatus,
)
from tests.billing import factories

pytestmark = pytest.mark.django_db


def _state(request: RefundRequest) -> tuple[str, str, str, int]:
    charge = Charge.objects.get(pk=request.charge_id)
    request.refresh_from_db()
    return (
        str(charge.refunded_amount),
        str(charge.refund_pending_amount),
        request.state,
        Refund.objects.filter(charge=charge).count(),
    )


def test_approved_request_is_refunded_once_and_recorded(make_approved_request, processor):
    request = make_approved_request()

    refund = services.issue_refund(refund_request=request, processor=processor)

    assert refund.status == RefundStatus.SUCCEEDED
    assert refund.processor_ref == processor.refunds_for(request.charge.ref)[0].processor_ref
    assert _state(request) == ("49.00", "0.00", RefundRequestState.EXECUTED, 1)
    key = IdempotencyKey.objects.get(key=request.idempotency_key)
    assert (key.recovery_point, key.locked_at, key.refund_id) == (
        RecoveryPoint.FINISHED,
        None,
        refund.pk,
    )


def test_same_key_twice_refunds_once(make_approved_request, processor):
    request = make_approved_request()

    first = services.issue_refund(refund_request=request, processor=processor)
    processor.inject("server_error")  # would fail any processor call; the replay makes none
    second = services.issue_refund(refund_request=request, processor=processor)

    assert first.pk == second.pk
    assert len(processor.refunds_for(request.charge.ref)) == 1
    assert processor.pending_faults() == 1


def test_same_key_other_amount_is_a_conflict_and_moves_nothing(make_approved_request, processor):
    request = make_approved_request()
    services.issue_refund(refund_request=request, processor=processor)

    with pytest.raises(services.IdempotencyConflict):
        services.issue_refund(refund_request=request, amount=Decimal("10.00"), processor=processor)

    assert _state(request) == ("49.00", "0.00", RefundRequestState.EXECUTED, 1)
    assert processor.total_refunded(request.charge.ref) == Decimal("49.00")


def test_same_key_other_amount_before_any_success_is_a_conflict(make_approved_request, processor):
    request = make_approved_request()
    processor.inject("server_error")
    with pytest.raises(services.RefundRetryable):
        services.issue_refund(refund_request=request, processor=processor)

    with pytest.raises(services.IdempotencyConflict):
        services.issue_refund(refund_request=request, amount=Decimal("10.00"), processor=processor)

    assert _state(request) == ("0.00", "49.00", RefundRequestState.APPROVED, 1)
    assert processor.refunds_for(request.charge.ref) == []


@pytest.mark.parametrize("decision", ["proposed", "rejected"])
def test_unapproved_request_is_refused(decision, staff_user, processor):
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="test"
    )
    decide = {
        "proposed": lambda: None,
        "rejected": lambda: services.refund_request_reject(
            refund_request=request, actor=staff_user
        ),
    }
    decide[decision]()

    with pytest.raises(services.RefundNotAllowed, match="not approved"):
        services.issue_refund(refund_request=request, processor=processor)

    assert _state(request) == ("0.00", "0.00", decision, 0)
    assert not IdempotencyKey.objects.exists()
    assert processor.all_refunds() == []


def test_expired_request_is_refused(make_approved_request, processor):
    request = make_approved_request()

    with pytest.raises(services.RefundNotAllowed, match="expired"):
        services.issue_refund(
            refund_request=request,
            processor=processor,
            now=request.expires_at + dt.timedelta(seconds=1),
        )

    assert _state(request) == ("0.00", "0.00", RefundRequestState.APPROVED, 0)
    assert processor.all_refunds() == []


def test_timeout_after_the_processor_applied_then_retry_refunds_once(
    make_approved_request, processor
):
    request = make_approved_request()
    processor.inject("timeout_after_apply")

    with pytest.raises(services.RefundRetryable):
        services.issue_refund(refund_request=request, processor=processor)
    assert len(processor.refunds_for(request.charge.ref)) == 1  # the money did move
    assert _state(request) == ("0.00", "49.00", RefundRequestState.APPROVED, 1)

    refund = services.issue_refund(refund_request=request, processor=processor)

    assert refund.status == RefundStatus.SUCCEEDED
    assert len(processor.refunds_for(request.charge.ref)) == 1
    assert _state(request) == ("49.00", "0.00", RefundRequestState.EXECUTED, 1)


def test_server_error_before_applying_then_retry_succeeds(make_approved_request, processor):
    request = make_approved_request()
    processor.inject("server_error", times=2)

    for _ in range(2):
        with pytest.raises(services.RefundRetryable):
            services.issue_refund(refund_request=request, processor=processor)
    refund = services.issue_refund(refund_request=request, processor=processor)

    assert refund.status == RefundStatus.SUCCEEDED
    assert len(processor.refunds_for(request.charge.ref)) == 1
    assert IdempotencyKey.objects.get(key=request.idempotency_key).attempts == 3


def test_permanent_decline_releases_the_reservation(make_approved_request, processor):
    request = make_approved_request()
    processor.inject("decline")

    with pytest.raises(services.RefundDeclined):
        services.issue_refund(refund_request=request, processor=processor)

    assert _state(request) == ("0.00", "0.00", RefundRequestState.FAILED, 1)
    refund = Refund.objects.get(refund_request=request)
    assert (refund.status, refund.failure_code) == (RefundStatus.FAILED, "declined")
    # The recorded result is returned for the key again; the processor sees no new call.
    with pytest.raises(services.RefundDeclined):
        services.issue_refund(refund_request=request, processor=processor)
    assert processor.all_refunds() == []


def test_refund_above_what_is_left_is_refused_under_the_lock(make_approved_request, processor):
    request = make_approved_request()
    # Money left the charge after the request was approved (e.g. another refund).
    Charge.objects.filter(pk=request.charge_id).update(refunded_amount=Decimal("40.00"))

    with pytest.raises(services.RefundNotAllowed, match="exceeds what is left"):
        services.issue_refund(refund_request=request, processor=processor)

    assert _state(request) == ("40.00", "0.00", RefundRequestState.APPROVED, 0)
    assert processor.all_refunds() == []


def test_charge_disputed_after_approval_is_refused(make_approved_request, processor):
    request = make_approved_request()
    Charge.objects.filter(pk=request.charge_id).update(disputed_at=timezone.now())

    with pytest.raises(services.RefundNotAllowed, match="disputed"):
        services.issue_refund(refund_request=request, processor=processor)

    assert processor.all_refunds() == []


def test_amount_above_the_approved_amount_is_refused(make_approved_request, processor):
    request = make_approved_request(amount=Decimal("20.00"))

    with pytest.raises(services.RefundNotAllowed, match="approved"):
        services.issue_refund(
            refund_request=request,
            idempotency_key="another-key",
            amount=Decimal("30.00"),
            processor=processor,
        )

    assert processor.all_refunds() == []


def test_request_amount_above_policy_is_refused():
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))

    with pytest.raises(services.RefundNotAllowed, match="refundable"):
        services.refund_request_create(
            customer=charge.customer,
            charge=charge,
            amount=Decimal("49.01"),
            proposed_by="agent:test",
        )

    assert not RefundRequest.objects.exists()


def test_request_for_another_customers_charge_is_refused():
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))

    with pytest.raises(services.RefundNotAllowed, match="does not belong"):
        services.refund_request_create(
            customer=factories.customer(), charge=charge, proposed_by="agent:test"
        )


def test_request_outside_policy_is_refused():
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=20))

    with pytest.raises(services.RefundNotAllowed, match="14 days"):
        services.refund_request_create(customer=charge.customer, charge=charge, proposed_by="x")


def test_request_creation_with_a_key_is_idempotent():
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))

    first = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent", idempotency_key="run-1-step-3"
    )
    again = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent", idempotency_key="run-1-step-3"
    )

    assert first.pk == again.pk
    assert RefundRequest.objects.count() == 1


def test_evidence_is_frozen_at_creation():
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent"
    )

    Charge.objects.filter(pk=charge.pk).update(refunded_amount=Decimal("5.00"))
    request.refresh_from_db()

    assert request.evidence["charge"]["refunded_amount"] == "0.00"
    assert request.evidence["decision"]["refundable_amount"] == "49.00"


def test_only_staff_with_the_permission_can_decide():
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent"
    )
    clerk = User.objects.create_user("clerk", is_staff=True)

    with pytest.raises(PermissionDenied):
        services.refund_request_approve(refund_request=request, actor=clerk)

    request.refresh_from_db()
    assert request.state == RefundRequestState.PROPOSED


def test_a_request_is_decided_once(staff_user):
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent"
    )
    services.refund_request_reject(refund_request=request, actor=staff_user, note="no")

    with pytest.raises(services.RefundRequestStateError, match="rejected"):
        services.refund_request_approve(refund_request=request, actor=staff_user)

    request.refresh_from_db()
    assert (request.state, request.decided_by_id, request.decision_note) == (
        RefundRequestState.REJECTED,
        staff_user.pk,
        "no",
    )


def test_approval_queues_execution_after_commit(staff_user, django_capture_on_commit_callbacks):
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent"
    )

    with django_capture_on_commit_callbacks() as callbacks:
        services.refund_request_approve(refund_request=request, actor=staff_user)

    # One execution queued (the others announce the new state and bump the billing version).
    executions = [c for c in callbacks if "execute_refund" in repr(c)]
    assert len(executions) == 1


def test_requests_nobody_decides_expire_and_can_no_longer_be_approved(staff_user):
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))
    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent"
    )
    later = request.expires_at + dt.timedelta(minutes=1)

    with pytest.raises(services.RefundRequestStateError, match="expiry"):
        services.refund_request_approve(refund_request=request, actor=staff_user, at=later)
    expired = services.refund_requests_expire(now=later)

    request.refresh_from_db()
    assert (expired, request.state) == (1, RefundRequestState.EXPIRED)


@pytest.mark.parametrize(
    ("age_hours", "finished", "kept"),
    [(1, True, True), (23, True, True), (25, True, False), (25, False, True), (200, False, True)],
)
def test_purge_removes_only_finished_keys_older_than_24_hours(settings, age_hours, finished, kept):
    settings.IDEMPOTENCY_KEY_RETENTION_HOURS = 1  # below the floor: 24 hours still apply
    now = timezone.now()
    points = {True: RecoveryPoint.FINISHED, False: RecoveryPoint.REFUND_RESERVED}
    IdempotencyKey.objects.create(
        key="k",
        fingerprint="f",
        recovery_point=points[finished],
        created_at=now - dt.timedelta(hours=age_hours),
        updated_at=now - dt.timedelta(hours=age_hours),
    )

    services.idempotency_keys_purge(now=now)

    assert IdempotencyKey.objects.filter(key="k").exists() is kept


def test_execute_refund_task_is_safe_to_run_twice(make_approved_request, processor):
    request = make_approved_request()

    first = tasks.execute_refund.apply(args=[request.pk]).get()
    second = tasks.execute_refund.apply(args=[request.pk]).get()

    assert first == second == Refund.objects.get(refund_request=request).ref
    assert len(processor.refunds_for(request.charge.ref)) == 1


def test_execute_refund_task_retries_transient_processor_errors(make_approved_request, processor):
    request = make_approved_request()
    processor.inject("server_error", times=2)

    result = tasks.execute_refund.apply(args=[request.pk])

    assert result.get() == Refund.objects.get(refund_request=request).ref
    assert IdempotencyKey.objects.get(key=request.idempotency_key).attempts == 3
    assert len(processor.refunds_for(request.charge.ref)) == 1


def test_execute_refund_task_does_not_retry_a_decline(make_approved_request, processor):
    request = make_approved_request()
    processor.inject("decline")
    processor.inject("server_error")  # would be popped by a (wrong) second attempt

    assert tasks.execute_refund.apply(args=[request.pk]).get() is None

    assert processor.pending_faults() == 1
    assert _state(request) == ("0.00", "0.00", RefundRequestState.FAILED, 1)
