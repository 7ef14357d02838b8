"""Billing data: customers, plans, subscriptions, invoices, charges, refunds and the records that
make refunds safe (refund requests awaiting a decision, idempotency keys with recovery points).

Models hold data and invariants. Every money amount is a Decimal(12, 2) next to a currency;
database constraints make the bad states impossible (non-positive amounts, refunding more than
was charged, two refunds for one idempotency key). Workflows live in `billing.services`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q


def money(**kwargs: Any) -> models.DecimalField:  # type: ignore[type-arg]
    """A money amount: Decimal(12, 2); its currency lives in a sibling field."""
    return models.DecimalField(max_digits=12, decimal_places=2, **kwargs)


class Currency(models.TextChoices):
    USD = "USD", "US dollar"
    EUR = "EUR", "Euro"
    GBP = "GBP", "Pound sterling"


class Customer(models.Model):
    ref = models.CharField(max_length=40, unique=True, help_text="Stable reference, cus_…")
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2")
    currency = models.CharField(max_length=3, choices=Currency.choices)
    vat_id = models.CharField(max_length=32, blank=True)
    # The sign-in that speaks for this customer. Linked once, by a real key: a staff edit of
    # the user's email in the admin never moves a customer to another login.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="customer",
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["email"]
        constraints = [
            models.CheckConstraint(
                condition=Q(country__regex=r"^[A-Z]{2}$"), name="customer_country_iso2"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class PlanCode(models.TextChoices):
    STARTER = "starter", "Starter"
    GROWTH = "growth", "Growth"
    SCALE = "scale", "Scale"


class Interval(models.TextChoices):
    MONTHLY = "monthly", "Monthly"
    ANNUAL = "annual", "Annual"


class Plan(models.Model):
    """A plan at one billing interval. The price is the same number in every currency."""

    code = models.CharField(max_length=16, choices=PlanCode.choices)
    interval = models.CharField(max_length=8, choices=Interval.choices)
    price = money()
    seats = models.PositiveIntegerField()
    invoice_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Invoices per month; empty means unlimited"
    )

    class Meta:
        ordering = ["interval", "price"]
        constraints = [
            models.UniqueConstraint(fields=["code", "interval"], name="plan_code_interval_unique"),
            models.CheckConstraint(condition=Q(price__gt=0), name="plan_price_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.get_code_display()} {self.interval}"


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    READ_ONLY = "read_only", "Read-only (unpaid)"
    CANCELED = "canceled", "Canceled"


class Subscription(models.Model):
    ref = models.CharField(max_length=40, unique=True, help_text="Stable reference, sub_…")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    # A subscription keeps the currency it started in, whatever the customer's later currency.
    currency = models.CharField(max_length=3, choices=Currency.choices)
    status = models.CharField(
        max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    started_at = models.DateTimeField()
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(current_period_end__gt=F("current_period_start")),
                name="subscription_period_forward",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer.email}: {self.plan} ({self.status})"


class InvoiceStatus(models.TextChoices):
    OPEN = "open", "Open (unpaid)"
    PAID = "paid", "Paid"
    VOID = "void", "Void"


class Invoice(models.Model):
    number = models.CharField(max_length=40, unique=True, help_text="Stable number, INV-…")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="invoices", null=True, blank=True
    )
    currency = models.CharField(max_length=3, choices=Currency.choices)
    subtotal = money()
    tax_rate = models.DecimalField(
        max_digits=5, decimal_places=4, default=0, help_text="A fraction: 0.1900 is 19%"
    )
    tax = money(default=0)
    total = money()
    status = models.CharField(max_length=8, choices=InvoiceStatus.choices)
    issued_at = models.DateTimeField()
    period_start = models.DateField()
    period_end = models.DateField()
    # POLICY.md: an invoice from the last 90 days can be reissued once with new details.
    reissued = models.BooleanField(default=False)
    reissued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]
        constraints = [
            models.CheckConstraint(condition=Q(subtotal__gt=0), name="invoice_subtotal_positive"),
            models.CheckConstraint(condition=Q(tax__gte=0), name="invoice_tax_not_negative"),
            models.CheckConstraint(
                condition=Q(tax_rate__gte=0, tax_rate__lt=1), name="invoice_tax_rate_fraction"
            ),
            models.CheckConstraint(
                condition=Q(total=F("subtotal") + F("tax")), name="invoice_total_is_sum"
            ),
            models.CheckConstraint(
                condition=Q(reissued=False) | Q(reissued_at__isnull=False),
                name="invoice_reissued_has_time",
            ),
        ]

    def __str__(self) -> str:
        return self.number


class ChargeStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class PaymentMethod(models.TextChoices):
    VISA = "visa", "Visa"
    MASTERCARD = "mastercard", "Mastercard"
    AMEX = "amex", "American Express"
    SEPA_DEBIT = "sepa_debit", "SEPA Direct Debit"
    BANK_TRANSFER = "bank_transfer", "Bank transfer"


class Charge(models.Model):
    """One payment attempt for an invoice.

    `refunded_amount` is what has been refunded and confirmed by the processor;
    `refund_pending_amount` is reserved by refunds in flight. Their sum never exceeds `amount`
    (a database constraint), which is what keeps concurrent refunds from over-refunding.
    """

    ref = models.CharField(max_length=40, unique=True, help_text="Stable reference, ch_…")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="charges")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="charges")
    amount = money()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    status = models.CharField(max_length=16, choices=ChargeStatus.choices)
    charged_at = models.DateTimeField(db_index=True)
    payment_method = models.CharField(max_length=16, choices=PaymentMethod.choices)
    payment_method_last4 = models.CharField(max_length=4, blank=True)
    failure_code = models.CharField(max_length=40, blank=True)
    failure_message = models.CharField(max_length=200, blank=True)
    retries_attempted = models.PositiveSmallIntegerField(default=0)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    disputed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the customer opened a chargeback"
    )
    refunded_amount = money(default=0)
    refund_pending_amount = money(default=0)

    class Meta:
        ordering = ["-charged_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="charge_amount_positive"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0, refund_pending_amount__gte=0),
                name="charge_refunds_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(refunded_amount__lte=F("amount") - F("refund_pending_amount")),
                name="charge_refunds_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(status="succeeded") | Q(refunded_amount=0, refund_pending_amount=0),
                name="charge_failed_never_refunded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ref} {self.amount} {self.currency} ({self.status})"


class RefundStatus(models.TextChoices):
    PENDING = "pending", "Pending (sent to processor)"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class RefundRequestState(models.TextChoices):
    PROPOSED = "proposed", "Proposed (awaiting staff)"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    EXECUTED = "executed", "Executed"
    FAILED = "failed", "Failed (see failure reason)"
    WITHDRAWN = "withdrawn", "Withdrawn by the customer before a decision"


class RefundRequest(models.Model):
    """A proposed refund and its decision. The evidence is frozen when the request is created."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="refund_requests")
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="refund_requests")
    amount = money()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    clause = models.CharField(max_length=40, help_text="The policy clause that applies")
    reason = models.TextField()
    evidence = models.JSONField(default=dict, help_text="The facts at creation, frozen")
    state = models.CharField(
        max_length=16, choices=RefundRequestState.choices, default=RefundRequestState.PROPOSED
    )
    requires_approval = models.BooleanField(default=True)
    auto_approved = models.BooleanField(default=False)
    proposed_by = models.CharField(max_length=100, help_text="agent:<run>, customer, staff:<user>")
    source = models.CharField(max_length=100, blank=True, help_text="e.g. ticket:<id>")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decided_refund_requests",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    expires_at = models.DateTimeField()
    executed_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(
        blank=True, help_text="Why an approved request moved no money (a decline, a dispute, ...)"
    )
    idempotency_key = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("decide_refundrequest", "Can approve or reject refund requests")]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="refund_request_amount_positive"
            ),
            models.CheckConstraint(
                condition=~Q(state__in=["approved", "rejected", "executed", "failed"])
                | Q(decided_at__isnull=False),
                name="refund_request_decided_has_time",
            ),
        ]
        indexes = [models.Index(fields=["state", "expires_at"])]

    def __str__(self) -> str:
        return f"Refund request #{self.pk} {self.amount} {self.currency} ({self.state})"


