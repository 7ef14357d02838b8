"""Billing writes. `issue_refund` is the only door through which money leaves Ledgerly.

Refund lifecycle: `refund_request_create` (policy evaluated in code, evidence frozen, duplicate
refunds of small amounts auto-approved) → `refund_request_approve` / `refund_request_reject` by
staff (or `refund_requests_expire` when nobody decides in time) → `billing.tasks.execute_refund`
→ `issue_refund`, which moves the money at most once per idempotency key. `refunds_reconcile`
(a beat task) finishes attempts a crash left half done; `idempotency_keys_purge` forgets keys
after their retention period.

`issue_refund` follows Stripe's idempotency semantics, built as Brandur Leach's "atomic phases"
with a recovery point recorded on the `IdempotencyKey` row:

    phase A (one transaction)  take the key, check the request, lock the charge, re-check what
                               is left, reserve the amount, create the pending Refund
                               → recovery point "refund_reserved"
    phase B (no transaction)   call the processor with the same key
    phase C (one transaction)  record the result → recovery point "finished"

A crash after A leaves the key at "refund_reserved" with a lock time; once the lock is stale a
retry or the reconciler repeats B with the same key, which the processor answers from its
record, so the money moves once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import uuid4

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing.models import (
    Charge,
    ChargeStatus,
    Customer,
    IdempotencyKey,
    Invoice,
    RecoveryPoint,
    Refund,
    RefundRequest,
    RefundRequestState,
    RefundStatus,
)
from billing.policy import evaluate_refund
from billing.processor import PaymentProcessor, ProcessorError, ProcessorRefund, get_processor

logger = logging.getLogger(__name__)

# Keys are kept at least as long as Stripe keeps them, whatever the setting says.
MIN_KEY_RETENTION = dt.timedelta(hours=24)


# --- errors ---------------------------------------------------------------------------------------
class RefundError(Exception):
    """Base class. `retryable` says whether the same call may succeed later."""

    retryable = False


class RefundNotAllowed(RefundError):
    """Policy, state or ledger forbids this refund (nothing was moved or reserved)."""


class IdempotencyConflict(RefundError):
    """The key was used before with other parameters (nothing was moved)."""


class RefundInFlight(RefundError):
    """Another attempt with this key is running right now; retry later for its result."""

    retryable = True


class RefundRetryable(RefundError):
    """The processor failed transiently; the attempt stays reserved for a retry or the
    reconciler, which will finish it with the same key."""

    retryable = True


class RefundDeclined(RefundError):
    """The processor declined for good; the reservation was released and the failure recorded."""


class RefundRequestStateError(RefundError):
    """The request is not in the state the action needs (someone else decided first, or it
    expired)."""


Actor = AbstractBaseUser | AnonymousUser


# --- invoices -------------------------------------------------------------------------------------
INVOICE_REISSUE_DAYS = 90  # POLICY.md: an invoice from the last 90 days can be reissued once


class InvoiceReissueNotAllowed(Exception):
    """The invoice is too old, already reissued, or not the customer's."""


def invoice_reissue(
    *, customer: Customer, invoice: Invoice, at: dt.datetime | None = None
) -> Invoice:
    """Reissue `invoice` once with the customer's current details (name, VAT ID). Allowed for an
    invoice issued in the last 90 days (UTC calendar days, day 90 included) that was never
    reissued. The amounts do not change; a reverse charge applies to future invoices only."""
    at = at or timezone.now()
    if invoice.customer_id != customer.pk:
        raise InvoiceReissueNotAllowed("that invoice does not belong to this customer")
    age = (at.astimezone(dt.UTC).date() - invoice.issued_at.astimezone(dt.UTC).date()).days
    if age > INVOICE_REISSUE_DAYS:
        raise InvoiceReissueNotAllowed(
            f"invoice {invoice.number} is {age} days old; only invoices from the last "
            f"{INVOICE_REISSUE_DAYS} days can be reissued"
        )
    changed = Invoice.objects.filter(pk=invoice.pk, reissued=False).update(
        reissued=True, reissued_at=at
    )
    if changed != 1:
        raise InvoiceReissueNotAllowed(f"invoice {invoice.number} was already reissued once")
    invoice.refresh_from_db()
    billing_version_bump(customer_id=customer.pk)
    return invoice


