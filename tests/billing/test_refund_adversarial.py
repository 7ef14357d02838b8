"""Attacks on the money path found in review: amounts that are not whole cents, a caller that
wraps issue_refund in its own transaction, and racing repeats of one refund-request key."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
from django.db import connections, transaction
from django.utils import timezone

from billing import services
from billing.models import Charge, IdempotencyKey, Refund, RefundRequest, RefundRequestState
from tests.billing import factories


@pytest.fixture
def drop_queued_tasks(redis_client):
    """Approvals queue execute_refund for a worker no test here starts; drop them afterwards."""
    yield
    redis_client.flushdb()


@pytest.mark.django_db
@pytest.mark.parametrize("amount", ["10.005", "0.001", "19.999", "NaN", "Infinity"])
def test_refund_of_a_fraction_of_a_cent_is_refused_and_moves_nothing(
    make_approved_request, processor, amount
):
    # 10.005 would be stored as 10.01 by Postgres but fingerprinted as "10.00" (half-even), so a
    # later call for 10.00 with the same key would "replay" a refund of another amount.
    request = make_approved_request(amount=Decimal("20.00"))

    with pytest.raises(services.RefundNotAllowed, match="whole cents"):
        services.issue_refund(
            refund_request=request,
            idempotency_key="sub-cent",
            amount=Decimal(amount),
            processor=processor,
        )

    assert processor.all_refunds() == []
    assert not IdempotencyKey.objects.exists()
    assert not Refund.objects.exists()
    assert Charge.objects.get(pk=request.charge_id).refund_pending_amount == 0


@pytest.mark.django_db
@pytest.mark.parametrize("amount", ["10.005", "0.001", "NaN"])
def test_refund_request_of_a_fraction_of_a_cent_is_refused(amount):
    charge = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1))

    with pytest.raises(services.RefundNotAllowed, match="whole cents"):
        services.refund_request_create(
            customer=charge.customer, charge=charge, amount=Decimal(amount), proposed_by="agent"
        )

    assert not RefundRequest.objects.exists()


@pytest.mark.django_db
def test_issue_refund_inside_a_callers_transaction_is_refused_before_the_processor(
    make_approved_request, processor
):
    # Inside an outer transaction the recovery point would not commit before the processor call:
    # a rollback afterwards would leave money moved with no record for a retry or the reconciler.
    request = make_approved_request()

    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        services.issue_refund(refund_request=request, processor=processor)

    assert processor.all_refunds() == []
    assert not IdempotencyKey.objects.exists()
    assert Refund.objects.count() == 0
    request.refresh_from_db()
    assert request.state == RefundRequestState.APPROVED


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_refund_request_key_repeated_from_8_threads_creates_one_request(drop_queued_tasks):
    # e.g. an agent step redelivered while the first delivery is still running. A duplicate
    # charge within the auto-approval limit, so each created request would also queue a refund.
    first = factories.charge(charged_at=timezone.now() - dt.timedelta(days=1), amount=Decimal(19))
    duplicate = factories.charge(
        charged_at=timezone.now() - dt.timedelta(hours=20), on_invoice=first.invoice
    )
    barrier = threading.Barrier(8)
    results: list[object] = [None] * 8

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = services.refund_request_create(
                customer=duplicate.customer,
                charge=duplicate,
                proposed_by="agent:run-1",
                idempotency_key="run-1-step-3",
            ).pk
        except Exception as exc:  # the assertion below shows which
            results[index] = type(exc).__name__
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    request = RefundRequest.objects.get()
    assert results == [request.pk] * 8
    assert (request.state, request.auto_approved) == (RefundRequestState.APPROVED, True)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_one_request_under_8_different_keys_at_once_is_refunded_once(
    trial, make_approved_request, processor, drop_queued_tasks
):
    # 20 of 49: the charge alone would have room for two, so only the request's lock (and its
    # one-refund constraint) stands between the keys and a second refund of the same request.
    request = make_approved_request(amount=Decimal("20.00"))
    processor.inject("latency", seconds=0.05, times=8)
    barrier = threading.Barrier(8)
    results: list[object] = [None] * 8

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = services.issue_refund(
                refund_request=RefundRequest.objects.get(pk=request.pk),
                idempotency_key=f"t{trial}-key-{index}",
                processor=processor,
            ).pk
        except Exception as exc:  # the assertion below shows which
            results[index] = type(exc).__name__
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    refund = Refund.objects.get(charge_id=request.charge_id)
    assert sorted(map(str, results)) == sorted([str(refund.pk)] + ["RefundNotAllowed"] * 7)
    assert len(processor.refunds_for(refund.charge.ref)) == 1
    charge = Charge.objects.get(pk=request.charge_id)
    assert (charge.refunded_amount, charge.refund_pending_amount) == (request.amount, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_attempt_outliving_its_lock_and_the_takeover_both_return_the_one_refund(
    settings, make_approved_request, processor, drop_queued_tasks
):
    # A processor call slower than REFUND_RECONCILE_AFTER_SECONDS: a retry takes the stale key
    # over and records the result while the first attempt is still alive; when the first one
    # finally answers, it must find the result recorded and return it, not record it again.
    settings.REFUND_RECONCILE_AFTER_SECONDS = 1
    request = make_approved_request()
    processor.inject("slow_after_apply", seconds=3)
    first: list[object] = []

    def slow_attempt() -> None:
        try:
            first.append(services.issue_refund(refund_request=request, processor=processor).pk)
        except Exception as exc:  # the assertion below shows which
            first.append(type(exc).__name__)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_attempt)
    thread.start()
    deadline = time.monotonic() + 30
    while not processor.refunds_for(request.charge.ref) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.2)  # the first attempt's lock is now stale; it is still waiting on the processor
    takeover = services.issue_refund(refund_request=request, processor=processor)
    assert IdempotencyKey.objects.get(key=request.idempotency_key).attempts == 2
    thread.join(timeout=30)

    assert first == [takeover.pk]
    assert len(processor.refunds_for(request.charge.ref)) == 1
    charge = Charge.objects.get(pk=request.charge_id)
    request.refresh_from_db()
    assert (charge.refunded_amount, charge.refund_pending_amount, request.state) == (
        request.amount,
        0,
        RefundRequestState.EXECUTED,
    )


@pytest.mark.django_db
def test_an_approval_whose_execution_was_never_queued_is_executed_by_the_reconciler(
    settings, make_approved_request, processor
):
    # The approval committed but its on-commit enqueue never reached a worker (the broker was
    # down at commit; here the callback simply never runs). Nothing else would ever execute it.
    request = make_approved_request()
    later = timezone.now() + dt.timedelta(seconds=settings.REFUND_RECONCILE_AFTER_SECONDS + 1)

    fresh = services.refunds_reconcile(processor=processor)  # the task may still be on its way
    first = services.refunds_reconcile(now=later, processor=processor)
    again = services.refunds_reconcile(now=later, processor=processor)

    assert (fresh["succeeded"], first["succeeded"], again["succeeded"]) == (0, 1, 0)
    assert len(processor.refunds_for(request.charge.ref)) == 1
    request.refresh_from_db()
    assert request.state == RefundRequestState.EXECUTED


@pytest.mark.django_db
def test_the_reconciler_moves_no_money_for_an_expired_approval_and_closes_it(
    make_approved_request, processor
):
    request = make_approved_request()

    services.refunds_reconcile(
        now=request.expires_at + dt.timedelta(seconds=1), processor=processor
    )

    assert processor.all_refunds() == []
    assert not Refund.objects.exists()
    request.refresh_from_db()
    assert request.state == RefundRequestState.FAILED
