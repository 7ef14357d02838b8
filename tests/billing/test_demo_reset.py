"""`demo_customer_reset`: an evaluation case starts from the seeded world for its customer.

Against the real seeded demo world: money moved through the real services (and the processor
simulator's Redis ledger), then reset, must leave the customer exactly as seeded, and leave
everyone else alone.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import demo, services
from billing.models import Charge, Customer, IdempotencyKey, Invoice, Refund, RefundRequest
from billing.policy import evaluate_refund

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(processor):
    """The demo world seeded for today, and the processor simulator emptied."""
    demo.seed_demo(today=timezone.now().astimezone(dt.UTC).date())
    return processor


def _snapshot() -> dict[str, object]:
    return {
        "charges": list(
            Charge.objects.order_by("ref").values_list(
                "ref", "refunded_amount", "refund_pending_amount"
            )
        ),
        "refunds": list(Refund.objects.order_by("ref").values_list("ref", "amount", "status")),
        "requests": RefundRequest.objects.count(),
        "keys": IdempotencyKey.objects.count(),
        "reissued": list(Invoice.objects.filter(reissued=True).values_list("number", flat=True)),
    }


def _executed_refund(*, email: str, staff_user, amount: Decimal | None = None) -> RefundRequest:
    customer = Customer.objects.get(email=email)
    charge = Charge.objects.get(ref=demo.SCENARIO_CHARGES[email])
    request = services.refund_request_create(
        customer=customer, charge=charge, amount=amount, proposed_by="test", source="ticket:1"
    )
    if not request.auto_approved:
        request = services.refund_request_approve(refund_request=request, actor=staff_user)
    services.issue_refund(refund_request=request)
    request.refresh_from_db()
    assert request.state == "executed"
    return request


def test_reset_undoes_an_executed_refund_and_keeps_the_seeded_one(world, staff_user):
    seeded = _snapshot()
    _executed_refund(email=demo.ISLA, staff_user=staff_user)
    isla_charge = Charge.objects.get(ref=demo.ISLA_CHARGE)
    assert isla_charge.refunded_amount == Decimal("19.00")
    assert world.total_refunded(demo.ISLA_CHARGE) == Decimal("9.00")

    demo.demo_customer_reset(email=demo.ISLA)

    assert _snapshot() == seeded
    isla_charge.refresh_from_db()
    assert (isla_charge.refunded_amount, isla_charge.refund_pending_amount) == (
        Decimal("10.00"),
        Decimal("0.00"),
    )
    assert list(Refund.objects.filter(charge=isla_charge).values_list("ref", flat=True)) == [
        demo.ISLA_EARLIER_REFUND
    ]
    assert world.refunds_for(demo.ISLA_CHARGE) == []
    assert world.all_refunds() == []
    # The policy sees the seeded world again: the remaining $9 is refundable once more.
    decision = evaluate_refund(charge=isla_charge, at=timezone.now())
    assert decision.refundable_amount == Decimal("9.00")


def test_reset_leaves_other_customers_alone(world, staff_user):
    _executed_refund(email=demo.BEN, staff_user=staff_user)  # auto-approved ($19 duplicate)
    ana_request = _executed_refund(email=demo.ANA, staff_user=staff_user)
    before = _snapshot()
    ben_refunds = set(
        Refund.objects.filter(charge__customer__email=demo.BEN).values_list("ref", flat=True)
    )

    demo.demo_customer_reset(email=demo.BEN)

    after = _snapshot()
    assert RefundRequest.objects.filter(customer__email=demo.BEN).count() == 0
    assert list(RefundRequest.objects.values_list("pk", flat=True)) == [ana_request.pk]
    ana_charge = Charge.objects.get(ref=demo.ANA_DUPLICATE_CHARGE)
    assert ana_charge.refunded_amount == Decimal("49.00")
    assert IdempotencyKey.objects.filter(key=ana_request.idempotency_key).exists()
    assert [r.charge_ref for r in world.all_refunds()] == [demo.ANA_DUPLICATE_CHARGE]
    assert world.refunds_for(demo.BEN_DUPLICATE_CHARGE) == []
    ben_charge = Charge.objects.get(ref=demo.BEN_DUPLICATE_CHARGE)
    assert ben_charge.refunded_amount == Decimal("0.00")
    assert len(ben_refunds) == 1
    assert after["refunds"] == [r for r in before["refunds"] if r[0] not in ben_refunds]  # type: ignore[attr-defined]


def test_reset_releases_a_refund_left_in_flight(world, staff_user):
    seeded = _snapshot()
    customer = Customer.objects.get(email=demo.CHLOE)
    charge = Charge.objects.get(ref=demo.CHLOE_CHARGE)
    request = services.refund_request_create(customer=customer, charge=charge, proposed_by="test")
    request = services.refund_request_approve(refund_request=request, actor=staff_user)
    world.inject("server_error")
    with pytest.raises(services.RefundRetryable):
        services.issue_refund(refund_request=request)
    charge.refresh_from_db()
    assert charge.refund_pending_amount == Decimal("1990.00")

    demo.demo_customer_reset(email=demo.CHLOE)

    assert _snapshot() == seeded


def test_reset_makes_a_reissued_invoice_reissuable(world):
    seeded = _snapshot()
    customer = Customer.objects.get(email=demo.JONAS)
    invoice = Invoice.objects.get(number=demo.JONAS_INVOICE)
    services.invoice_reissue(customer=customer, invoice=invoice)

    demo.demo_customer_reset(email=demo.JONAS)

    assert _snapshot() == seeded
    services.invoice_reissue(customer=customer, invoice=invoice)  # allowed once again


def test_reset_of_an_untouched_customer_changes_nothing(world):
    seeded = _snapshot()
    demo.demo_customer_reset(email=demo.EMMA)
    assert _snapshot() == seeded