def billing_version_bump(*, customer_id: int) -> None:
    """After commit, bump the customer's billing version (see selectors.billing_version)."""
    from django.core.cache import cache

    from billing.selectors import billing_version_key

    def bump() -> None:
        key = billing_version_key(customer_id)
        cache.add(key, 0, timeout=None)
        try:
            cache.incr(key)
        except ValueError:  # evicted between add and incr: start again
            cache.set(key, 1, timeout=None)

    transaction.on_commit(bump)


# --- refund requests ------------------------------------------------------------------------------
CENT = Decimal("0.01")


def _whole_cents(amount: Decimal) -> Decimal:
    """A money amount as given, if it is a finite number of whole cents; else RefundNotAllowed.

    Fractions of a cent are refused rather than rounded: Postgres rounds numeric(12, 2) half away
    from zero while a Python quantize rounds half even, so 10.005 would be stored (and refunded)
    as 10.01 but fingerprinted as "10.00", and a later call for 10.00 would replay it."""
    try:
        amount = Decimal(amount)
        if amount.is_finite() and amount == amount.quantize(CENT):
            return amount
    except InvalidOperation:
        pass
    raise RefundNotAllowed(f"amount {amount} is not in whole cents")


def _money_str(amount: Decimal) -> str:
    return str(Decimal(amount).quantize(Decimal("0.01")))


def _charge_facts(charge: Charge) -> dict[str, Any]:
    return {
        "ref": charge.ref,
        "amount": _money_str(charge.amount),
        "currency": charge.currency,
        "status": charge.status,
        "charged_at": charge.charged_at.isoformat(),
        "payment_method": charge.payment_method,
        "refunded_amount": _money_str(charge.refunded_amount),
        "refund_pending_amount": _money_str(charge.refund_pending_amount),
        "disputed_at": charge.disputed_at.isoformat() if charge.disputed_at else None,
    }


def _evidence(*, charge: Charge, at: dt.datetime) -> tuple[dict[str, Any], Any]:
    decision = evaluate_refund(charge=charge, at=at)
    invoice = charge.invoice
    subscription = invoice.subscription
    same_invoice = Charge.objects.filter(invoice=invoice).exclude(pk=charge.pk).order_by("id")
    evidence = {
        "evaluated_at": at.isoformat(),
        "decision": decision.as_evidence(),
        "charge": _charge_facts(charge),
        "invoice": {
            "number": invoice.number,
            "status": invoice.status,
            "subtotal": str(invoice.subtotal),
            "tax": str(invoice.tax),
            "total": str(invoice.total),
            "issued_at": invoice.issued_at.isoformat(),
            "other_charges": [_charge_facts(other) for other in same_invoice],
        },
        "plan": (
            {"code": subscription.plan.code, "interval": subscription.plan.interval}
            if subscription
            else None
        ),
        "customer": {"ref": charge.customer.ref, "email": charge.customer.email},
    }
    return evidence, decision


