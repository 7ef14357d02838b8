"""The REST API's support routes (mounted under /api/v1/ by ledgerly/api.py).

Tickets (scope `tickets`) and refund decisions (scope `staff`). Thin: parse and validate,
authorize (who may see which ticket), call a service or selector, render. Errors are raised as
`ApiError` and rendered with the uniform body.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from ninja import Field, Header, Path, Query, Router, Schema, Status
from pydantic import AfterValidator, StringConstraints

from billing import selectors as billing_selectors
from billing.models import Customer, RefundRequest, RefundRequestState
from billing.services import RefundRequestStateError
from ledgerly.apierrors import ApiError
from support import events, selectors, services, staff_actions
from support.api_auth import Principal, principal, rate_limit_customer, scoped
from support.apikeys import api_key_lineage_ids, tickets_for_api_key
from support.audit import audit_record
from support.models import Lane, Run, Ticket, TicketState

MAX_ID = 2**63 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("may not be blank")
    return value


# Postgres refuses NUL in text, so it is a 422 here rather than a 500 there.
Text = Annotated[str, AfterValidator(_no_nul)]
MessageText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=services.MAX_MESSAGE_CHARS),
    AfterValidator(_no_nul),
    AfterValidator(_not_blank),
]
Note = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)]
Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2000),
    AfterValidator(_no_nul),
    AfterValidator(_not_blank),
]
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"

tickets_router = Router(tags=["tickets"])
staff_router = Router(tags=["refund requests"])
TICKETS = scoped("tickets")
STAFF = scoped("staff")


# --- schemas ------------------------------------------------------------------------------------
class TicketIn(Schema):
    text: MessageText
    customer: (
        Annotated[str, StringConstraints(min_length=1, max_length=254), AfterValidator(_no_nul)]
        | None
    ) = Field(
        None,
        description="The customer's email or reference (cus_…). Required for an integration "
        "key not bound to a customer; a bound key or a signed-in customer may leave it out.",
    )


class MessageIn(Schema):
    text: MessageText


class TicketSummary(Schema):
    id: int
    state: str
    lane: str
    channel: str
    subject: str
    created_at: dt.datetime
    updated_at: dt.datetime


class MessageOut(Schema):
    seq: int
    role: str
    text: str
    created_at: dt.datetime


class RefundRequestBrief(Schema):
    id: int
    state: str
    amount: Decimal
    currency: str
    clause: str
    requires_approval: bool
    auto_approved: bool
    expires_at: dt.datetime


class CostOut(Schema):
    usd: Decimal
    tokens: int
    turns: int


class TicketOut(TicketSummary):
    first_lane: str
    route: dict[str, Any]
    reply: str
    sources: list[dict[str, Any]]
    messages: list[MessageOut]
    refund_request: RefundRequestBrief | None
    cost: CostOut


class TicketPage(Schema):
    items: list[TicketSummary]
    count: int
    limit: int
    offset: int


def _as_utc(value: dt.datetime) -> dt.datetime:
    # Postgres accepts offsets up to ±15:59 only; UTC it always takes.
    if timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("date out of range") from None


class TicketFilters(Schema):
    state: TicketState | None = None
    lane: Lane | None = None
    created_since: Annotated[dt.datetime, AfterValidator(_as_utc)] | None = Field(
        None, description="ISO 8601; naive means UTC"
    )
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1_000_000)


class RefundRequestOut(RefundRequestBrief):
    customer: str
    customer_email: str
    charge: str
    invoice: str
    reason: str
    evidence: dict[str, Any]
    proposed_by: str
    source: str
    decided_by: str | None
    decided_at: dt.datetime | None
    decision_note: str
    executed_at: dt.datetime | None
    failure_reason: str
    created_at: dt.datetime


class RefundRequestPage(Schema):
    items: list[RefundRequestOut]
    count: int
    limit: int
    offset: int


class RefundRequestFilters(Schema):
    state: RefundRequestState | None = None
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1_000_000)


class ApproveIn(Schema):
    note: Note = ""


class RejectIn(Schema):
    reason: Reason


# --- rendering ----------------------------------------------------------------------------------
def _summary(ticket: Ticket) -> TicketSummary:
    return TicketSummary(
        id=ticket.pk,
        state=ticket.state,
        lane=ticket.lane,
        channel=ticket.channel,
        subject=ticket.subject,
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
    )


def _brief(request: RefundRequest) -> RefundRequestBrief:
    return RefundRequestBrief(
        id=request.pk,
        state=request.state,
        amount=request.amount,
        currency=request.currency,
        clause=request.clause,
        requires_approval=request.requires_approval,
        auto_approved=request.auto_approved,
        expires_at=request.expires_at,
    )


def _detail(ticket: Ticket) -> TicketOut:
    run = Run.objects.filter(ticket=ticket).only("cost_usd", "tokens", "turns").first()
    return TicketOut(
        **_summary(ticket).dict(),
        first_lane=ticket.first_lane,
        route=ticket.route or {},
        reply=ticket.reply,
        sources=[s if isinstance(s, dict) else {"value": s} for s in ticket.sources or []],
        messages=[
            MessageOut(seq=m.seq, role=m.role, text=m.content, created_at=m.created_at)
            for m in selectors.ticket_messages(ticket=ticket)
        ],
        refund_request=_brief(ticket.refund_request) if ticket.refund_request else None,
        cost=CostOut(
            usd=run.cost_usd if run else Decimal("0"),
            tokens=run.tokens if run else 0,
            turns=run.turns if run else 0,
        ),
    )


def _refund_out(request: RefundRequest) -> RefundRequestOut:
    return RefundRequestOut(
        **_brief(request).dict(),
        customer=request.customer.ref,
        customer_email=request.customer.email,
        charge=request.charge.ref,
        invoice=request.charge.invoice.number,
        reason=request.reason,
        evidence=request.evidence or {},
        proposed_by=request.proposed_by,
        source=request.source,
        decided_by=request.decided_by.get_username() if request.decided_by else None,
        decided_at=request.decided_at,
        decision_note=request.decision_note,
        executed_at=request.executed_at,
        failure_reason=request.failure_reason,
        created_at=request.created_at,
    )


# --- who sees which ticket ----------------------------------------------------------------------
def _visible_tickets(who: Principal) -> QuerySet[Ticket]:
    if who.api_key is not None:
        return tickets_for_api_key(api_key=who.api_key)
    if who.customer is not None:
        return selectors.tickets_for_customer(customer=who.customer)
    return Ticket.objects.none()  # pragma: no cover - the session auth requires a customer


def _ticket(request: HttpRequest, ticket_id: int) -> Ticket:
    # Someone else's ticket is a 404, like a missing one: its existence is not told.
    ticket = (
        _visible_tickets(principal(request))
        .select_related("refund_request", "customer")
        .filter(pk=ticket_id)
        .first()
    )
    if ticket is None:
        raise ApiError(404, "not_found", f"no ticket {ticket_id}")
    return ticket


def _ticket_customer(who: Principal, named: str | None) -> Customer:
    if who.customer is not None:
        if named is not None and named.strip().lower() not in (
            who.customer.email.lower(),
            who.customer.ref.lower(),
        ):
            raise ApiError(
                422,
                "customer_not_allowed",
                "this key or sign-in opens tickets only for its own customer; leave `customer` out",
            )
        return who.customer
    if named is None:
        raise ApiError(
            422,
            "customer_required",
            "an integration key not bound to a customer must name the ticket's customer "
            "(email or reference)",
        )
    customer = (
        billing_selectors.customer_get_by_email(email=named)
        if "@" in named
        else billing_selectors.customer_get_by_ref(ref=named.strip())
    )
    if customer is None:
        raise ApiError(422, "unknown_customer", "no customer with that email or reference")
    rate_limit_customer(customer=customer)
    return customer


def _idempotency_namespace(who: Principal, customer: Customer) -> str:
    # One integration's keys never meet another's: the key is namespaced by the API key's
    # rotation lineage (so a retry with the rotated key still finds the ticket), or by the
    # signed-in customer. Not by the body's customer: the same key naming another customer is
    # another body, a 409 (the fingerprint holds the customer).
    if who.api_key is not None:
        root = api_key_lineage_ids(api_key=who.api_key)[0]
        return f"api:{root}:"
    return f"session:{customer.pk}:"


def _fingerprint(customer: Customer, text: str) -> str:
    canonical = json.dumps({"customer": customer.pk, "text": text}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- tickets ------------------------------------------------------------------------------------
@tickets_router.post("/tickets", response={202: TicketSummary}, auth=TICKETS)
def ticket_create(
    request: HttpRequest,
    payload: TicketIn,
    idempotency_key: Annotated[
        str | None,
        Header(
            None,
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Retrying with the same key returns the same ticket; the same key with "
            "another body is a 409.",
        ),
    ] = None,
) -> Status[TicketSummary]:
    """Open a ticket: stored and queued at once (202); the answer comes later (poll or stream
    the ticket)."""
    who = principal(request)
    customer = _ticket_customer(who, payload.customer)
    namespaced = (
        _idempotency_namespace(who, customer) + idempotency_key if idempotency_key else None
    )
    try:
        ticket = services.ticket_submit(
            customer=customer,
            text=payload.text,
            channel="api" if who.api_key is not None else "chat",
            idempotency_key=namespaced,
            idempotency_fingerprint=_fingerprint(customer, payload.text) if namespaced else "",
            api_key=who.api_key,
        )
    except services.IdempotencyConflict:
        raise ApiError(
            409,
            "idempotency_conflict",
            "this Idempotency-Key was used with another request body",
        ) from None
    except services.IntakeError as exc:
        raise ApiError(422, "invalid_message", str(exc)) from None
    return Status(202, _summary(ticket))


@tickets_router.get("/tickets", response=TicketPage, auth=TICKETS)
def ticket_list(request: HttpRequest, filters: Query[TicketFilters]) -> TicketPage:
    tickets = _visible_tickets(principal(request))
    if filters.state is not None:
        tickets = tickets.filter(state=filters.state)
    if filters.lane is not None:
        tickets = tickets.filter(lane=filters.lane)
    if filters.created_since is not None:
        tickets = tickets.filter(created_at__gte=filters.created_since)
    page = tickets[filters.offset : filters.offset + filters.limit]
    return TicketPage(
        items=[_summary(t) for t in page],
        count=tickets.count(),
        limit=filters.limit,
        offset=filters.offset,
    )


@tickets_router.get("/tickets/{ticket_id}", response=TicketOut, auth=TICKETS)
def ticket_get(request: HttpRequest, ticket_id: Id) -> TicketOut:
    return _detail(_ticket(request, ticket_id))


@tickets_router.post("/tickets/{ticket_id}/messages", response={202: TicketSummary}, auth=TICKETS)
def ticket_message_add(
    request: HttpRequest, ticket_id: Id, payload: MessageIn
) -> Status[TicketSummary]:
    """A follow-up from the customer on their ticket (the same run continues)."""
    ticket = _ticket(request, ticket_id)
    try:
        ticket = services.ticket_submit(
            customer=ticket.customer, text=payload.text, ticket=ticket, channel=ticket.channel
        )
    except services.IntakeError as exc:
        raise ApiError(422, "invalid_message", str(exc)) from None
    return Status(202, _summary(ticket))


@tickets_router.get(
    "/tickets/{ticket_id}/events",
    auth=TICKETS,
    response={200: None},
    openapi_extra={
        "responses": {
            "200": {
                "description": "Server-Sent Events: `status`, `delta`, `draft_reset`, `reply`, "
                "`state` (see support/events.py). Resume with `Last-Event-ID`; the stream ends "
                "after a few minutes and the client reconnects.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        }
    },
)
def ticket_events(
    request: HttpRequest,
    ticket_id: Id,
    last_event_id: Annotated[str | None, Header(None, alias="Last-Event-ID", max_length=50)] = None,
) -> StreamingHttpResponse:
    ticket = _ticket(request, ticket_id)
    who = principal(request)
    slot = events.stream_slot_take(
        reader=f"key:{who.api_key.pk}" if who.api_key is not None else f"user:{who.user.pk}",
        lifetime_seconds=settings.API_SSE_MAX_SECONDS,
    )
    if slot is None:
        raise ApiError(
            429,
            "too_many_streams",
            f"at most {events.MAX_STREAMS_PER_READER} event streams open at once; close one",
            headers={"Retry-After": "5"},
        )
    response = StreamingHttpResponse(
        events.sse_stream(
            ticket_id=ticket.pk,
            last_event_id=last_event_id,
            max_seconds=settings.API_SSE_MAX_SECONDS,
            slot=slot,
        ),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


# --- refund requests (staff) --------------------------------------------------------------------
def _refund_request(refund_request_id: int) -> RefundRequest:
    found = billing_selectors.refund_request_get_for_staff(refund_request_id=refund_request_id)
    if found is None:
        raise ApiError(404, "not_found", f"no refund request {refund_request_id}")
    return found


@staff_router.get("/refund-requests", response=RefundRequestPage, auth=STAFF)
def refund_request_list(
    request: HttpRequest, filters: Query[RefundRequestFilters]
) -> RefundRequestPage:
    requests = billing_selectors.refund_requests_for_staff(state=filters.state)
    page = requests[filters.offset : filters.offset + filters.limit]
    return RefundRequestPage(
        items=[_refund_out(r) for r in page],
        count=requests.count(),
        limit=filters.limit,
        offset=filters.offset,
    )


@staff_router.get("/refund-requests/{refund_request_id}", response=RefundRequestOut, auth=STAFF)
def refund_request_get(request: HttpRequest, refund_request_id: Id) -> RefundRequestOut:
    return _refund_out(_refund_request(refund_request_id))


def _decide(request: HttpRequest, action: Callable[..., RefundRequest]) -> RefundRequestOut:
    try:
        decided = action()
    except RefundRequestStateError as exc:
        raise ApiError(409, "refund_request_decided", str(exc)) from None
    except staff_actions.StaffInputError as exc:
        raise ApiError(422, "invalid_note", str(exc)) from None
    return _refund_out(_refund_request(decided.pk))


@staff_router.post(
    "/refund-requests/{refund_request_id}/approve", response=RefundRequestOut, auth=STAFF
)
def refund_request_approve(
    request: HttpRequest, refund_request_id: Id, payload: ApproveIn
) -> RefundRequestOut:
    """Approve as the key's owner (or the signed-in staff member), who needs the refund
    approver permission (403 otherwise). Its execution is queued; approving again is a 409."""
    who = principal(request)
    refund_request = _refund_request(refund_request_id)
    return _decide(
        request,
        lambda: staff_actions.refund_request_approve(
            refund_request=refund_request, actor=who.user, note=payload.note, via=who.via
        ),
    )


@staff_router.post(
    "/refund-requests/{refund_request_id}/reject", response=RefundRequestOut, auth=STAFF
)
def refund_request_reject(
    request: HttpRequest, refund_request_id: Id, payload: RejectIn
) -> RefundRequestOut:
    """Reject with a reason (the customer is told it)."""
    who = principal(request)
    refund_request = _refund_request(refund_request_id)
    return _decide(
        request,
        lambda: staff_actions.refund_request_reject(
            refund_request=refund_request, actor=who.user, note=payload.reason, via=who.via
        ),
    )


# --- the audit trail for routers that know nothing of it (memory's help-center routes) -----------
_AUDIT_ACTIONS = {
    "create_article": "article.create",
    "update_article": "article.edit",
    "delete_article": "article.delete",
    "reindex_article": "article.reindex",
    "ingest_helpcenter": "helpcenter.ingest",
}


def audited(func: Callable[..., Any]) -> Callable[..., Any]:
    """A ninja operation decorator: an unsafe call runs in one transaction with its audit entry
    (who, what, which key or session), so the action and its record commit or roll back
    together. Reads pass through."""

    @functools.wraps(func)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return func(request, *args, **kwargs)
        who = principal(request)
        payload = kwargs.get("payload")
        slug = kwargs.get("slug") or getattr(payload, "slug", None)
        with transaction.atomic():
            result = func(request, *args, **kwargs)
            audit_record(
                actor=who.user,
                action=_AUDIT_ACTIONS.get(func.__name__, f"api.{func.__name__}"),
                target=f"article:{slug}" if slug else "helpcenter",
                via=who.via,
                detail={"method": request.method, "path": request.path[:200]},
            )
        return result

    return wrapped
