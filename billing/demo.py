"""Ledgerly's demo world (SCENARIOS.md): the ten scenario customers and a background crowd.

`seed_demo(today=...)` builds it relative to `today` (T). It is deterministic for a given T and
safe to run again: every row is found by a stable reference and refreshed in place. A re-run
refreshes dates relative to the new T but never rewrites money that moved since (refunded and
in-flight amounts are set only when a charge is first created).

The references below are stable so tests, the golden set and the agent's evaluation can name
them. For each scenario customer, `SCENARIO_CHARGES[email]` is the charge a "can I get a refund?"
question is about.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Permission
from django.db import models, transaction

from billing.models import (
    Charge,
    ChargeStatus,
    Customer,
    IdempotencyKey,
    Interval,
    Invoice,
    InvoiceStatus,
    PaymentMethod,
    Plan,
    PlanCode,
    Refund,
    RefundRequest,
    RefundStatus,
    Subscription,
    SubscriptionStatus,
)
from billing.policy import add_months

# --- plans (POLICY.md "Plans and prices") ---------------------------------------------------------
PLANS: dict[tuple[str, str], tuple[Decimal, int, int | None]] = {
    (PlanCode.STARTER, Interval.MONTHLY): (Decimal("19.00"), 1, 50),
    (PlanCode.STARTER, Interval.ANNUAL): (Decimal("190.00"), 1, 50),
    (PlanCode.GROWTH, Interval.MONTHLY): (Decimal("49.00"), 5, 500),
    (PlanCode.GROWTH, Interval.ANNUAL): (Decimal("490.00"), 5, 500),
    (PlanCode.SCALE, Interval.MONTHLY): (Decimal("199.00"), 25, None),
    (PlanCode.SCALE, Interval.ANNUAL): (Decimal("1990.00"), 25, None),
}

# --- the ten scenario customers (SCENARIOS.md) ----------------------------------------------------
ANA = "ana.lopez@example.com"
BEN = "ben.okafor@example.com"
CHLOE = "chloe.martin@example.com"
DEV = "dev.patel@example.com"
EMMA = "emma.schulz@example.com"
FARID = "farid.haddad@example.com"
GRACE = "grace.kim@example.com"
HUGO = "hugo.rossi@example.com"
ISLA = "isla.novak@example.com"
JONAS = "jonas.berg@example.com"
SCENARIO_EMAILS = (ANA, BEN, CHLOE, DEV, EMMA, FARID, GRACE, HUGO, ISLA, JONAS)

ANA_INVOICE, ANA_CHARGE, ANA_DUPLICATE_CHARGE = "INV-DEMO-ANA-01", "ch_demo_ana_1", "ch_demo_ana_2"
BEN_INVOICE, BEN_CHARGE, BEN_DUPLICATE_CHARGE = "INV-DEMO-BEN-01", "ch_demo_ben_1", "ch_demo_ben_2"
CHLOE_INVOICE, CHLOE_CHARGE = "INV-DEMO-CHLOE-01", "ch_demo_chloe_1"
DEV_INVOICE, DEV_CHARGE = "INV-DEMO-DEV-01", "ch_demo_dev_1"
EMMA_INVOICE, EMMA_CHARGE = "INV-DEMO-EMMA-01", "ch_demo_emma_1"
FARID_INVOICE, FARID_CHARGE = "INV-DEMO-FARID-01", "ch_demo_farid_1"
GRACE_INVOICE, GRACE_CHARGE = "INV-DEMO-GRACE-01", "ch_demo_grace_1"
HUGO_INVOICE, HUGO_CHARGE = "INV-DEMO-HUGO-01", "ch_demo_hugo_1"
ISLA_INVOICE, ISLA_CHARGE, ISLA_EARLIER_REFUND = (
    "INV-DEMO-ISLA-01",
    "ch_demo_isla_1",
    "re_demo_isla_1",
)
JONAS_INVOICE, JONAS_CHARGE = "INV-DEMO-JONAS-01", "ch_demo_jonas_1"

SCENARIO_CHARGES = {
    ANA: ANA_DUPLICATE_CHARGE,
    BEN: BEN_DUPLICATE_CHARGE,
    CHLOE: CHLOE_CHARGE,
    DEV: DEV_CHARGE,
    EMMA: EMMA_CHARGE,
    FARID: FARID_CHARGE,
    GRACE: GRACE_CHARGE,
    HUGO: HUGO_CHARGE,
    ISLA: ISLA_CHARGE,
    JONAS: JONAS_CHARGE,
}

STAFF_USERNAME = "staff"
STAFF_PASSWORD = "ledgerly-demo"  # noqa: S105 — a documented demo login, never created in production
BACKGROUND_CUSTOMERS = 44

VAT_RATES = {"DE": "0.19", "FR": "0.20", "NL": "0.21", "ES": "0.21", "IT": "0.22", "IE": "0.23"}
CENT = Decimal("0.01")


@dataclass
class _Charge:
    ref: str
    days_ago: int | None = None  # or `at` directly
    at: dt.datetime | None = None
    minute: int = 0
    status: str = ChargeStatus.SUCCEEDED
    method: str = PaymentMethod.VISA
    last4: str = "4242"
    disputed_days_ago: int | None = None
    failure: tuple[str, str] | None = None
    retries_attempted: int = 0
    next_retry_day: int | None = None  # days after the failure


@dataclass
class _Scenario:
    email: str
    name: str
    country: str
    currency: str
    plan: tuple[str, str]
    invoice: str
    charged_on: dt.date
    charges: list[_Charge]
    vat_id: str = ""
    tax_rate: Decimal = Decimal("0")
    invoice_status: str = InvoiceStatus.PAID
    subscription_status: str = SubscriptionStatus.ACTIVE
    earlier_refund: tuple[str, Decimal] | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class SeedResult:
    customers: int
    invoices: int
    charges: int
    refunds: int
    users: int


def _at(day: dt.date, hour: int = 9, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


def _scenarios(today: dt.date) -> list[_Scenario]:
    def ago(days: int) -> dt.date:
        return today - dt.timedelta(days=days)

    growth_m = (PlanCode.GROWTH, Interval.MONTHLY)
    starter_m = (PlanCode.STARTER, Interval.MONTHLY)
    return [
        _Scenario(
            ANA, "Ana López", "US", "USD", growth_m, ANA_INVOICE, ago(3),
            [_Charge(ANA_CHARGE, 3), _Charge(ANA_DUPLICATE_CHARGE, 3, minute=2)],
        ),
        _Scenario(
            BEN, "Ben Okafor", "US", "USD", starter_m, BEN_INVOICE, ago(2),
            [
                _Charge(BEN_CHARGE, 2, method=PaymentMethod.MASTERCARD, last4="5454"),
                _Charge(BEN_DUPLICATE_CHARGE, 2, minute=1, method=PaymentMethod.MASTERCARD,
                        last4="5454"),
            ],
        ),
        _Scenario(
            CHLOE, "Chloé Martin", "FR", "EUR", (PlanCode.SCALE, Interval.ANNUAL), CHLOE_INVOICE,
            ago(20), [_Charge(CHLOE_CHARGE, 20, method=PaymentMethod.AMEX, last4="0005")],
            vat_id="FR40303265045",
        ),
        _Scenario(
            DEV, "Dev Patel", "US", "USD", (PlanCode.GROWTH, Interval.ANNUAL), DEV_INVOICE,
            ago(100), [_Charge(DEV_CHARGE, 100)],
        ),
        _Scenario(
            EMMA, "Emma Schulz", "NL", "EUR", starter_m, EMMA_INVOICE, ago(20),
            [_Charge(EMMA_CHARGE, 20, method=PaymentMethod.SEPA_DEBIT, last4="3000")],
            vat_id="NL004495445B01",
        ),
        _Scenario(
            FARID, "Farid Haddad", "GB", "GBP", growth_m, FARID_INVOICE, ago(6),
            [_Charge(FARID_CHARGE, 6, method=PaymentMethod.VISA, last4="1881",
                     disputed_days_ago=1)],
        ),
        _Scenario(
            GRACE, "Grace Kim", "US", "USD", (PlanCode.SCALE, Interval.MONTHLY), GRACE_INVOICE,
            ago(5),
            [_Charge(GRACE_CHARGE, 5, status=ChargeStatus.FAILED, last4="0341",
                     failure=("card_declined", "The card was declined (insufficient funds)."),
                     retries_attempted=2, next_retry_day=7)],
            invoice_status=InvoiceStatus.OPEN, subscription_status=SubscriptionStatus.PAST_DUE,
        ),
        _Scenario(
            HUGO, "Hugo Rossi", "IT", "EUR", (PlanCode.GROWTH, Interval.ANNUAL), HUGO_INVOICE,
            add_months(today, -7),
            [_Charge(HUGO_CHARGE, at=_at(add_months(today, -7)),
                     method=PaymentMethod.SEPA_DEBIT, last4="6789")],
            vat_id="IT00743110157",
        ),
        _Scenario(
            ISLA, "Isla Novák", "US", "USD", starter_m, ISLA_INVOICE, ago(5),
            [_Charge(ISLA_CHARGE, 5, method=PaymentMethod.MASTERCARD, last4="4444")],
            earlier_refund=(ISLA_EARLIER_REFUND, Decimal("10.00")),
        ),
        _Scenario(
            JONAS, "Jonas Berg", "DE", "EUR", growth_m, JONAS_INVOICE, ago(10),
            [_Charge(JONAS_CHARGE, 10, method=PaymentMethod.SEPA_DEBIT, last4="1234")],
            tax_rate=Decimal("0.19"),
        ),
    ]  # fmt: skip


def _ensure_plans() -> dict[tuple[str, str], Plan]:
    plans = {}
    for (code, interval), (price, seats, limit) in PLANS.items():
        plan, _ = Plan.objects.update_or_create(
            code=code,
            interval=interval,
            defaults={"price": price, "seats": seats, "invoice_limit": limit},
        )
        plans[(code, interval)] = plan
    return plans


def _period_end(start: dt.date, interval: str) -> dt.date:
    return add_months(start, 12 if interval == Interval.ANNUAL else 1)


def _upsert_customer(
    *, ref: str, email: str, name: str, country: str, currency: str, vat_id: str, created: dt.date
) -> Customer:
    customer, _ = Customer.objects.update_or_create(
        ref=ref,
        defaults={
            "email": email,
            "name": name,
            "country": country,
            "currency": currency,
            "vat_id": vat_id,
            "created_at": _at(created, 8),
        },
    )
    return customer


def _upsert_subscription(
    *,
    ref: str,
    customer: Customer,
    plan: Plan,
    started: dt.date,
    period_start: dt.date,
    status: str,
    canceled_on: dt.date | None = None,
) -> Subscription:
    subscription, _ = Subscription.objects.update_or_create(
        ref=ref,
        defaults={
            "customer": customer,
            "plan": plan,
            "currency": customer.currency,
            "status": status,
            "started_at": _at(started, 8),
            "current_period_start": _at(period_start),
            "current_period_end": _at(_period_end(period_start, plan.interval)),
            "cancel_at_period_end": False,
            "canceled_at": _at(canceled_on) if canceled_on else None,
        },
    )
    return subscription


def _upsert_invoice(
    *,
    number: str,
    subscription: Subscription,
    issued: dt.date,
    tax_rate: Decimal,
    status: str,
) -> Invoice:
    subtotal = subscription.plan.price
    tax = (subtotal * tax_rate).quantize(CENT, rounding=ROUND_HALF_UP)
    invoice, _ = Invoice.objects.update_or_create(
        number=number,
        defaults={
            "customer": subscription.customer,
            "subscription": subscription,
            "currency": subscription.currency,
            "subtotal": subtotal,
            "tax_rate": tax_rate,
            "tax": tax,
            "total": subtotal + tax,
            "status": status,
            "issued_at": _at(issued, 8),
            "period_start": issued,
            "period_end": _period_end(issued, subscription.plan.interval),
        },
    )
    return invoice


def _upsert_charge(*, invoice: Invoice, spec: _Charge, at: dt.datetime) -> Charge:
    failure_code, failure_message = spec.failure or ("", "")
    charge, _ = Charge.objects.update_or_create(
        ref=spec.ref,
        defaults={
            "customer": invoice.customer,
            "invoice": invoice,
            "amount": invoice.total,
            "currency": invoice.currency,
            "status": spec.status,
            "charged_at": at,
            "payment_method": spec.method,
            "payment_method_last4": spec.last4,
            "failure_code": failure_code,
            "failure_message": failure_message,
            "retries_attempted": spec.retries_attempted,
            "next_retry_at": (
                _at(at.date() + dt.timedelta(days=spec.next_retry_day))
                if spec.next_retry_day is not None
                else None
            ),
            "disputed_at": (
                at + dt.timedelta(days=spec.days_ago - spec.disputed_days_ago)
                if spec.disputed_days_ago is not None and spec.days_ago is not None
                else None
            ),
        },
    )
    return charge


def _seed_scenarios(today: dt.date, plans: dict[tuple[str, str], Plan]) -> None:
    for scenario in _scenarios(today):
        slug = scenario.email.split(".")[0]
        customer = _upsert_customer(
            ref=f"cus_demo_{slug}",
            email=scenario.email,
            name=scenario.name,
            country=scenario.country,
            currency=scenario.currency,
            vat_id=scenario.vat_id,
            created=add_months(today, -14),
        )
        subscription = _upsert_subscription(
            ref=f"sub_demo_{slug}",
            customer=customer,
            plan=plans[scenario.plan],
            started=scenario.charged_on,
            period_start=scenario.charged_on,
            status=scenario.subscription_status,
        )
        invoice = _upsert_invoice(
            number=scenario.invoice,
            subscription=subscription,
            issued=scenario.charged_on,
            tax_rate=scenario.tax_rate,
            status=scenario.invoice_status,
        )
        for spec in scenario.charges:
            at = spec.at or _at(today - dt.timedelta(days=spec.days_ago or 0), 9, spec.minute)
            _upsert_charge(invoice=invoice, spec=spec, at=at)
        if scenario.earlier_refund:
            ref, amount = scenario.earlier_refund
            _seed_history_refund(ref=ref, charge_ref=scenario.charges[0].ref, amount=amount)


def _seed_history_refund(*, ref: str, charge_ref: str, amount: Decimal) -> None:
    """A refund made before this demo began (the ledger's history, not a new refund)."""
    charge = Charge.objects.select_for_update().get(ref=charge_ref)
    refund, created = Refund.objects.get_or_create(
        ref=ref,
        defaults={
            "charge": charge,
            "amount": amount,
            "currency": charge.currency,
            "status": RefundStatus.SUCCEEDED,
            "processor_ref": f"re_hist_{ref}",
            "reason": "partial goodwill refund agreed with support",
            "created_at": charge.charged_at + dt.timedelta(days=1),
            "completed_at": charge.charged_at + dt.timedelta(days=1),
        },
    )
    if created:
        Charge.objects.filter(pk=charge.pk).update(refunded_amount=amount)
    else:
        Refund.objects.filter(pk=refund.pk).update(
            created_at=charge.charged_at + dt.timedelta(days=1),
            completed_at=charge.charged_at + dt.timedelta(days=1),
        )


_FIRST = "Amara Bruno Carla Dmitri Elif Felix Greta Hana Ivan Julia Kofi Lena Marco Nadia Omar "
_FIRST += "Priya Quinn Rosa Sven Tariq Uma Viktor Wanjiru Xavier Yara Zoe"
_LAST = "Andersen Becker Costa Dubois Eriksen Fischer Garcia Horvat Ito Jensen Kowalski Larsen "
_LAST += "Moreau Nilsen Oliveira Petrov Quispe Rossi Silva Tanaka Ueda Varga Weber Young Zimmer"
_PLACES = [
    ("US", "USD"), ("US", "USD"), ("CA", "USD"), ("GB", "GBP"), ("GB", "GBP"), ("DE", "EUR"),
    ("FR", "EUR"), ("NL", "EUR"), ("ES", "EUR"), ("IT", "EUR"), ("IE", "EUR"), ("AU", "USD"),
]  # fmt: skip


def _bulk_upsert(model: type[models.Model], rows: list[Any], *, keep: tuple[str, ...] = ()) -> None:
    """Insert rows or refresh them in place, found by their unique `ref`/`number`. Fields in
    `keep` are written only on insert (money that may have moved since)."""
    unique = "number" if model is Invoice else "ref"
    fields = [
        f.name
        for f in model._meta.concrete_fields
        if not f.primary_key and f.name != unique and f.name not in keep
    ]
    model._default_manager.bulk_create(
        rows, update_conflicts=True, unique_fields=[unique], update_fields=fields
    )


def _ids(model: type[models.Model], field_name: str, values: list[str]) -> dict[str, int]:
    pairs = model._default_manager.filter(**{f"{field_name}__in": values}).values_list(
        field_name, "pk"
    )
    return dict(pairs)


def _seed_background(today: dt.date, plans: dict[tuple[str, str], Plan]) -> None:
    # A fixed seed: the same crowd for every T, only its dates move with T.
    rng = random.Random(20260101)  # noqa: S311 — demo data, not security
    firsts, lasts = _FIRST.split(), _LAST.split()
    plan_keys = list(PLANS)
    customers: list[Customer] = []
    subscriptions: list[tuple[str, Subscription]] = []
    invoices: list[tuple[str, Invoice]] = []
    charges: list[tuple[str, Charge]] = []
    for index in range(1, BACKGROUND_CUSTOMERS + 1):
        first, last = rng.choice(firsts), rng.choice(lasts)
        country, currency = rng.choice(_PLACES)
        has_vat_id = country in VAT_RATES and rng.random() < 0.4
        vat_id = f"{country}{rng.randint(100000000, 999999999)}" if has_vat_id else ""
        tax_rate = (
            Decimal(VAT_RATES[country]) if country in VAT_RATES and not vat_id else Decimal(0)
        )
        code, interval = plan_keys[rng.randrange(len(plan_keys))]
        plan = plans[(code, interval)]
        canceled = rng.random() < 0.08
        anchor = today - dt.timedelta(days=rng.randint(1, 27))
        if interval == Interval.ANNUAL:
            anchor = today - dt.timedelta(days=rng.randint(1, 340))
            issue_days = [add_months(anchor, -12), anchor]
        else:
            issue_days = [add_months(anchor, -k) for k in range(11, -1, -1)]
        if canceled:
            issue_days = issue_days[: max(1, len(issue_days) - 3)]
        customer_ref = f"cus_bg_{index:03d}"
        customers.append(
            Customer(
                ref=customer_ref,
                email=f"{first.lower()}.{last.lower()}.{index:02d}@example.net",
                name=f"{first} {last}",
                country=country,
                currency=currency,
                vat_id=vat_id,
                created_at=_at(issue_days[0] - dt.timedelta(days=rng.randint(0, 20)), 8),
            )
        )
        if currency == "EUR" and rng.random() < 0.4:
            method, last4 = PaymentMethod.SEPA_DEBIT, f"{rng.randint(0, 9999):04d}"
        elif (code, interval) == (PlanCode.SCALE, Interval.ANNUAL) and rng.random() < 0.5:
            method, last4 = PaymentMethod.BANK_TRANSFER, ""
        else:
            method = rng.choice([PaymentMethod.VISA, PaymentMethod.MASTERCARD, PaymentMethod.AMEX])
            last4 = f"{rng.randint(0, 9999):04d}"
        subscription_ref = f"sub_bg_{index:03d}"
        subscriptions.append(
            (
                customer_ref,
                Subscription(
                    ref=subscription_ref,
                    plan=plan,
                    currency=currency,
                    status=SubscriptionStatus.CANCELED if canceled else SubscriptionStatus.ACTIVE,
                    started_at=_at(issue_days[0], 8),
                    current_period_start=_at(issue_days[-1]),
                    current_period_end=_at(_period_end(issue_days[-1], interval)),
                    cancel_at_period_end=False,
                    canceled_at=_at(issue_days[-1] + dt.timedelta(days=10)) if canceled else None,
                ),
            )
        )
        for number, issued in enumerate(issue_days, start=1):
            invoice_number = f"INV-BG{index:03d}-{number:02d}"
            tax = (plan.price * tax_rate).quantize(CENT, rounding=ROUND_HALF_UP)
            invoice = Invoice(
                number=invoice_number,
                currency=currency,
                subtotal=plan.price,
                tax_rate=tax_rate,
                tax=tax,
                total=plan.price + tax,
                status=InvoiceStatus.PAID,
                issued_at=_at(issued, 8),
                period_start=issued,
                period_end=_period_end(issued, interval),
            )
            invoices.append((subscription_ref, invoice))
            charge_at = _at(issued, rng.randint(6, 20), rng.randint(0, 59))
            common = {
                "amount": invoice.total,
                "currency": currency,
                "payment_method": method,
                "payment_method_last4": last4,
            }
            if rng.random() < 0.05:
                # An ordinary hiccup: the first attempt failed, the day-1 retry succeeded.
                failed = Charge(
                    ref=f"ch_bg_{index:03d}_{number:02d}_f",
                    status=ChargeStatus.FAILED,
                    charged_at=charge_at,
                    failure_code="card_declined",
                    failure_message="The card was declined.",
                    retries_attempted=1,
                    **common,
                )
                charges.append((invoice_number, failed))
                charge_at += dt.timedelta(days=1)
            charges.append(
                (
                    invoice_number,
                    Charge(
                        ref=f"ch_bg_{index:03d}_{number:02d}",
                        status=ChargeStatus.SUCCEEDED,
                        charged_at=charge_at,
                        **common,
                    ),
                )
            )

    _bulk_upsert(Customer, customers)
    customer_ids = _ids(Customer, "ref", [c.ref for c in customers])
    for customer_ref, subscription in subscriptions:
        subscription.customer_id = customer_ids[customer_ref]
    _bulk_upsert(Subscription, [sub for _, sub in subscriptions])
    subscription_ids = _ids(Subscription, "ref", [sub.ref for _, sub in subscriptions])
    subscription_customer = {sub.ref: sub.customer_id for _, sub in subscriptions}
    for subscription_ref, invoice in invoices:
        invoice.subscription_id = subscription_ids[subscription_ref]
        invoice.customer_id = subscription_customer[subscription_ref]
    _bulk_upsert(Invoice, [inv for _, inv in invoices])
    invoice_ids = _ids(Invoice, "number", [inv.number for _, inv in invoices])
    invoice_customer = {inv.number: inv.customer_id for _, inv in invoices}
    for invoice_number, charge in charges:
        charge.invoice_id = invoice_ids[invoice_number]
        charge.customer_id = invoice_customer[invoice_number]
    _bulk_upsert(
        Charge, [ch for _, ch in charges], keep=("refunded_amount", "refund_pending_amount")
    )


def seed_users() -> int:
    """Auth users for every customer (no usable password) and, outside production, the demo
    staff login."""
    User = get_user_model()
    customers = list(Customer.objects.values_list("email", "name"))
    User.objects.bulk_create(
        [
            User(
                username=email,
                email=email,
                first_name=name.split()[0],
                password=make_password(None),  # unusable: they sign in through the demo only
            )
            for email, name in customers
        ],
        ignore_conflicts=True,
    )
    # Link each customer to its login once, by key (the username is the email at seeding).
    users = dict(
        User.objects.filter(username__in=[e for e, _ in customers]).values_list("username", "pk")
    )
    unlinked = list(Customer.objects.filter(user__isnull=True, email__in=list(users)))
    for customer in unlinked:
        customer.user_id = users[customer.email]
    Customer.objects.bulk_update(unlinked, ["user"])
    count = len(customers)
    if not settings.PRODUCTION:
        staff, created = User.objects.get_or_create(
            username=STAFF_USERNAME, defaults={"email": "staff@ledgerly.example"}
        )
        staff.is_staff = True
        staff.is_active = True
        if created or not staff.has_usable_password():
            # Hashing is deliberately slow; a re-run keeps whatever password is set.
            staff.set_password(STAFF_PASSWORD)
        staff.save()
        view_billing = Permission.objects.filter(
            content_type__app_label="billing", codename__startswith="view_"
        )
        decide = Permission.objects.filter(
            content_type__app_label="billing",
            codename__in=["decide_refundrequest", "change_refundrequest"],
        )
        staff.user_permissions.add(*view_billing, *decide)
        count += 1
    return count


def seed_demo(*, today: dt.date) -> SeedResult:
    """Build or refresh the demo world for day `today` (see the module docstring)."""
    with transaction.atomic():
        plans = _ensure_plans()
        _seed_scenarios(today, plans)
        _seed_background(today, plans)
        users = seed_users()
    return SeedResult(
        customers=Customer.objects.count(),
        invoices=Invoice.objects.count(),
        charges=Charge.objects.count(),
        refunds=Refund.objects.count(),
        users=users,
    )


def demo_customer_reset(*, email: str) -> None:
    """Undo everything Ledgerly did for one customer since seeding, keeping the seeded history,
    so an evaluation case starts from the demo world as built (SCENARIOS.md).

    Removes the customer's refund requests, the refunds they caused and their idempotency keys
    (and the processor simulator's record of those refunds), restores each charge's refunded
    and pending amounts from the refunds that remain (seeded history such as Isla's $10), and
    makes reissued invoices reissuable again. Rows of other apps that point at the customer's
    refund requests (support tickets) must be deleted first by the caller: billing imports no
    other app. Raises Customer.DoesNotExist for an unknown email.
    """
    customer = Customer.objects.get(email=email)
    with transaction.atomic():
        charges = list(Charge.objects.select_for_update().filter(customer=customer).order_by("pk"))
        requests = RefundRequest.objects.filter(customer=customer)
        # Every refund Ledgerly makes belongs to a request; seeded history has none.
        refunds = Refund.objects.filter(refund_request__customer=customer)
        keys = set(requests.values_list("idempotency_key", flat=True))
        keys |= {k for k in refunds.values_list("idempotency_key", flat=True) if k}
        key_rows = IdempotencyKey.objects.filter(
            models.Q(key__in=keys) | models.Q(refund__in=refunds)
        )
        keys |= set(key_rows.values_list("key", flat=True))
        key_rows.delete()
        refunds.delete()
        requests.delete()
        for charge in charges:
            left = Refund.objects.filter(charge=charge)
            refunded = _sum(left.filter(status=RefundStatus.SUCCEEDED))
            pending = _sum(left.filter(status=RefundStatus.PENDING))
            Charge.objects.filter(pk=charge.pk).update(
                refunded_amount=refunded, refund_pending_amount=pending
            )
        Invoice.objects.filter(customer=customer, reissued=True).update(
            reissued=False, reissued_at=None
        )
    if keys and settings.PAYMENT_PROCESSOR == "simulator":
        _simulator_forget(keys=keys, charge_refs=[c.ref for c in charges])


def _sum(refunds: models.QuerySet[Refund]) -> Decimal:
    total = refunds.aggregate(total=models.Sum("amount"))["total"]
    return Decimal(total or 0)


def _simulator_forget(*, keys: set[str], charge_refs: list[str]) -> None:
    """Drop the simulator's ledger entries and key records of refunds made with `keys`. Only
    those: its Redis may be shared with other processes whose refunds must stay on record."""
    import json

    from billing.processor.simulator import SimulatedProcessor

    # The simulator keeps its ledger under one namespace (its key layout is fixed there).
    simulator = SimulatedProcessor()
    client, key_of = simulator._redis, simulator._key
    for name in [key_of("refunds"), *(key_of("charge", ref) for ref in charge_refs)]:
        entries: list[bytes] = client.lrange(name, 0, -1)  # type: ignore[assignment]
        for raw in entries:
            if json.loads(raw).get("idempotency_key") in keys:
                client.lrem(name, 1, raw)  # type: ignore[arg-type]  # redis-py takes bytes
    client.delete(*(key_of("idem", key) for key in keys))
