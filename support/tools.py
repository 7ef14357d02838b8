"""The agent's bounded tools: typed functions with JSON schemas, scoped to the ticket's customer.

No tool takes a customer id: every lookup reads through a billing or memory selector scoped by
the ticket's customer, so no argument a model writes can reach another customer's rows. Tools
write only by creating requests (`propose_refund` → a RefundRequest through the same policy
code as the refund workflow; `escalate_to_human` → the runner opens an Escalation); none moves
money. Each result is validated against its schema before the model sees it; a violation ends
the run in an escalation (`ToolResultInvalid`).

The definitions and result schemas are a versioned artifact (support/tool_schemas.py, locked
by hash); runs record the version they used.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from billing import policy
from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.models import Customer
from ledgerly import metrics, tracing
from ledgerly.llm.gateway import schema_errors
from memory import selectors as memory_selectors
from support.tool_schemas import (
    DEFINITIONS,
    READ_ONLY,
    RESULT_SCHEMAS,
    check_lock,
    toolset_hash,
    toolset_ref,
)

log = structlog.get_logger(__name__)


class ToolError(Exception):
    """A tool refused its input: goes back to the model as an error result."""


class ToolResultInvalid(Exception):
    """A tool's result broke its schema: the run escalates instead of letting the model guess."""


def _call(service: Callable[..., Any], /, **kwargs: Any) -> Any:
    return service(**kwargs)


@dataclass(frozen=True)
class ToolScope:
    """What every tool may touch: the ticket's customer, and whose run proposes. A tool that
    writes calls its service through `write` (the step's `StepEnv.write`: a dry run in a shadow
    run)."""

    customer: Customer
    ticket_id: int
    run_id: int
    write: Callable[..., Any] = _call


def _money(value: object) -> str:
    return str(Decimal(str(value)).quantize(Decimal("0.01")))


def _lookups_version(customer: Customer) -> int:
    return billing_selectors.billing_version(customer=customer)


def _cached(scope: ToolScope, name: str, args: dict[str, Any], build: Callable[[], Any]) -> Any:
    """Invoice and charge lookups for answering are cached briefly, keyed by the customer's
    billing version (bumped by every billing write), so a write is seen at once."""
    ttl = settings.SUPPORT_LOOKUP_CACHE_SECONDS
    if not ttl:
        return build()
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    key = f"support:lookup:{scope.customer.pk}:{_lookups_version(scope.customer)}:{name}:{digest}"
    value = cache.get(key)
    metrics.CACHE_REQUESTS.labels("lookup", "miss" if value is None else "hit").inc()
    if value is None:
        value = build()
        cache.set(key, value, ttl)
    return value


def lookup_customer(scope: ToolScope, args: dict[str, Any]) -> dict[str, Any]:
    customer = scope.customer
    sub = billing_selectors.subscription_current_for_customer(customer=customer)
    plan = None
    if sub is not None:
        plan = {
            "code": sub.plan.code,
            "interval": sub.plan.interval,
            "price": _money(sub.plan.price),
            "status": sub.status,
            "current_period_end": sub.current_period_end.date().isoformat(),
        }
    return {
        "ref": customer.ref,
        "name": customer.name,
        "email": customer.email,
        "country": customer.country,
        "currency": customer.currency,
        "vat_id": customer.vat_id,
        "plan": plan,
    }


def list_invoices(scope: ToolScope, args: dict[str, Any]) -> dict[str, Any]:
    def build() -> dict[str, Any]:
        invoices = billing_selectors.invoices_for_customer(customer=scope.customer)[:24]
        return {
            "invoices": [
                {
                    "number": i.number,
                    "total": _money(i.total),
                    "tax": _money(i.tax),
                    "currency": i.currency,
                    "status": i.status,
                    "issued_at": i.issued_at.date().isoformat(),
                    "reissued": i.reissued,
                }
                for i in invoices
            ]
        }

    return dict(_cached(scope, "list_invoices", args, build))


def list_charges(scope: ToolScope, args: dict[str, Any]) -> dict[str, Any]:
    def build() -> dict[str, Any]:
        charges = billing_selectors.charges_for_customer(customer=scope.customer).select_related(
            "invoice"
        )
        if args.get("invoice_number"):
            charges = charges.filter(invoice__number=args["invoice_number"])
        return {
            "charges": [
                {
                    "ref": c.ref,
                    "invoice": c.invoice.number,
                    "amount": _money(c.amount),
                    "currency": c.currency,
                    "status": c.status,
                    "charged_at": c.charged_at.date().isoformat(),
                    "disputed": c.disputed_at is not None,
                    "refunded_amount": _money(c.refunded_amount),
                    "refund_pending_amount": _money(c.refund_pending_amount),
                }
                for c in charges.order_by("-charged_at", "-id")[:24]
            ]
        }

    return dict(_cached(scope, "list_charges", args, build))


def search_help_center(scope: ToolScope, args: dict[str, Any]) -> dict[str, Any]:
    passages = memory_selectors.passages_search(query=str(args["query"]), k=3)
    return {"articles": [{"slug": p.slug, "title": p.title, "text": p.text} for p in passages]}


