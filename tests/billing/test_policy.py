"""Every refund rule of POLICY.md and its boundaries, evaluated by billing.policy."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from billing import policy
from billing.models import ChargeStatus, Interval, PlanCode
from tests.billing import factories

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def at(day: str, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour, minute), tzinfo=UTC)


@pytest.mark.parametrize(
    ("charged", "asked", "amount", "clause"),
    [
        (at("2026-03-01", 10), at("2026-03-01", 11), "49.00", policy.CLAUSE_MONTHLY_14_DAYS),
        (at("2026-03-01", 23, 30), at("2026-03-15", 0, 10), "49.00", policy.CLAUSE_MONTHLY_14_DAYS),
        (at("2026-03-01", 0, 5), at("2026-03-15", 23, 59), "49.00", policy.CLAUSE_MONTHLY_14_DAYS),
        (at("2026-03-01", 23, 30), at("2026-03-16", 0, 10), "0.00", policy.CLAUSE_MONTHLY_EXPIRED),
        (at("2026-03-01", 10), at("2026-04-01", 10), "0.00", policy.CLAUSE_MONTHLY_EXPIRED),
    ],
    ids=["day-0", "day-14-late-charge", "day-14-late-ask", "day-15", "day-31"],
)
def test_monthly_plans_are_refunded_in_full_through_day_14_only(charged, asked, amount, clause):
    charge = factories.charge(charged_at=charged, interval=Interval.MONTHLY)

    decision = policy.evaluate_refund(charge=charge, at=asked)

    assert (decision.refundable_amount, decision.clause) == (Decimal(amount), clause)


def test_days_are_counted_in_utc_whatever_the_callers_time_zone():
    charge = factories.charge(charged_at=at("2026-03-01", 12), interval=Interval.MONTHLY)
    # 15 March 20:00 in New York is 16 March 00:00 UTC: day 15.
    asked = dt.datetime(2026, 3, 15, 20, 0, tzinfo=ZoneInfo("America/New_York"))

    decision = policy.evaluate_refund(charge=charge, at=asked)

    assert (decision.days_since_charge, decision.refundable_amount) == (15, Decimal("0.00"))


@pytest.mark.parametrize(
    ("asked", "amount", "clause"),
    [
        ("2026-01-15", "490.00", policy.CLAUSE_ANNUAL_30_DAYS),  # day 0
        ("2026-02-14", "490.00", policy.CLAUSE_ANNUAL_30_DAYS),  # day 30
        ("2026-02-15", "408.33", policy.CLAUSE_ANNUAL_PRORATED),  # day 31: 2 started, 10 unused
        ("2026-03-14", "408.33", policy.CLAUSE_ANNUAL_PRORATED),  # still in month 2
        ("2026-03-15", "367.50", policy.CLAUSE_ANNUAL_PRORATED),  # month 3 starts: 9 unused
        ("2026-04-25", "326.67", policy.CLAUSE_ANNUAL_PRORATED),  # day 100: 4 started, 8 unused
        ("2026-07-14", "245.00", policy.CLAUSE_ANNUAL_PRORATED),  # 6 started, 6 unused
        ("2026-07-15", "204.17", policy.CLAUSE_ANNUAL_PRORATED),  # last day: 7 started, 5 unused
        ("2026-07-16", "0.00", policy.CLAUSE_ANNUAL_EXPIRED),  # past 6 months
        ("2026-12-01", "0.00", policy.CLAUSE_ANNUAL_EXPIRED),
    ],
)
def test_annual_plans_full_for_30_days_then_prorated_until_6_months(asked, amount, clause):
    charge = factories.charge(charged_at=at("2026-01-15", 9), interval=Interval.ANNUAL)

    decision = policy.evaluate_refund(charge=charge, at=at(asked))

    assert (decision.refundable_amount, decision.clause) == (Decimal(amount), clause)
    assert decision.needs_approval is (decision.refundable_amount > 0)


@pytest.mark.parametrize(
    ("asked", "amount"),
    [("2026-02-28", "204.17"), ("2026-03-01", "0.00")],
    ids=["six-months-clamped-to-28-feb", "day-after"],
)
def test_six_months_from_31_august_ends_on_28_february(asked, amount):
    charge = factories.charge(charged_at=at("2025-08-31", 9), interval=Interval.ANNUAL)

    decision = policy.evaluate_refund(charge=charge, at=at(asked))

    assert decision.refundable_amount == Decimal(amount)


@pytest.mark.parametrize(
    ("charged_on", "on", "started"),
    [
        ("2026-01-15", "2026-01-15", 1),
        ("2026-01-15", "2026-02-14", 1),
        ("2026-01-15", "2026-02-15", 2),
        ("2026-01-31", "2026-02-28", 2),  # 31 Jan + 1 month = 28 Feb
        ("2026-01-31", "2026-02-27", 1),
        ("2026-01-15", "2026-07-15", 7),
    ],
)
def test_months_started_count_by_calendar_month(charged_on, on, started):
    assert (
        policy.months_started(
            charged_on=dt.date.fromisoformat(charged_on), on=dt.date.fromisoformat(on)
        )
        == started
    )


def test_proration_rounds_half_up_to_the_cent():
    # 0.30 x 5/12 = 0.125: half-up gives 0.13 where banker's rounding would give 0.12.
    refund = policy.prorated_annual_refund(
        amount=Decimal("0.30"), charged_on=dt.date(2026, 1, 15), on=dt.date(2026, 7, 15)
    )
    assert refund == Decimal("0.13")


@pytest.mark.parametrize(
    ("days_after", "amount", "clause"),
    [
        (0, "49.00", policy.CLAUSE_DUPLICATE),
        (180, "49.00", policy.CLAUSE_DUPLICATE),
        (181, "0.00", policy.CLAUSE_MONTHLY_EXPIRED),
    ],
)
def test_duplicate_charges_are_refunded_in_full_for_180_days(days_after, amount, clause):
    first = factories.charge(charged_at=at("2026-01-10", 9))
    duplicate = factories.charge(charged_at=at("2026-01-10", 9, 3), on_invoice=first.invoice)

    decision = policy.evaluate_refund(
        charge=duplicate, at=at("2026-01-10") + dt.timedelta(days=days_after)
    )

    assert (decision.refundable_amount, decision.clause) == (Decimal(amount), clause)


def test_the_first_of_two_identical_charges_is_not_the_duplicate():
    first = factories.charge(charged_at=at("2026-01-10", 9))
    factories.charge(charged_at=at("2026-01-10", 9, 3), on_invoice=first.invoice)

    decision = policy.evaluate_refund(charge=first, at=at("2026-01-12"))

    assert decision.clause == policy.CLAUSE_MONTHLY_14_DAYS


@pytest.mark.parametrize(
    "variant", ["other_amount", "other_invoice", "earlier_failed", "other_customer_same_day"]
)
def test_charges_that_differ_are_not_duplicates(variant):
    first = factories.charge(charged_at=at("2026-01-10", 9))
    second_at = at("2026-01-10", 9, 3)
    builders = {
        "other_amount": lambda: factories.charge(
            charged_at=second_at, on_invoice=first.invoice, amount=Decimal("48.00")
        ),
        "other_invoice": lambda: factories.charge(charged_at=second_at, owner=first.customer),
        "earlier_failed": lambda: factories.charge(
            charged_at=second_at,
            on_invoice=factories.charge(
                charged_at=at("2026-01-10", 8), status=ChargeStatus.FAILED
            ).invoice,
        ),
        "other_customer_same_day": lambda: factories.charge(charged_at=second_at),
    }
    second = builders[variant]()

    decision = policy.evaluate_refund(charge=second, at=at("2026-01-11"))

    assert decision.clause == policy.CLAUSE_MONTHLY_14_DAYS


@pytest.mark.parametrize(
    ("amount", "limit", "auto"),
    [
        ("19.00", "25.00", True),
        ("25.00", "25.00", True),
        ("25.01", "25.00", False),
        ("49.00", "25.00", False),
        ("19.00", "0", False),  # 0 turns auto-approval off
        ("49.00", "50.00", True),
    ],
)
def test_only_duplicates_within_the_limit_are_auto_approved(settings, amount, limit, auto):
    settings.REFUND_AUTO_APPROVE_LIMIT = Decimal(limit)
    first = factories.charge(charged_at=at("2026-01-10", 9), amount=Decimal(amount))
    duplicate = factories.charge(
        charged_at=at("2026-01-10", 9, 1), on_invoice=first.invoice, amount=Decimal(amount)
    )

    decision = policy.evaluate_refund(charge=duplicate, at=at("2026-01-11"))

    assert (decision.auto_approvable, decision.needs_approval) == (auto, not auto)


def test_ordinary_refunds_under_the_limit_still_need_approval():
    charge = factories.charge(
        charged_at=at("2026-01-10", 9), code=PlanCode.STARTER, amount=Decimal("19.00")
    )

    decision = policy.evaluate_refund(charge=charge, at=at("2026-01-11"))

    assert (decision.auto_approvable, decision.needs_approval) == (False, True)


@pytest.mark.parametrize("duplicate", [False, True])
def test_disputed_charges_are_not_refundable_and_escalate(duplicate):
    first = factories.charge(charged_at=at("2026-01-10", 9))
    builders = {
        True: lambda: factories.charge(
            charged_at=at("2026-01-10", 9, 2),
            on_invoice=first.invoice,
            disputed_at=at("2026-01-11"),
        ),
        False: lambda: factories.charge(
            charged_at=at("2026-01-10", 9, 2), disputed_at=at("2026-01-11")
        ),
    }
    disputed = builders[duplicate]()

    decision = policy.evaluate_refund(charge=disputed, at=at("2026-01-12"))

    assert (decision.refundable_amount, decision.clause, decision.escalate) == (
        Decimal("0.00"),
        policy.CLAUSE_DISPUTED,
        True,
    )


@pytest.mark.parametrize(
    ("interval", "refunded", "asked", "amount", "clause"),
    [
        (Interval.MONTHLY, "10.00", "2026-01-12", "39.00", policy.CLAUSE_MONTHLY_14_DAYS),
        (Interval.MONTHLY, "49.00", "2026-01-12", "0.00", policy.CLAUSE_FULLY_REFUNDED),
        (Interval.ANNUAL, "100.00", "2026-01-12", "390.00", policy.CLAUSE_ANNUAL_30_DAYS),
        # day 100: prorated 326.67 but only 290.00 is left
        (Interval.ANNUAL, "200.00", "2026-04-20", "290.00", policy.CLAUSE_ANNUAL_PRORATED),
        # day 100: prorated 326.67 is below what is left (390.00)
        (Interval.ANNUAL, "100.00", "2026-04-20", "326.67", policy.CLAUSE_ANNUAL_PRORATED),
    ],
)
def test_earlier_refunds_cap_the_refund(interval, refunded, asked, amount, clause):
    charge = factories.charge(
        charged_at=at("2026-01-10", 9), interval=interval, refunded=Decimal(refunded)
    )

    decision = policy.evaluate_refund(charge=charge, at=at(asked))

    assert (decision.refundable_amount, decision.clause) == (Decimal(amount), clause)


def test_refunds_in_flight_count_against_what_is_left():
    charge = factories.charge(charged_at=at("2026-01-10", 9))
    charge.refund_pending_amount = Decimal("40.00")

    decision = policy.evaluate_refund(charge=charge, at=at("2026-01-12"))

    assert decision.refundable_amount == Decimal("9.00")


@pytest.mark.parametrize(
    ("days", "next_retry", "read_only"),
    [
        (0, "2026-01-11", "2026-01-24"),
        (2, "2026-01-13", "2026-01-24"),
        (5, "2026-01-17", "2026-01-24"),
        (8, None, "2026-01-24"),
    ],
)
def test_failed_charges_refund_nothing_and_give_the_next_retry(days, next_retry, read_only):
    charge = factories.charge(charged_at=at("2026-01-10", 9), status=ChargeStatus.FAILED)

    decision = policy.evaluate_refund(charge=charge, at=at("2026-01-10") + dt.timedelta(days=days))

    assert decision.refundable_amount == Decimal("0.00")
    assert decision.clause == policy.CLAUSE_FAILED_PAYMENT
    evidence = decision.as_evidence()
    assert (evidence["next_retry_on"], evidence["read_only_on"]) == (next_retry, read_only)


def test_policy_refuses_naive_datetimes():
    charge = factories.charge(charged_at=at("2026-01-10", 9))
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.evaluate_refund(charge=charge, at=dt.datetime(2026, 1, 11))  # noqa: DTZ001