def refund_request_create(
    *,
    customer: Customer,
    charge: Charge,
    proposed_by: str,
    amount: Decimal | None = None,
    reason: str = "",
    source: str = "",
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
) -> RefundRequest:
    """Propose a refund of `charge` (which must be `customer`'s) for `amount` (default: all that
    the policy allows). The amount is checked against the policy evaluated here, in code; a
    proposer's figure is never trusted beyond it. The evidence is frozen on the request.
    Duplicate-charge refunds within the auto-approval limit are approved at once and queued for
    execution. With `idempotency_key`, a repeated call returns the request made the first time.

    Raises RefundNotAllowed when the policy allows nothing, the amount is above what it allows,
    or the charge is not the customer's; IdempotencyConflict when the key was used for another
    request.
    """
    at = at or timezone.now()
    if charge.customer_id != customer.pk:
        raise RefundNotAllowed("that charge does not belong to this customer")
    asked = None if amount is None else _whole_cents(amount)
    if idempotency_key:
        existing = _request_made_with_key(key=idempotency_key, charge=charge, amount=asked)
        if existing is not None:
            return existing

    with transaction.atomic():
        # Requests for one charge are made one at a time: each sees what the others asked for.
        charge = Charge.objects.select_for_update().select_related("customer").get(pk=charge.pk)
        if idempotency_key:
            existing = _request_made_with_key(key=idempotency_key, charge=charge, amount=asked)
            if existing is not None:
                return existing
        return _refund_request_decide_and_insert(
            customer=customer,
            charge=charge,
            asked=asked,
            proposed_by=proposed_by,
            reason=reason,
            source=source,
            idempotency_key=idempotency_key,
            at=at,
        )


def _refund_request_decide_and_insert(
    *,
    customer: Customer,
    charge: Charge,
    asked: Decimal | None,
    proposed_by: str,
    reason: str,
    source: str,
    idempotency_key: str | None,
    at: dt.datetime,
) -> RefundRequest:
    evidence, decision = _evidence(charge=charge, at=at)
    if not decision.refundable:
        raise RefundNotAllowed(decision.reason)
    # What undecided or approved requests already ask for is not available again (the policy's
    # figure counts only refunds that were made or are being made).
    requested = RefundRequest.objects.filter(
        charge=charge, state__in=[RefundRequestState.PROPOSED, RefundRequestState.APPROVED]
    ).aggregate(total=Sum("amount"))["total"] or Decimal(0)
    available = decision.refundable_amount - requested
    if available <= 0:
        raise RefundNotAllowed(
            f"a refund of {requested} {decision.currency} is already requested for this charge"
        )
    amount = available if asked is None else asked
    if amount <= 0 or amount > available:
        raise RefundNotAllowed(
            f"amount {amount} is not between 0 and the refundable "
            f"{available} {decision.currency}"
            + (f" ({requested} already requested)" if requested else "")
        )
    auto = decision.auto_approvable and amount <= Decimal(settings.REFUND_AUTO_APPROVE_LIMIT)
    try:
        request = _refund_request_insert(
            auto=auto,
            customer=customer,
            charge=charge,
            amount=amount,
            currency=charge.currency,
            clause=decision.clause,
            reason=reason or decision.reason,
            evidence=evidence,
            state=RefundRequestState.APPROVED if auto else RefundRequestState.PROPOSED,
            requires_approval=not auto,
            auto_approved=auto,
            proposed_by=proposed_by,
            source=source,
            decided_at=at if auto else None,
            decision_note="Approved automatically: duplicate charge within the limit."
            if auto
            else "",
            expires_at=at + dt.timedelta(hours=settings.REFUND_REQUEST_TTL_HOURS),
            idempotency_key=idempotency_key or f"refund-request-{uuid4()}",
        )
    except IntegrityError:
        # A concurrent call with the same key inserted first (the unique index made us wait for
        # it to commit): return its request, as a repeated call would get.
        existing = (
            _request_made_with_key(key=idempotency_key, charge=charge, amount=asked)
            if idempotency_key
            else None
        )
        if existing is None:
            raise
        return existing
    logger.info(
        "refund request created",
        extra={"refund_request": request.pk, "clause": request.clause, "auto": auto},
    )
    _count_decision(request, "auto_approved" if auto else "proposed")
    return request


def _request_made_with_key(
    *, key: str, charge: Charge, amount: Decimal | None
) -> RefundRequest | None:
    existing = RefundRequest.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.charge_id != charge.pk or (amount is not None and existing.amount != amount):
        raise IdempotencyConflict("refund request key used for another request")
    return existing


