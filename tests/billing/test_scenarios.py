"""Every SCENARIOS.md customer's expected answer, computed by the policy code on seeded data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import transaction

from billing import demo, policy, services
from billing.models import Charge, RefundRequestState

pytestmark = pytest.mark.django_db

# Seed days chosen to cross month ends and a leap-free February.
SEED_DAYS = [dt.date(2026, 11, 21), dt.date(2026, 3, 31), dt.date(2026, 8, 31)]

EXPECTED = {
    # email: (refundable, currency, clause, needs_approval, auto_approvable, escalate)
    demo.ANA: ("49.00", "USD", policy.CLAUSE_DUPLICATE, True, False, False),
    demo.BEN: ("19.00", "USD", policy.CLAUSE_DUPLICATE, False, True, False),
    demo.CHLOE: ("1990.00", "EUR", policy.CLAUSE_ANNUAL_30_DAYS, True, False, False),
    demo.DEV: ("326.67", "USD", policy.CLAUSE_ANNUAL_PRORATED, True, False, False),
    demo.EMMA: ("0.00", "EUR", policy.CLAUSE_MONTHLY_EXPIRED, False, False, False),
    demo.FARID: ("0.00", "GBP", policy.CLAUSE_DISPUTED, False, False, True),
    demo.GRACE: ("0.00", "USD", policy.CLAUSE_FAILED_PAYMENT, False, False, False),
    demo.HUGO: ("0.00", "EUR", policy.CLAUSE_ANNUAL_EXPIRED, False, False, False),
    demo.ISLA: ("9.00", "USD", policy.CLAUSE_MONTHLY_14_DAYS, True, False, False),
    demo.JONAS: ("58.31", "EUR", policy.CLAUSE_MONTHLY_14_DAYS, True, False, False),
}


def _noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


@pytest.mark.parametrize("today", SEED_DAYS, ids=str)
def test_every_scenario_customer_gets_the_documented_answer(today):
    demo.seed_demo(today=today)
    answers = {}
    for email in EXPECTED:
        charge = Charge.objects.get(ref=demo.SCENARIO_CHARGES[email], customer__email=email)
        decision = policy.evaluate_refund(charge=charge, at=_noon(today))
        answers[email] = (
            str(decision.refundable_amount),
            decision.currency,
            decision.clause,
            decision.needs_approval,
            decision.auto_approvable,
            decision.escalate,
        )

    assert answers == EXPECTED


@pytest.mark.parametrize("today", SEED_DAYS, ids=str)
def test_grace_is_told_the_next_retry_is_in_two_days_and_read_only_after_14(today):
    demo.seed_demo(today=today)
    charge = Charge.objects.get(ref=demo.GRACE_CHARGE)

    decision = policy.evaluate_refund(charge=charge, at=_noon(today))

    assert decision.next_retry_on == today + dt.timedelta(days=2)
    assert decision.read_only_on == today + dt.timedelta(days=9)
    assert "in 2 days" in decision.reason


def test_jonas_refund_is_49_euros_plus_19_percent_vat():
    demo.seed_demo(today=SEED_DAYS[0])
    charge = Charge.objects.get(ref=demo.JONAS_CHARGE)

    decision = policy.evaluate_refund(charge=charge, at=_noon(SEED_DAYS[0]))

    assert decision.refundable_amount == Decimal("49.00") * Decimal("1.19") == Decimal("58.31")


def test_dev_proration_explains_four_months_started_and_eight_unused():
    demo.seed_demo(today=SEED_DAYS[0])

    decision = policy.evaluate_refund(
        charge=Charge.objects.get(ref=demo.DEV_CHARGE), at=_noon(SEED_DAYS[0])
    )

    assert "4 of 12 months have started, 8 are unused" in decision.reason


def test_ben_duplicate_request_is_approved_automatically_and_queued(
    django_capture_on_commit_callbacks, monkeypatch
):
    demo.seed_demo(today=SEED_DAYS[0])
    charge = Charge.objects.get(ref=demo.BEN_DUPLICATE_CHARGE)
    queued: list[int] = []
    monkeypatch.setattr(
        "billing.tasks.execute_refund.delay_on_commit",
        lambda request_id: transaction.on_commit(lambda: queued.append(request_id)),
    )

    with django_capture_on_commit_callbacks(execute=True):
        request = services.refund_request_create(
            customer=charge.customer,
            charge=charge,
            proposed_by="agent:test",
            at=_noon(SEED_DAYS[0]),
        )

    assert (request.state, request.auto_approved, request.requires_approval) == (
        RefundRequestState.APPROVED,
        True,
        False,
    )
    assert request.amount == Decimal("19.00")
    assert queued == [request.pk]


def test_ana_duplicate_request_waits_for_staff():
    demo.seed_demo(today=SEED_DAYS[0])
    charge = Charge.objects.get(ref=demo.ANA_DUPLICATE_CHARGE)

    request = services.refund_request_create(
        customer=charge.customer, charge=charge, proposed_by="agent:test", at=_noon(SEED_DAYS[0])
    )

    assert (request.state, request.amount, request.auto_approved) == (
        RefundRequestState.PROPOSED,
        Decimal("49.00"),
        False,
    )
    assert request.evidence["decision"]["clause"] == policy.CLAUSE_DUPLICATE
    assert [c["ref"] for c in request.evidence["invoice"]["other_charges"]] == [demo.ANA_CHARGE]
