"""Small builders for billing rows (plain functions; every argument has a sensible default)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from django.utils import timezone

from billing.models import (
    Charge,
    ChargeStatus,
    Customer,
    Interval,
    Invoice,
    InvoiceStatus,
    PaymentMethod,
    Plan,
    PlanCode,
    Subscription,
)
from billing.policy import add_months

_seq = itertools.count(1)
PRICES: dict[tuple[str, str], Decimal] = {
    (PlanCode.STARTER, Interval.MONTHLY): Decimal("19.00"),
    (PlanCode.STARTER, Interval.ANNUAL): Decimal("190.00"),
    (PlanCode.GROWTH, Interval.MONTHLY): Decimal("49.00"),
    (PlanCode.GROWTH, Interval.ANNUAL): Decimal("490.00"),
    (PlanCode.SCALE, Interval.MONTHLY): Decimal("199.00"),
    (PlanCode.SCALE, Interval.ANNUAL): Decimal("1990.00"),
}


def plan(code: str = PlanCode.GROWTH, interval: str = Interval.MONTHLY) -> Plan:
    price = PRICES[(code, interval)]
    found, _ = Plan.objects.get_or_create(
        code=code, interval=interval, defaults={"price": price, "seats": 5}
    )
    return found


def customer(*, currency: str = "USD", country: str = "US") -> Customer:
    n = next(_seq)
    return Customer.objects.create(
        ref=f"cus_t{n}",
        email=f"customer{n}@example.test",
        name=f"Customer {n}",
        country=country,
        currency=currency,
        created_at=timezone.now() - dt.timedelta(days=400),
    )


def invoice(
    *,
    owner: Customer,
    interval: str = Interval.MONTHLY,
    code: str = PlanCode.GROWTH,
    issued_at: dt.datetime,
    total: Decimal | None = None,
) -> Invoice:
    chosen = plan(code, interval)
    n = next(_seq)
    start = issued_at.date()
    subscription = Subscription.objects.create(
        ref=f"sub_t{n}",
        customer=owner,
        plan=chosen,
        currency=owner.currency,
        started_at=issued_at,
        current_period_start=issued_at,
        current_period_end=issued_at + dt.timedelta(days=365 if interval == "annual" else 30),
    )
    amount = total if total is not None else chosen.price
    return Invoice.objects.create(
        number=f"INV-T{n}",
        customer=owner,
        subscription=subscription,
        currency=owner.currency,
        subtotal=amount,
        total=amount,
        status=InvoiceStatus.PAID,
        issued_at=issued_at,
        period_start=start,
        period_end=add_months(start, 12 if interval == "annual" else 1),
    )


def charge(
    *,
    charged_at: dt.datetime,
    interval: str = Interval.MONTHLY,
    code: str = PlanCode.GROWTH,
    amount: Decimal | None = None,
    owner: Customer | None = None,
    on_invoice: Invoice | None = None,
    status: str = ChargeStatus.SUCCEEDED,
    refunded: Decimal = Decimal("0"),
    disputed_at: dt.datetime | None = None,
) -> Charge:
    owner = owner or (on_invoice.customer if on_invoice else customer())
    inv = on_invoice or invoice(
        owner=owner, interval=interval, code=code, issued_at=charged_at, total=amount
    )
    return Charge.objects.create(
        ref=f"ch_t{next(_seq)}",
        customer=owner,
        invoice=inv,
        amount=amount if amount is not None else inv.total,
        currency=owner.currency,
        status=status,
        charged_at=charged_at,
        payment_method=PaymentMethod.VISA,
        refunded_amount=refunded,
        disputed_at=disputed_at,
    )