@transaction.atomic
def _refund_request_insert(*, auto: bool, **fields: Any) -> RefundRequest:
    request = RefundRequest.objects.create(**fields)
    billing_version_bump(customer_id=request.customer_id)
    if auto:
        _enqueue_execution(request)
    return request


def _enqueue_execution(request: RefundRequest) -> None:
    from billing.tasks import execute_refund

    execute_refund.delay_on_commit(request.pk)


def _check_can_decide(actor: Actor) -> None:
    if not (
        actor.is_authenticated
        and getattr(actor, "is_staff", False)
        and actor.has_perm("billing.decide_refundrequest")  # type: ignore[union-attr,attr-defined]
    ):
        raise PermissionDenied("only staff with the decide permission can decide refund requests")


def _decide(
    *, refund_request: RefundRequest, actor: Actor, note: str, to: str, at: dt.datetime | None
) -> RefundRequest:
    _check_can_decide(actor)
    at = at or timezone.now()
    with transaction.atomic():
        changed = RefundRequest.objects.filter(
            pk=refund_request.pk, state=RefundRequestState.PROPOSED, expires_at__gt=at
        ).update(state=to, decided_by=actor, decided_at=at, decision_note=note)
        refund_request.refresh_from_db()
        if changed != 1:
            raise RefundRequestStateError(
                f"refund request #{refund_request.pk} is {refund_request.state}"
                + (" and past its expiry" if refund_request.expires_at <= at else "")
            )
        if to == RefundRequestState.APPROVED:
            _enqueue_execution(refund_request)
        refund_request_announce(refund_request=refund_request)
    return refund_request


def refund_request_approve(
    *, refund_request: RefundRequest, actor: Actor, note: str = "", at: dt.datetime | None = None
) -> RefundRequest:
    """Approve a proposed, unexpired request and queue its execution (after commit). `actor`
    must be active staff with `billing.decide_refundrequest`. Raises RefundRequestStateError if
    the request is no longer proposed (decided by someone else, or expired)."""
    return _decide(
        refund_request=refund_request,
        actor=actor,
        note=note,
        to=RefundRequestState.APPROVED,
        at=at,
    )


def refund_request_reject(
    *, refund_request: RefundRequest, actor: Actor, note: str = "", at: dt.datetime | None = None
) -> RefundRequest:
    """Reject a proposed, unexpired request. Same preconditions as `refund_request_approve`."""
    return _decide(
        refund_request=refund_request,
        actor=actor,
        note=note,
        to=RefundRequestState.REJECTED,
        at=at,
    )


def refund_request_withdraw(*, refund_request: RefundRequest, note: str = "") -> bool:
    """Withdraw a request nobody has decided yet (the customer changed their mind). Returns
    False, changing nothing, when it was already decided, executed or expired."""
    with transaction.atomic():
        changed = RefundRequest.objects.filter(
            pk=refund_request.pk, state=RefundRequestState.PROPOSED
        ).update(state=RefundRequestState.WITHDRAWN, decision_note=note)
        refund_request.refresh_from_db()
        billing_version_bump(customer_id=refund_request.customer_id)
    return changed == 1


def _count_decision(refund_request: RefundRequest, decision: str) -> None:
    """Count a refund request's new state by the customer's plan (the operators' approval rate
    per segment), once the change is committed."""
    from billing.selectors import subscription_current_for_customer
    from ledgerly.metrics import REFUND_DECISIONS

    subscription = subscription_current_for_customer(customer=refund_request.customer)
    segment = subscription.plan.code if subscription is not None else "none"
    transaction.on_commit(lambda: REFUND_DECISIONS.labels(segment, decision).inc())


