"""Billing background tasks: thin wrappers that load ids and call one service."""

from __future__ import annotations

import logging

from celery import shared_task

from billing import services
from billing.models import RefundRequest

logger = logging.getLogger(__name__)


@shared_task(
    acks_late=True,
    autoretry_for=(services.RefundRetryable, services.RefundInFlight),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
)
def execute_refund(refund_request_id: int) -> str | None:
    """Execute an approved refund request. Safe to run twice: the request's idempotency key
    makes a second run return the recorded result. Transient processor errors retry with
    backoff; after the last retry the reconciler finishes the attempt."""
    request = RefundRequest.objects.get(pk=refund_request_id)
    try:
        refund = services.issue_refund(refund_request=request)
    except services.RefundNotAllowed as exc:
        services.refund_request_fail_unexecutable(refund_request=request, reason=str(exc))
        return None
    except (services.RefundDeclined, services.IdempotencyConflict) as exc:
        logger.warning(
            "refund not executed", extra={"refund_request": refund_request_id, "error": str(exc)}
        )
        return None
    request.refresh_from_db()
    services.refund_request_announce(refund_request=request)
    return refund.ref


@shared_task(acks_late=True)
def reconcile_refunds() -> dict[str, int]:
    return services.refunds_reconcile()


@shared_task(acks_late=True)
def purge_idempotency_keys() -> int:
    return services.idempotency_keys_purge()


@shared_task(acks_late=True)
def expire_refund_requests() -> int:
    return services.refund_requests_expire()
