"""Ledgerly's refund policy (POLICY.md, "Refunds" and "Payments") as pure code, in one place.

`evaluate_refund(charge=..., at=...)` answers "how much of this charge can be refunded at this
moment, under which clause, does it need a person, and why". It reads the charge, its invoice's
plan and the customer's other charges; it writes nothing.

How time is counted (the boundaries POLICY.md leaves to us, fixed here once):

* Days are whole UTC calendar days between the charge's UTC date and the moment's UTC date.
  A charge made at any time on 1 March is on "day 0" all of 1 March, "day 14" all of 15 March.
* "Within N days" includes day N: monthly plans are refundable through day 14 (day 15 is not);
  annual plans in full through day 30 (day 31 is prorated); duplicates through day 180.
* "Within 6 months" is by calendar month: refundable through the UTC date six calendar months
  after the charge date (the day clamped to the month's end: 31 Aug + 6 months = 28/29 Feb).
* Annual proration (SCENARIOS.md): months of the term count from the charge date by calendar
  month and a month that has started counts as used, so on day 31..(1 month later - 1 day) two
  months have started. Refund = charged amount x (12 - months started) / 12, rounded half-up to
  the cent. The charged amount is what the customer paid for the term (tax included), so the
  refund returns the unused share of the money actually taken.
* A refund never exceeds what is left of the charge: amount - refunded - refunds in flight.
* Disputed charges (a chargeback opened) are never refundable here and are escalated.
* A duplicate is a succeeded charge for which another succeeded charge of the same customer,
  same amount and same invoice exists earlier (earlier `charged_at`, ties broken by id). The first
  charge of the pair is an ordinary charge; only the later one is the duplicate. A duplicate
  past its 180 days is judged by its plan's ordinary rules.
* Failed charges took no money: nothing to refund; the answer gives the next retry day
  (retries on days 1, 3 and 7 after the failure) and the day the account turns read-only
  (14 days unpaid).

Approval: every refund needs a staff decision, except a duplicate-charge refund whose amount is
at or below settings.REFUND_AUTO_APPROVE_LIMIT (in the charge's currency); a limit of 0 turns
auto-approval off.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from billing.models import Charge

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

MONTHLY_FULL_REFUND_DAYS = 14
ANNUAL_FULL_REFUND_DAYS = 30
ANNUAL_PRORATED_MONTHS = 6
DUPLICATE_REFUND_DAYS = 180
PAYMENT_RETRY_DAYS = (1, 3, 7)
READ_ONLY_AFTER_UNPAID_DAYS = 14
REFUND_ARRIVAL_BUSINESS_DAYS = "5-10"

# Clause identifiers recorded on refund requests and shown to staff and the agent.
CLAUSE_MONTHLY_14_DAYS = "monthly_14_days"
CLAUSE_MONTHLY_EXPIRED = "monthly_window_passed"
CLAUSE_ANNUAL_30_DAYS = "annual_30_days"
CLAUSE_ANNUAL_PRORATED = "annual_prorated"
CLAUSE_ANNUAL_EXPIRED = "annual_6_months_passed"
CLAUSE_DUPLICATE = "duplicate_charge"
CLAUSE_DISPUTED = "disputed_charge"
CLAUSE_FULLY_REFUNDED = "already_refunded"
CLAUSE_FAILED_PAYMENT = "failed_payment"
CLAUSE_NO_PLAN = "no_plan"


@dataclass(frozen=True)
class RefundDecision:
    refundable_amount: Decimal
    currency: str
    clause: str
    needs_approval: bool
    auto_approvable: bool
    reason: str
    escalate: bool = False
    remaining_amount: Decimal = ZERO
    days_since_charge: int = 0
    next_retry_on: dt.date | None = None
    read_only_on: dt.date | None = None

    @property
    def refundable(self) -> bool:
        return self.refundable_amount > 0

    def as_evidence(self) -> dict[str, object]:
        """A JSON-ready snapshot for freezing into a RefundRequest."""
        return {
            "refundable_amount": str(self.refundable_amount),
            "currency": self.currency,
            "clause": self.clause,
            "needs_approval": self.needs_approval,
            "auto_approvable": self.auto_approvable,
            "reason": self.reason,
            "escalate": self.escalate,
            "remaining_amount": str(self.remaining_amount),
            "days_since_charge": self.days_since_charge,
            "next_retry_on": self.next_retry_on.isoformat() if self.next_retry_on else None,
            "read_only_on": self.read_only_on.isoformat() if self.read_only_on else None,
        }


def utc_date(moment: dt.datetime) -> dt.date:
    if moment.tzinfo is None:
        raise ValueError("policy times must be timezone-aware")
    return moment.astimezone(dt.UTC).date()


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` calendar months later (or earlier), clamped to the month's end."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def months_started(*, charged_on: dt.date, on: dt.date) -> int:
    """Months of a term starting on `charged_on` that have started by `on` (day 0 counts 1)."""
    if on < charged_on:
        return 0
    months = (on.year - charged_on.year) * 12 + (on.month - charged_on.month)
    # `months` full months have elapsed unless we have not yet reached the anniversary day.
    if add_months(charged_on, months) > on:
        months -= 1
    return months + 1


def prorated_annual_refund(*, amount: Decimal, charged_on: dt.date, on: dt.date) -> Decimal:
    started = min(months_started(charged_on=charged_on, on=on), 12)
    unused = 12 - started
    return (amount * unused / 12).quantize(CENT, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal, currency: str) -> str:
    """An amount as customers read it: $49.00, €1,990.00, £49.00."""
    return _money(amount, currency)


def _money(amount: Decimal, currency: str) -> str:
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency, "")
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}"


def _auto_approvable(*, clause: str, amount: Decimal) -> bool:
    limit = Decimal(settings.REFUND_AUTO_APPROVE_LIMIT)
    return clause == CLAUSE_DUPLICATE and limit > 0 and ZERO < amount <= limit


def _is_duplicate(charge: Charge) -> bool:
    from billing.models import Charge, ChargeStatus

    earlier = Charge.objects.filter(
        customer_id=charge.customer_id,
        invoice_id=charge.invoice_id,
        amount=charge.amount,
        currency=charge.currency,
        status=ChargeStatus.SUCCEEDED,
    ).exclude(pk=charge.pk)
    return (
        earlier.filter(charged_at__lt=charge.charged_at).exists()
        or earlier.filter(charged_at=charge.charged_at, pk__lt=charge.pk).exists()
    )


def _plan_interval(charge: Charge) -> str | None:
    subscription = charge.invoice.subscription
    return subscription.plan.interval if subscription is not None else None


def evaluate_refund(*, charge: Charge, at: dt.datetime) -> RefundDecision:
    """What POLICY.md allows for `charge` at moment `at` (timezone-aware).

    Reads the charge's current refunded and in-flight amounts, so call it again under the charge's
    row lock when the answer decides money. Never raises for a policy "no": a zero refundable
    amount comes with the clause and the reason.
    """
    from billing.models import ChargeStatus, Interval

    currency = charge.currency
    charged_on = utc_date(charge.charged_at)
    today = utc_date(at)
    days = (today - charged_on).days
    remaining = (charge.amount - charge.refunded_amount - charge.refund_pending_amount).quantize(
        CENT
    )

    def no(clause: str, reason: str, **extra: object) -> RefundDecision:
        return RefundDecision(
            refundable_amount=ZERO,
            currency=currency,
            clause=clause,
            needs_approval=False,
            auto_approvable=False,
            reason=reason,
            remaining_amount=max(remaining, ZERO),
            days_since_charge=days,
            **extra,  # type: ignore[arg-type]
        )

    def yes(clause: str, amount: Decimal, reason: str) -> RefundDecision:
        amount = min(amount, remaining).quantize(CENT)
        capped = (
            f" {_money(charge.amount - remaining, currency)} of the charge was already refunded"
            f" or is being refunded, so at most the remaining {_money(remaining, currency)} can be."
            if remaining < charge.amount
            else ""
        )
        auto = _auto_approvable(clause=clause, amount=amount)
        approval = (
            " It is approved automatically (a duplicate of "
            f"{_money(Decimal(settings.REFUND_AUTO_APPROVE_LIMIT), currency)} or less)."
            if auto
            else " It needs a staff approval (staff decide within 1 business day)."
        )
        return RefundDecision(
            refundable_amount=amount,
            currency=currency,
            clause=clause,
            needs_approval=not auto,
            auto_approvable=auto,
            reason=(
                f"{reason}{capped}{approval} Refunds go back to the original payment method "
                f"and take {REFUND_ARRIVAL_BUSINESS_DAYS} business days to appear."
            ),
            remaining_amount=remaining,
            days_since_charge=days,
        )

    if charge.status == ChargeStatus.FAILED:
        next_retry_day = next((d for d in PAYMENT_RETRY_DAYS if d > days), None)
        next_retry_on = charged_on + dt.timedelta(days=next_retry_day) if next_retry_day else None
        read_only_on = charged_on + dt.timedelta(days=READ_ONLY_AFTER_UNPAID_DAYS)
        retry = (
            f"The next automatic retry is on day {next_retry_day} after the failure, "
            f"{next_retry_on.isoformat()} (in {next_retry_day - days} days)."
            if next_retry_on and next_retry_day
            else "All automatic retries (days 1, 3 and 7) have been made."
        )
        return no(
            CLAUSE_FAILED_PAYMENT,
            f"This payment failed, so no money was taken and there is nothing to refund. {retry} "
            f"If the invoice is still unpaid {READ_ONLY_AFTER_UNPAID_DAYS} days after the "
            f"failure ({read_only_on.isoformat()}) the account turns read-only until it is paid.",
            next_retry_on=next_retry_on,
            read_only_on=read_only_on,
        )

    if charge.disputed_at is not None:
        return RefundDecision(
            refundable_amount=ZERO,
            currency=currency,
            clause=CLAUSE_DISPUTED,
            needs_approval=False,
            auto_approvable=False,
            reason=(
                "The customer opened a chargeback on this charge. Disputed charges cannot be "
                "refunded through support; the dispute goes to staff."
            ),
            escalate=True,
            remaining_amount=max(remaining, ZERO),
            days_since_charge=days,
        )

    if remaining <= 0:
        return no(CLAUSE_FULLY_REFUNDED, "This charge has already been refunded in full.")

    if days <= DUPLICATE_REFUND_DAYS and _is_duplicate(charge):
        return yes(
            CLAUSE_DUPLICATE,
            charge.amount,
            f"This charge duplicates an earlier charge of {_money(charge.amount, currency)} for "
            f"the same invoice; duplicates are refunded in full within {DUPLICATE_REFUND_DAYS} "
            f"days (day {days}).",
        )

    interval = _plan_interval(charge)
    if interval == Interval.MONTHLY:
        if days <= MONTHLY_FULL_REFUND_DAYS:
            return yes(
                CLAUSE_MONTHLY_14_DAYS,
                charge.amount,
                f"Monthly plans are refunded in full within {MONTHLY_FULL_REFUND_DAYS} days of "
                f"the charge; this charge is {days} days old.",
            )
        return no(
            CLAUSE_MONTHLY_EXPIRED,
            f"Monthly plans are refunded only within {MONTHLY_FULL_REFUND_DAYS} days of the "
            f"charge; this charge is {days} days old.",
        )

    if interval == Interval.ANNUAL:
        if days <= ANNUAL_FULL_REFUND_DAYS:
            return yes(
                CLAUSE_ANNUAL_30_DAYS,
                charge.amount,
                f"Annual plans are refunded in full within {ANNUAL_FULL_REFUND_DAYS} days of the "
                f"charge; this charge is {days} days old.",
            )
        last_day = add_months(charged_on, ANNUAL_PRORATED_MONTHS)
        if today <= last_day:
            started = months_started(charged_on=charged_on, on=today)
            amount = prorated_annual_refund(amount=charge.amount, charged_on=charged_on, on=today)
            return yes(
                CLAUSE_ANNUAL_PRORATED,
                amount,
                f"After {ANNUAL_FULL_REFUND_DAYS} days an annual plan is refunded pro rata for "
                f"the unused whole months, if asked within {ANNUAL_PRORATED_MONTHS} months "
                f"(until {last_day.isoformat()}): {started} of 12 months have started, "
                f"{12 - started} are unused, so {_money(charge.amount, currency)} x "
                f"{12 - started}/12 = {_money(amount, currency)}.",
            )
        return no(
            CLAUSE_ANNUAL_EXPIRED,
            f"Prorated refunds of annual plans must be requested within "
            f"{ANNUAL_PRORATED_MONTHS} months of the charge (until {last_day.isoformat()}).",
        )

    return no(CLAUSE_NO_PLAN, "This charge belongs to no plan; staff must decide.", escalate=True)