def refund_request_announce(*, refund_request: RefundRequest) -> None:
    """After commit, tell whoever listens (the support app, by the task name in
    BILLING_REFUND_EVENTS_TASK) that the request changed state. By name, so billing imports
    nothing of theirs."""
    billing_version_bump(customer_id=refund_request.customer_id)
    _count_decision(refund_request, str(refund_request.state))
    name = settings.BILLING_REFUND_EVENTS_TASK
    if not name:
        return
    from celery import current_app

    pk, state = refund_request.pk, refund_request.state
    transaction.on_commit(lambda: current_app.send_task(name, args=[pk, state]))


def refund_requests_expire(*, now: dt.datetime | None = None) -> int:
    """Mark proposed requests past their expiry as expired; returns how many."""
    now = now or timezone.now()
    return RefundRequest.objects.filter(
        state=RefundRequestState.PROPOSED, expires_at__lte=now
    ).update(state=RefundRequestState.EXPIRED)


# --- issuing a refund -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Attempt:
    key_id: int
    finished: bool
    refund_id: int | None


def _fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _recorded_result(key: IdempotencyKey) -> Refund:
    if key.response_code == RefundStatus.SUCCEEDED and key.refund is not None:
        return key.refund
    body = key.response_body or {}
    raise RefundDeclined(body.get("message", "the processor declined this refund"))


def _phase_reserve(
    *,
    key: str,
    fingerprint: str,
    params: dict[str, Any],
    refund_request_id: int,
    amount: Decimal,
    now: dt.datetime,
) -> _Attempt:
    # Durable: this recovery point must be committed before the processor is called. Nested in a
    # caller's transaction, a later rollback would leave money moved and no record of it for a
    # retry or the reconciler to find, so that is refused (RuntimeError) before anything moves.
    with transaction.atomic(durable=True):
        # Insert-or-find the key; a concurrent insert of the same key waits on the unique index
        # until the first transaction ends, then finds its row.
        IdempotencyKey.objects.bulk_create(
            [
                IdempotencyKey(
                    key=key,
                    fingerprint=fingerprint,
                    request_params=params,
                    recovery_point=RecoveryPoint.STARTED,
                    created_at=now,
                    updated_at=now,
                )
            ],
            ignore_conflicts=True,
        )
        row = IdempotencyKey.objects.select_for_update().get(key=key)
        if row.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was used with other parameters: {row.request_params}"
            )
        if row.recovery_point == RecoveryPoint.FINISHED:
            return _Attempt(key_id=row.pk, finished=True, refund_id=row.refund_id)
        stale_after = dt.timedelta(seconds=settings.REFUND_RECONCILE_AFTER_SECONDS)
        if row.locked_at is not None and now - row.locked_at < stale_after:
            raise RefundInFlight(f"a refund with key {key!r} is in flight")

        if row.recovery_point == RecoveryPoint.REFUND_RESERVED:
            # A previous attempt reserved the money and then crashed or met a transient error.
            # Its checks held when it reserved; finish it (same key to the processor).
            row.locked_at = now
            row.updated_at = now
            row.attempts = F("attempts") + 1
            row.save(update_fields=["locked_at", "updated_at", "attempts"])
            return _Attempt(key_id=row.pk, finished=False, refund_id=row.refund_id)

        # Recovery point "started": this transaction inserted the key. Every check below rolls
        # the whole transaction back on failure, key included, so a later retry can succeed.
        request = RefundRequest.objects.select_for_update().get(pk=refund_request_id)
        if request.state != RefundRequestState.APPROVED:
            raise RefundNotAllowed(f"refund request #{request.pk} is {request.state}, not approved")
        if request.expires_at <= now:
            raise RefundNotAllowed(f"refund request #{request.pk} expired at {request.expires_at}")
        if amount <= 0 or amount > request.amount:
            raise RefundNotAllowed(f"amount {amount} is not within the approved {request.amount}")
        if Refund.objects.filter(refund_request=request).exists():
            raise RefundNotAllowed(f"refund request #{request.pk} was already attempted")
        charge = Charge.objects.select_for_update().get(pk=request.charge_id)
        if charge.status != ChargeStatus.SUCCEEDED:
            raise RefundNotAllowed(f"charge {charge.ref} took no money")
        if charge.disputed_at is not None:
            raise RefundNotAllowed(f"charge {charge.ref} is disputed; refunds go through staff")
        remaining = charge.amount - charge.refunded_amount - charge.refund_pending_amount
        if amount > remaining:
            raise RefundNotAllowed(
                f"amount {amount} exceeds what is left of charge {charge.ref}: {remaining}"
            )
        Charge.objects.filter(pk=charge.pk).update(
            refund_pending_amount=F("refund_pending_amount") + amount
        )
        refund = Refund.objects.create(
            ref="re_" + hashlib.sha256(key.encode()).hexdigest()[:24],
            charge=charge,
            refund_request=request,
            amount=amount,
            currency=charge.currency,
            status=RefundStatus.PENDING,
            idempotency_key=key,
            reason=request.clause,
            created_at=now,
        )
        row.refund = refund
        row.recovery_point = RecoveryPoint.REFUND_RESERVED
        row.locked_at = now
        row.updated_at = now
        row.attempts = 1
        row.save()
        return _Attempt(key_id=row.pk, finished=False, refund_id=refund.pk)