class Refund(models.Model):
    """Money sent back for a charge. Created (pending) only by `billing.services.issue_refund`;
    seeded history may also hold refunds made before Ledgerly existed."""

    ref = models.CharField(max_length=40, unique=True, help_text="Stable reference, re_…")
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="refunds")
    refund_request = models.OneToOneField(
        RefundRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="refund"
    )
    amount = money()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    status = models.CharField(max_length=16, choices=RefundStatus.choices)
    idempotency_key = models.CharField(max_length=255, unique=True, null=True, blank=True)
    processor_ref = models.CharField(max_length=64, blank=True)
    failure_code = models.CharField(max_length=40, blank=True)
    failure_message = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.ref} {self.amount} {self.currency} ({self.status})"


class RecoveryPoint(models.TextChoices):
    # Brandur Leach's "atomic phases": each names the last phase committed for the key.
    STARTED = "started", "Started"
    REFUND_RESERVED = "refund_reserved", "Refund reserved (processor call next)"
    FINISHED = "finished", "Finished"


class IdempotencyKey(models.Model):
    """One money operation per key, as Stripe defines it (see `billing.services.issue_refund`)."""

    key = models.CharField(max_length=255, unique=True)
    operation = models.CharField(max_length=40, default="refund")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request parameters")
    request_params = models.JSONField(default=dict)
    recovery_point = models.CharField(
        max_length=20, choices=RecoveryPoint.choices, default=RecoveryPoint.STARTED
    )
    locked_at = models.DateTimeField(
        null=True, blank=True, help_text="Set while an attempt is running; stale means crashed"
    )
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.CharField(max_length=40, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    refund = models.ForeignKey(
        Refund, on_delete=models.SET_NULL, null=True, blank=True, related_name="idempotency_keys"
    )
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["recovery_point", "updated_at"])]

    def __str__(self) -> str:
        return f"{self.key} ({self.recovery_point})"