def recall_customer_memory(scope: ToolScope, args: dict[str, Any]) -> dict[str, Any]:
    memories = memory_selectors.customer_memories_recall(
        customer=scope.customer, query=str(args["query"]), k=5
    )
    return {
        "memories": [{"text": m.text, "noted": m.created_at.date().isoformat()} for m in memories]
    }


def propose_refund(scope: ToolScope, args: dict[str, Any]) -> dict[str, Any]:
    """Create a RefundRequest for one of the customer's charges through the policy code. The
    model's amount is at most a cap it asks for, never trusted beyond the policy's figure."""
    charge = billing_selectors.charge_get_for_customer(
        customer=scope.customer, ref=str(args["charge_ref"])
    )
    if charge is None:
        raise ToolError("no charge with that reference on this customer's account")
    amount = None
    if args.get("amount"):
        try:
            amount = Decimal(str(args["amount"]))
        except InvalidOperation as exc:
            raise ToolError("amount must be a decimal like 49.00") from exc
    if amount is not None:
        # The model's figure is at most a ceiling it asks for: above what the policy allows, the
        # request is for the policy's amount (never more), and the result says so.
        allowed = policy.evaluate_refund(charge=charge, at=timezone.now()).refundable_amount
        if allowed > 0 and amount > allowed:
            amount = None
    confidence = float(args.get("confidence", 0))
    uncertainty = str(args.get("uncertainty", ""))[:500]
    try:
        request = scope.write(
            billing_services.refund_request_create,
            customer=scope.customer,
            charge=charge,
            amount=amount,
            proposed_by=f"agent:run:{scope.run_id}",
            reason=(
                f"{str(args.get('reason', ''))[:500]} (agent confidence {confidence:.2f}; "
                f"unsure about: {uncertainty or 'nothing stated'})"
            ),
            source=f"ticket:{scope.ticket_id}",
            idempotency_key=f"ticket:{scope.ticket_id}:charge:{charge.ref}",
        )
    except billing_services.RefundNotAllowed as exc:
        raise ToolError(f"the refund policy does not allow it: {exc}") from exc
    except billing_services.IdempotencyConflict as exc:
        raise ToolError("a different refund was already requested for this charge") from exc
    return {
        "status": "approved" if request.auto_approved else "proposed",
        "refund_request": request.pk,
        "amount": _money(request.amount),
        "currency": request.currency,
        "requires_approval": request.requires_approval,
        "auto_approved": request.auto_approved,
        "policy": request.clause,
    }


def escalate_to_human(scope: ToolScope, args: dict[str, Any]) -> dict[str, Any]:
    # The runner opens the Escalation when it commits the step (one per ticket).
    return {"status": "escalated"}


IMPLEMENTATIONS: dict[str, Callable[[ToolScope, dict[str, Any]], dict[str, Any]]] = {
    "lookup_customer": lookup_customer,
    "list_invoices": list_invoices,
    "list_charges": list_charges,
    "search_help_center": search_help_center,
    "recall_customer_memory": recall_customer_memory,
    "propose_refund": propose_refund,
    "escalate_to_human": escalate_to_human,
}


def run_tool(scope: ToolScope, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one tool; its result is checked against its schema (ToolResultInvalid if not).
    Each call is a span, a `tool.call` log line (name, outcome, duration; never the arguments
    or the result, which hold the customer's data) and a metric."""
    started, outcome = time.perf_counter(), "exception"
    with tracing.span("tool.call", **{"tool.name": name, "ledgerly.run_id": scope.run_id}) as sp:
        try:
            result = _run_tool(scope, name, args)
            outcome = "ok"
            return result
        except ToolError:
            outcome = "error"
            raise
        except ToolResultInvalid:
            outcome = "invalid_result"
            raise
        finally:
            seconds = time.perf_counter() - started
            sp.set_attribute("tool.outcome", outcome)
            metrics.TOOL_CALLS.labels(name if name in IMPLEMENTATIONS else "unknown", outcome).inc()
            metrics.TOOL_LATENCY.labels(name if name in IMPLEMENTATIONS else "unknown").observe(
                seconds
            )
            log.info(
                "tool.call",
                tool=name,
                outcome=outcome,
                duration_ms=round(seconds * 1000, 1),
                run_id=scope.run_id,
                ticket_id=scope.ticket_id,
            )


def _run_tool(scope: ToolScope, name: str, args: dict[str, Any]) -> dict[str, Any]:
    impl = IMPLEMENTATIONS.get(name)
    if impl is None:
        raise ToolError(f"unknown tool {name!r}")
    definition = next(d for d in DEFINITIONS if d["name"] == name)
    error = schema_errors(definition["input_schema"], args)
    if error is not None:
        raise ToolError(f"invalid input: {error}")
    result = impl(scope, args)
    problem = schema_errors(RESULT_SCHEMAS[name], result)
    if problem is not None:
        raise ToolResultInvalid(f"{name} returned a result that breaks its schema: {problem}")
    return result


__all__ = ["DEFINITIONS", "READ_ONLY", "check_lock", "run_tool", "toolset_hash", "toolset_ref"]