def _lock_request(refund_request_id: int) -> None:
    # Same lock order as phase A (key, request, charge), so two phases never deadlock.
    list(
        RefundRequest.objects.select_for_update()
        .filter(pk=refund_request_id)
        .values_list("pk", flat=True)
    )


def _phase_record_success(*, key_id: int, result: ProcessorRefund) -> Refund:
    now = timezone.now()
    with transaction.atomic(durable=True):
        row = (
            IdempotencyKey.objects.select_for_update(of=("self",))
            .select_related("refund")
            .get(pk=key_id)
        )
        if row.recovery_point == RecoveryPoint.FINISHED:
            return _recorded_result(row)  # a concurrent resumer recorded it first
        refund = row.refund
        assert refund is not None  # noqa: S101 — reserved keys always carry their refund
        request_id = refund.refund_request_id
        assert request_id is not None  # noqa: S101 — issue_refund refunds only requests
        _lock_request(request_id)
        Charge.objects.select_for_update().filter(pk=refund.charge_id).update(
            refund_pending_amount=F("refund_pending_amount") - refund.amount,
            refunded_amount=F("refunded_amount") + refund.amount,
        )
        Refund.objects.filter(pk=refund.pk, status=RefundStatus.PENDING).update(
            status=RefundStatus.SUCCEEDED, processor_ref=result.processor_ref, completed_at=now
        )
        RefundRequest.objects.filter(pk=request_id, state=RefundRequestState.APPROVED).update(
            state=RefundRequestState.EXECUTED, executed_at=now
        )
        row.recovery_point = RecoveryPoint.FINISHED
        row.locked_at = None
        row.updated_at = now
        row.response_code = RefundStatus.SUCCEEDED
        row.response_body = {
            "refund": refund.ref,
            "processor_ref": result.processor_ref,
            "amount": str(refund.amount),
            "currency": refund.currency,
        }
        row.save()
        refund.refresh_from_db()
        return refund


def _phase_record_failure(*, key_id: int, error: ProcessorError) -> None:
    now = timezone.now()
    with transaction.atomic(durable=True):
        row = (
            IdempotencyKey.objects.select_for_update(of=("self",))
            .select_related("refund")
            .get(pk=key_id)
        )
        if row.recovery_point == RecoveryPoint.FINISHED:
            return
        refund = row.refund
        assert refund is not None  # noqa: S101
        request_id = refund.refund_request_id
        assert request_id is not None  # noqa: S101
        _lock_request(request_id)
        # Release the reservation: the money never left.
        Charge.objects.select_for_update().filter(pk=refund.charge_id).update(
            refund_pending_amount=F("refund_pending_amount") - refund.amount
        )
        Refund.objects.filter(pk=refund.pk, status=RefundStatus.PENDING).update(
            status=RefundStatus.FAILED,
            failure_code=error.code,
            failure_message=str(error)[:200],
            completed_at=now,
        )
        RefundRequest.objects.filter(pk=request_id, state=RefundRequestState.APPROVED).update(
            state=RefundRequestState.FAILED,
            failure_reason=f"the processor declined the refund: {error}"[:1000],
        )
        row.recovery_point = RecoveryPoint.FINISHED
        row.locked_at = None
        row.updated_at = now
        row.response_code = RefundStatus.FAILED
        row.response_body = {"error": error.code, "message": str(error)}
        row.save()


