"""Billing reads, always scoped by their owner (a customer), never by a bare id from outside."""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import QuerySet

from billing.models import (
    Charge,
    Customer,
    Invoice,
    RefundRequest,
    RefundRequestState,
    Subscription,
    SubscriptionStatus,
)


def billing_version_key(customer_id: int) -> str:
    return f"billing:version:{customer_id}"


def billing_version(*, customer: Customer) -> int:
    """A counter every billing write of `customer`'s bumps (after commit): callers that cache
    reads of the customer's invoices or charges key them by it, so a write is seen at once."""
    return int(cache.get(billing_version_key(customer.pk)) or 0)


def customer_get_by_email(*, email: str) -> Customer | None:
    return Customer.objects.filter(email__iexact=email.strip()).first()


def customer_get_by_ref(*, ref: str) -> Customer | None:
    return Customer.objects.filter(ref=ref).first()


def charge_get_for_customer(*, customer: Customer, ref: str) -> Charge | None:
    """The customer's charge with this reference, or None (also when it is someone else's)."""
    return (
        Charge.objects.select_related("invoice__subscription__plan", "customer")
        .filter(customer=customer, ref=ref.strip())
        .first()
    )


def charges_for_customer(*, customer: Customer) -> QuerySet[Charge]:
    """Newest first."""
    return (
        Charge.objects.select_related("invoice__subscription__plan")
        .filter(customer=customer)
        .order_by("-charged_at", "-id")
    )


def invoices_for_customer(*, customer: Customer) -> QuerySet[Invoice]:
    """Newest first."""
    return (
        Invoice.objects.select_related("subscription__plan")
        .filter(customer=customer)
        .order_by("-issued_at", "-id")
    )


def invoice_get_for_customer(*, customer: Customer, number: str) -> Invoice | None:
    return invoices_for_customer(customer=customer).filter(number=number.strip()).first()


def subscription_current_for_customer(*, customer: Customer) -> Subscription | None:
    """The customer's latest subscription that is not canceled (or the latest one at all)."""
    subscriptions = Subscription.objects.select_related("plan").filter(customer=customer)
    current = subscriptions.exclude(status=SubscriptionStatus.CANCELED).order_by("-started_at")
    return current.first() or subscriptions.order_by("-started_at").first()


def refund_requests_for_customer(*, customer: Customer) -> QuerySet[RefundRequest]:
    return (
        RefundRequest.objects.select_related("charge", "decided_by")
        .filter(customer=customer)
        .order_by("-created_at", "-id")
    )


def refund_request_get_for_customer(
    *, customer: Customer, refund_request_id: int
) -> RefundRequest | None:
    return refund_requests_for_customer(customer=customer).filter(pk=refund_request_id).first()


def refund_requests_awaiting_decision() -> QuerySet[RefundRequest]:
    """Staff queue: proposed requests, oldest first (staff decide within 1 business day)."""
    return (
        RefundRequest.objects.select_related("customer", "charge__invoice")
        .filter(state=RefundRequestState.PROPOSED)
        .order_by("created_at", "id")
    )


def refund_requests_for_staff(*, state: str | None = None) -> QuerySet[RefundRequest]:
    """Every customer's requests (staff read them all), newest first; `state` filters."""
    requests = RefundRequest.objects.select_related("customer", "charge__invoice", "decided_by")
    if state is not None:
        requests = requests.filter(state=state)
    return requests.order_by("-created_at", "-id")


def refund_request_get_for_staff(*, refund_request_id: int) -> RefundRequest | None:
    return refund_requests_for_staff().filter(pk=refund_request_id).first()