def _phase_unlock(*, key_id: int) -> None:
    """After a transient error: let the next retry proceed at once (the reservation stays)."""
    IdempotencyKey.objects.filter(pk=key_id, recovery_point=RecoveryPoint.REFUND_RESERVED).update(
        locked_at=None, updated_at=timezone.now()
    )


def issue_refund(
    *,
    refund_request: RefundRequest,
    idempotency_key: str | None = None,
    amount: Decimal | None = None,
    processor: PaymentProcessor | None = None,
    now: dt.datetime | None = None,
) -> Refund:
    """Refund an approved, unexpired request, at most once per idempotency key.

    Preconditions: call it outside any database transaction (the processor call must not hold
    one open, and each phase must commit on its own; inside one it raises RuntimeError before
    anything moves). `amount` must be whole cents. `idempotency_key` defaults to the
    request's own key; `amount` to the approved amount (never above it).

    Returns the succeeded Refund — also when the key already finished successfully, without
    calling the processor. Raises IdempotencyConflict (same key, other parameters; nothing
    moved), RefundInFlight (another attempt holds the key), RefundNotAllowed (not approved,
    expired, disputed, or above what is left of the charge under its row lock; nothing moved),
    RefundRetryable (the processor failed transiently; the attempt stays reserved and a retry or
    `refunds_reconcile` finishes it with the same key), RefundDeclined (declined for good;
    reservation released; a repeat with the key raises it again).
    """
    now = now or timezone.now()
    processor = processor or get_processor()
    key = idempotency_key or refund_request.idempotency_key
    amount = refund_request.amount if amount is None else _whole_cents(amount)
    charge_ref = Charge.objects.values_list("ref", flat=True).get(pk=refund_request.charge_id)
    params = {
        "operation": "refund",
        "refund_request": refund_request.pk,
        "charge": charge_ref,
        "amount": str(amount.quantize(Decimal("0.01"))),
        "currency": refund_request.currency,
    }
    attempt = _phase_reserve(
        key=key,
        fingerprint=_fingerprint(params),
        params=params,
        refund_request_id=refund_request.pk,
        amount=amount,
        now=now,
    )
    if attempt.finished:
        return _recorded_result(
            IdempotencyKey.objects.select_related("refund").get(pk=attempt.key_id)
        )

    assert attempt.refund_id is not None  # noqa: S101 — an unfinished attempt has its refund
    refund = Refund.objects.select_related("charge").get(pk=attempt.refund_id)
    try:
        result = processor.refund(
            charge_ref=refund.charge.ref,
            amount=refund.amount,
            currency=refund.currency,
            idempotency_key=key,
        )
    except ProcessorError as exc:
        if exc.permanent:
            _phase_record_failure(key_id=attempt.key_id, error=exc)
            logger.warning("refund declined", extra={"refund": refund.ref, "code": exc.code})
            raise RefundDeclined(str(exc)) from exc
        _phase_unlock(key_id=attempt.key_id)
        logger.warning("refund attempt interrupted", extra={"refund": refund.ref, "code": exc.code})
        raise RefundRetryable(str(exc)) from exc
    refund = _phase_record_success(key_id=attempt.key_id, result=result)
    logger.info("refund succeeded", extra={"refund": refund.ref, "replayed": result.replayed})
    return refund


def refunds_reconcile(
    *, now: dt.datetime | None = None, processor: PaymentProcessor | None = None
) -> dict[str, int]:
    """Finish refund attempts stuck at "refund_reserved" for longer than
    settings.REFUND_RECONCILE_AFTER_SECONDS (a crashed or abandoned attempt), by calling the
    processor again with the same key. Money never moves twice: the processor answers a known
    key from its record. Then start approved, unexpired requests that have had no attempt for
    as long (their queued execution was lost), with the request's own key, so a late task and
    this run still refund once. Returns counts by outcome."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.REFUND_RECONCILE_AFTER_SECONDS)
    stuck = (
        IdempotencyKey.objects.filter(
            operation="refund",
            recovery_point=RecoveryPoint.REFUND_RESERVED,
            updated_at__lte=cutoff,
            refund__refund_request__isnull=False,
        )
        .select_related("refund__refund_request")
        .order_by("updated_at")
    )
    counts = {"succeeded": 0, "declined": 0, "retry_later": 0, "failed": 0}
    for row in stuck[:200]:
        assert row.refund is not None  # noqa: S101
        assert row.refund.refund_request is not None  # noqa: S101
        try:
            issue_refund(
                refund_request=row.refund.refund_request,
                idempotency_key=row.key,
                amount=row.refund.amount,
                processor=processor,
                now=now,
            )
        except RefundDeclined:
            counts["declined"] += 1
        except (RefundInFlight, RefundRetryable):
            counts["retry_later"] += 1
        else:
            counts["succeeded"] += 1

    # An approval commits first and queues `execute_refund` on commit; if the broker was down at
    # that moment (or the task gave up before reserving), nothing else would ever execute it.
    # One past its expiry is refused by issue_refund and closed as failed below.
    unstarted = RefundRequest.objects.filter(
        state=RefundRequestState.APPROVED,
        decided_at__lte=cutoff,
        refund__isnull=True,
    ).order_by("decided_at", "id")
    for request in unstarted[:200]:
        try:
            issue_refund(refund_request=request, processor=processor, now=now)
        except RefundDeclined:
            counts["declined"] += 1
        except (RefundInFlight, RefundRetryable):
            counts["retry_later"] += 1
        except RefundNotAllowed as exc:
            # e.g. disputed since approval, or the charge refunded by another request
            refund_request_fail_unexecutable(refund_request=request, reason=str(exc))
            counts["failed"] += 1
        except IdempotencyConflict as exc:
            logger.error(
                "approved refund request conflicts with its own key",
                extra={"refund_request": request.pk, "error": str(exc)},
            )
        else:
            counts["succeeded"] += 1
    if any(counts.values()):
        logger.info("refunds reconciled", extra=counts)
    return counts


def refund_request_fail_unexecutable(*, refund_request: RefundRequest, reason: str) -> bool:
    """Close an approved request that can no longer move money (disputed since approval, nothing
    left of the charge, past its expiry before it ran) as failed, with the reason, so staff see
    it instead of an approval that silently never executes. Only an approved request with no
    refund attempt changes (a conditional update); returns whether it did."""
    changed = RefundRequest.objects.filter(
        pk=refund_request.pk, state=RefundRequestState.APPROVED, refund__isnull=True
    ).update(state=RefundRequestState.FAILED, failure_reason=reason[:1000])
    if changed:
        logger.warning(
            "approved refund request cannot be executed; marked failed",
            extra={"refund_request": refund_request.pk, "error": reason},
        )
    return bool(changed)


def idempotency_keys_purge(*, now: dt.datetime | None = None) -> int:
    """Delete finished keys older than settings.IDEMPOTENCY_KEY_RETENTION_HOURS (never younger
    than 24 hours). Unfinished keys are kept: the reconciler still needs them."""
    now = now or timezone.now()
    retention = max(dt.timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS), MIN_KEY_RETENTION)
    deleted, _ = IdempotencyKey.objects.filter(
        created_at__lt=now - retention, recovery_point=RecoveryPoint.FINISHED
    ).delete()
    return deleted
