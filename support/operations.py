"""Reads for the staff pages: the approval queue's review facts and the operations figures.

Every figure on the operations page is computed here, from rows, and defined in its docstring
(the page's help text says the same). Tickets are those opened in the window (`since` .. `now`,
30 days by default); spend is by UTC calendar day and month, as the budgets count it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.models import Refund, RefundRequest, RefundRequestState
from ledgerly.llm.models import LLMCall
from memory import selectors as memory_selectors
from memory.models import Message, MessageRole
from support.models import (
    AnswerRating,
    AuditEntry,
    DeadLetter,
    Escalation,
    EscalationState,
    KillSwitch,
    Lane,
    RunStep,
    Ticket,
    TicketState,
)

ASSUMED_AFTER = dt.timedelta(hours=24)
DEFAULT_WINDOW = dt.timedelta(days=30)
ZERO = Decimal(0)


# --- queues ---------------------------------------------------------------------------------------
def refund_requests_history(*, limit: int = 200) -> QuerySet[RefundRequest]:
    """Requests that are no longer waiting for staff, latest decision first."""
    return (
        RefundRequest.objects.select_related("customer", "charge__invoice", "decided_by")
        .exclude(state=RefundRequestState.PROPOSED)
        .order_by("-decided_at", "-created_at", "-id")[:limit]
    )


def escalations_inbox(*, include_resolved: bool = False) -> QuerySet[Escalation]:
    """Live escalations (open first, then claimed), oldest first within each."""
    rows = Escalation.objects.select_related("ticket__customer", "claimed_by")
    if not include_resolved:
        rows = rows.filter(state__in=[EscalationState.OPEN, EscalationState.CLAIMED])
    if include_resolved:
        return rows.order_by("-created_at", "-id")
    return rows.order_by("-state", "created_at", "id")


def dead_letters_live() -> QuerySet[DeadLetter]:
    return (
        DeadLetter.objects.select_related("run__ticket__customer")
        .filter(retried_at__isnull=True, discarded_at__isnull=True)
        .order_by("-created_at", "-id")
    )


def dead_letters_done(*, limit: int = 50) -> QuerySet[DeadLetter]:
    return (
        DeadLetter.objects.select_related("run__ticket__customer")
        .filter(Q(retried_at__isnull=False) | Q(discarded_at__isnull=False))
        .order_by("-created_at", "-id")[:limit]
    )


def kill_switches() -> QuerySet[KillSwitch]:
    return KillSwitch.objects.select_related("customer").order_by("scope", "customer__email")


def audit_entries(*, limit: int = 200, target: str | None = None) -> QuerySet[AuditEntry]:
    rows = AuditEntry.objects.select_related("actor")
    if target:
        rows = rows.filter(target=target)
    return rows.order_by("-created_at", "-id")[:limit]


# --- the approval queue's facts -------------------------------------------------------------------
_REASON_CONFIDENCE = re.compile(
    r"\(agent confidence (?P<confidence>[0-9.]+); unsure about: (?P<uncertainty>.*)\)\s*$", re.S
)


@dataclass(frozen=True)
class Stated:
    """What the proposer said of itself: its confidence (0..1, None if it stated none) and its
    point of uncertainty, and where that came from."""

    confidence: float | None
    uncertainty: str
    source: str


def _tickets_of(request: RefundRequest) -> list[Ticket]:
    ids = {t.pk for t in Ticket.objects.filter(refund_request=request)}
    if request.source.startswith("ticket:") and request.source[7:].isdigit():
        ids.add(int(request.source[7:]))
    return list(
        Ticket.objects.select_related("conversation")
        .filter(pk__in=ids, customer_id=request.customer_id)
        .order_by("created_at")
    )


def _stated(request: RefundRequest, steps: list[RunStep], tickets: list[Ticket]) -> Stated:
    for step in reversed(steps):
        for call in step.detail.get("calls") or []:
            if not isinstance(call, dict) or call.get("name") != "propose_refund":
                continue
            args = call.get("input") or {}
            if args.get("charge_ref") == request.charge.ref and "confidence" in args:
                return Stated(
                    confidence=float(args["confidence"]),
                    uncertainty=str(args.get("uncertainty") or "nothing stated"),
                    source=f"the agent's propose_refund call (step {step.index})",
                )
    found = _REASON_CONFIDENCE.search(request.reason)
    if found:
        return Stated(
            confidence=float(found["confidence"]),
            uncertainty=found["uncertainty"],
            source="the agent's stated reason",
        )
    route = tickets[0].route if tickets else {}
    if route.get("confidence") is not None:
        return Stated(
            confidence=float(route["confidence"]),
            uncertainty=(
                "The refund workflow is fixed code (policy applied to the ledger), not a model's "
                f"judgement; the confidence is the router's, that this is a refund request "
                f"({route.get('tier', '?')} tier: {route.get('reason', '')})."
            ),
            source="the router's decision",
        )
    return Stated(confidence=None, uncertainty="nothing stated", source=request.proposed_by)


@dataclass(frozen=True)
class RefundReview:
    """Everything the approval page shows of one request: the facts frozen when it was made
    (evidence), the earlier refunds and requests of the customer, the conversation verbatim, the
    run's steps and what the proposer said of its own confidence."""

    request: RefundRequest
    evidence: dict[str, Any]
    earlier_refunds: list[Refund]
    other_requests: list[RefundRequest]
    tickets: list[Ticket]
    conversation: list[Message]
    steps: list[RunStep]
    stated: Stated
    expired: bool


def refund_request_review(*, refund_request: RefundRequest) -> RefundReview:
    request = refund_request
    tickets = _tickets_of(request)
    steps = list(
        RunStep.objects.filter(run__ticket__in=tickets).order_by("run__ticket_id", "index")[:80]
    )
    conversation = list(
        Message.objects.filter(conversation_id__in=[t.conversation_id for t in tickets]).order_by(
            "conversation_id", "seq"
        )
    )
    earlier = list(
        Refund.objects.select_related("charge")
        .filter(charge__customer_id=request.customer_id, created_at__lte=request.created_at)
        .exclude(refund_request=request)
        .order_by("-created_at")[:20]
    )
    others = [
        r
        for r in billing_selectors.refund_requests_for_customer(customer=request.customer)[:20]
        if r.pk != request.pk
    ]
    return RefundReview(
        request=request,
        evidence=request.evidence or {},
        earlier_refunds=earlier,
        other_requests=others,
        tickets=tickets,
        conversation=conversation,
        steps=steps,
        stated=_stated(request, steps, tickets),
        expired=request.state == RefundRequestState.PROPOSED
        and request.expires_at <= timezone.now(),
    )


# --- operations figures ---------------------------------------------------------------------------
def _rate(part: int | Decimal, whole: int | Decimal) -> float | None:
    return round(float(part) / float(whole), 4) if whole else None


@dataclass(frozen=True)
class Spend:
    """Recorded model spend (the sum of `LLMCall.cost_usd`, failed steps included) in the current
    UTC day and month, against LLM_DAILY_BUDGET_USD and LLM_MONTHLY_BUDGET_USD."""

    today_usd: Decimal
    daily_budget_usd: Decimal
    month_usd: Decimal
    monthly_budget_usd: Decimal

    @property
    def today_fraction(self) -> float | None:
        return _rate(self.today_usd, self.daily_budget_usd)

    @property
    def month_fraction(self) -> float | None:
        return _rate(self.month_usd, self.monthly_budget_usd)


def spend(*, now: dt.datetime | None = None) -> Spend:
    now = (now or timezone.now()).astimezone(dt.UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    totals = LLMCall.objects.filter(created_at__gte=month, created_at__lte=now).aggregate(
        month=Sum("cost_usd"), today=Sum("cost_usd", filter=Q(created_at__gte=day))
    )
    return Spend(
        today_usd=totals["today"] or ZERO,
        daily_budget_usd=Decimal(settings.LLM_DAILY_BUDGET_USD),
        month_usd=totals["month"] or ZERO,
        monthly_budget_usd=Decimal(settings.LLM_MONTHLY_BUDGET_USD),
    )


@dataclass(frozen=True)
class TicketOutcome:
    id: int
    lane: str
    state: str
    involved: bool
    confirmed: bool
    assumed: bool

    @property
    def resolved(self) -> bool:
        return self.confirmed or self.assumed


def ticket_outcomes(*, since: dt.datetime, now: dt.datetime) -> list[TicketOutcome]:
    """Each ticket opened in the window, classified:

    - involved: a person took part: the ticket has an escalation (any state), or a refund
      request of the ticket was decided by staff (an automatic approval is not involvement).
    - confirmed resolution: the customer's latest rating of an answer on the ticket is
      "helpful", or a refund request of the ticket was executed (money went back).
    - assumed resolution: not confirmed, the ticket is answered, its latest rating (if any) is
      not "not helpful", and the conversation's last message is not the customer's and is at
      least 24 hours old (the customer did not write back within 24 h).
    """
    tickets = list(
        Ticket.objects.filter(created_at__gte=since, created_at__lte=now).values(
            "id", "lane", "state", "conversation_id", "refund_request_id"
        )
    )
    ids = [t["id"] for t in tickets]
    escalated = set(
        Escalation.objects.filter(ticket_id__in=ids).values_list("ticket_id", flat=True)
    )
    requests: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_request = {t["refund_request_id"]: t["id"] for t in tickets if t["refund_request_id"]}
    sources = {f"ticket:{i}": i for i in ids}
    for row in RefundRequest.objects.filter(
        Q(pk__in=list(by_request)) | Q(source__in=list(sources))
    ).values("id", "source", "state", "decided_by_id", "auto_approved"):
        owners = {by_request.get(row["id"]), sources.get(row["source"])}
        for owner in owners:
            if owner is not None:
                requests[owner].append(dict(row))
    latest_rating: dict[int, bool] = {}
    for ticket_id, helpful in (
        AnswerRating.objects.filter(ticket_id__in=ids)
        .order_by("ticket_id", "-updated_at", "-id")
        .values_list("ticket_id", "helpful")
    ):
        latest_rating.setdefault(ticket_id, helpful)
    last_seq = dict(
        Message.objects.filter(conversation_id__in=[t["conversation_id"] for t in tickets])
        .values_list("conversation_id")
        .annotate(last=Max("seq"))
        .values_list("conversation_id", "last")
    )
    last_message = {
        m.conversation_id: m
        for m in Message.objects.filter(
            conversation_id__in=list(last_seq),
            seq__in=set(last_seq.values()),
        )
        if last_seq.get(m.conversation_id) == m.seq
    }
    outcomes = []
    for t in tickets:
        own = requests.get(t["id"], [])
        involved = t["id"] in escalated or any(
            r["decided_by_id"] is not None and not r["auto_approved"] for r in own
        )
        rating = latest_rating.get(t["id"])
        confirmed = rating is True or any(r["state"] == RefundRequestState.EXECUTED for r in own)
        last = last_message.get(t["conversation_id"])
        assumed = (
            not confirmed
            and t["state"] == TicketState.ANSWERED
            and rating is not False
            and last is not None
            and last.role != MessageRole.CUSTOMER
            and last.created_at <= now - ASSUMED_AFTER
        )
        outcomes.append(
            TicketOutcome(
                id=t["id"],
                lane=t["lane"] or "",
                state=t["state"],
                involved=involved,
                confirmed=confirmed,
                assumed=assumed,
            )
        )
    return outcomes


@dataclass(frozen=True)
class Rates:
    """Shares of the tickets opened in the window (see `ticket_outcomes` for each class):

    - involvement rate = involved tickets / tickets
    - resolution rate = resolved tickets (confirmed + assumed) / tickets, and its two parts
    - automation rate = resolved tickets nobody was involved in / tickets, and its two parts
    """

    tickets: int
    involved: int
    confirmed: int
    assumed: int
    automated_confirmed: int
    automated_assumed: int

    @property
    def involvement_rate(self) -> float | None:
        return _rate(self.involved, self.tickets)

    @property
    def resolution_rate(self) -> float | None:
        return _rate(self.confirmed + self.assumed, self.tickets)

    @property
    def confirmed_resolution_rate(self) -> float | None:
        return _rate(self.confirmed, self.tickets)

    @property
    def assumed_resolution_rate(self) -> float | None:
        return _rate(self.assumed, self.tickets)

    @property
    def automation_rate(self) -> float | None:
        return _rate(self.automated_confirmed + self.automated_assumed, self.tickets)

    @property
    def confirmed_automation_rate(self) -> float | None:
        return _rate(self.automated_confirmed, self.tickets)

    @property
    def assumed_automation_rate(self) -> float | None:
        return _rate(self.automated_assumed, self.tickets)


def rates_of(outcomes: list[TicketOutcome]) -> Rates:
    return Rates(
        tickets=len(outcomes),
        involved=sum(o.involved for o in outcomes),
        confirmed=sum(o.confirmed for o in outcomes),
        assumed=sum(o.assumed for o in outcomes),
        automated_confirmed=sum(o.confirmed and not o.involved for o in outcomes),
        automated_assumed=sum(o.assumed and not o.involved for o in outcomes),
    )


@dataclass(frozen=True)
class LaneCost:
    """Model cost of the window's tickets of one lane, for one model (`model` "all": every
    model, and every ticket of the lane, with or without a model call; "static": the holding
    answer). cost per ticket = cost / tickets; cost per resolution = cost / resolved tickets
    (None when none was resolved). For one model, `tickets` are the lane's tickets that model
    served at least one call of."""

    lane: str
    model: str
    cost_usd: Decimal
    tickets: int
    resolved: int

    @property
    def per_ticket_usd(self) -> Decimal | None:
        return (
            (self.cost_usd / self.tickets).quantize(Decimal("0.000001")) if self.tickets else None
        )

    @property
    def per_resolution_usd(self) -> Decimal | None:
        if not self.resolved:
            return None
        return (self.cost_usd / self.resolved).quantize(Decimal("0.000001"))


def lane_costs(*, outcomes: list[TicketOutcome]) -> list[LaneCost]:
    by_id = {str(o.id): o for o in outcomes}
    cost: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    served: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ticket_id, model, total in (
        LLMCall.objects.filter(ticket_id__in=list(by_id))
        # A shadow release's calls carry the live ticket's id but answered nobody: they count in
        # spend, not in what a ticket or a resolution cost (support.runner's "shadow:" ref).
        .exclude(customer_id__startswith="shadow:")
        .values_list("ticket_id", "model")
        .annotate(total=Sum("cost_usd"))
        .values_list("ticket_id", "model", "total")
    ):
        lane = by_id[ticket_id].lane
        cost[(lane, model or "static")] += total or ZERO
        served[(lane, model or "static")].add(ticket_id)
    rows = []
    lanes = sorted({o.lane for o in outcomes})
    for lane in lanes:
        of_lane = [o for o in outcomes if o.lane == lane]
        lane_cost = sum((v for (ln, _), v in cost.items() if ln == lane), ZERO)
        rows.append(
            LaneCost(
                lane=lane,
                model="all",
                cost_usd=lane_cost,
                tickets=len(of_lane),
                resolved=sum(o.resolved for o in of_lane),
            )
        )
        for (ln, model), ids in sorted(served.items()):
            if ln != lane:
                continue
            rows.append(
                LaneCost(
                    lane=lane,
                    model=model,
                    cost_usd=cost[(ln, model)],
                    tickets=len(ids),
                    resolved=sum(by_id[i].resolved for i in ids),
                )
            )
    return rows


@dataclass(frozen=True)
class CacheRates:
    """semantic hit rate = FAQ answer-cache lookups that hit / lookups (memory's
    `semantic_cache_stats`); prompt cache hit rate = cache-read input tokens / all input tokens
    (uncached + cache writes + cache reads) of the window's successful model calls; calls with
    a cache read / those calls."""

    semantic_lookups: int
    semantic_hits: int
    prompt_input_tokens: int
    prompt_cache_read_tokens: int
    prompt_cache_write_tokens: int
    calls: int
    calls_with_cache_read: int

    @property
    def semantic_hit_rate(self) -> float | None:
        return _rate(self.semantic_hits, self.semantic_lookups)

    @property
    def prompt_cache_hit_rate(self) -> float | None:
        whole = self.prompt_input_tokens + self.prompt_cache_read_tokens
        return _rate(self.prompt_cache_read_tokens, whole + self.prompt_cache_write_tokens)

    @property
    def calls_cache_read_rate(self) -> float | None:
        return _rate(self.calls_with_cache_read, self.calls)


def cache_rates(*, since: dt.datetime, now: dt.datetime) -> CacheRates:
    semantic = memory_selectors.semantic_cache_stats(since=since)
    totals = LLMCall.objects.filter(
        created_at__gte=since, created_at__lte=now, outcome=LLMCall.Outcome.OK
    ).aggregate(
        input=Sum("input_tokens"),
        read=Sum("cache_read_input_tokens"),
        write=Sum("cache_creation_input_tokens"),
        calls=Count("id"),
        with_read=Count("id", filter=Q(cache_read_input_tokens__gt=0)),
    )
    return CacheRates(
        semantic_lookups=semantic.lookups,
        semantic_hits=semantic.hits,
        prompt_input_tokens=totals["input"] or 0,
        prompt_cache_read_tokens=totals["read"] or 0,
        prompt_cache_write_tokens=totals["write"] or 0,
        calls=totals["calls"] or 0,
        calls_with_cache_read=totals["with_read"] or 0,
    )


@dataclass(frozen=True)
class ApprovalSegment:
    """Staff decisions on refund requests made in the window for one plan and billing interval
    (the plan frozen in the request's evidence): approval rate = approved / (approved +
    rejected), where approved counts requests staff approved whatever happened next (approved,
    executed, failed). Automatic approvals are left out (no one decided); expired requests
    (nobody decided in time) and those still waiting are counted beside it."""

    plan: str
    interval: str
    approved: int
    rejected: int
    expired: int
    waiting: int

    @property
    def approval_rate(self) -> float | None:
        return _rate(self.approved, self.approved + self.rejected)


_APPROVED = {RefundRequestState.APPROVED, RefundRequestState.EXECUTED, RefundRequestState.FAILED}


def approval_segments(*, since: dt.datetime, now: dt.datetime) -> list[ApprovalSegment]:
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for evidence, state in RefundRequest.objects.filter(
        created_at__gte=since, created_at__lte=now, auto_approved=False
    ).values_list("evidence", "state"):
        plan = (evidence or {}).get("plan") or {}
        segment = (str(plan.get("code") or "none"), str(plan.get("interval") or "none"))
        if state in _APPROVED:
            counts[segment]["approved"] += 1
        elif state == RefundRequestState.REJECTED:
            counts[segment]["rejected"] += 1
        elif state == RefundRequestState.EXPIRED:
            counts[segment]["expired"] += 1
        elif state == RefundRequestState.PROPOSED:
            counts[segment]["waiting"] += 1
    return [
        ApprovalSegment(
            plan=plan,
            interval=interval,
            approved=c["approved"],
            rejected=c["rejected"],
            expired=c["expired"],
            waiting=c["waiting"],
        )
        for (plan, interval), c in sorted(counts.items())
    ]


@dataclass(frozen=True)
class LaneRatings:
    """Answer ratings given in the window, per lane the rated answer came from: helpful share =
    helpful / (helpful + not helpful)."""

    lane: str
    helpful: int
    not_helpful: int

    @property
    def helpful_share(self) -> float | None:
        return _rate(self.helpful, self.helpful + self.not_helpful)


def ratings_by_lane(*, since: dt.datetime, now: dt.datetime) -> list[LaneRatings]:
    rows = (
        AnswerRating.objects.filter(updated_at__gte=since, updated_at__lte=now)
        .values("lane")
        .annotate(
            n_helpful=Count("id", filter=Q(helpful=True)),
            n_unhelpful=Count("id", filter=Q(helpful=False)),
        )
        .order_by("lane")
    )
    return [
        LaneRatings(lane=r["lane"] or "", helpful=r["n_helpful"], not_helpful=r["n_unhelpful"])
        for r in rows
    ]


@dataclass(frozen=True)
class Operations:
    since: dt.datetime
    now: dt.datetime
    spend: Spend
    tickets_by_state: dict[str, int]
    rates: Rates
    rates_by_lane: dict[str, Rates]
    lane_costs: list[LaneCost]
    cache: CacheRates
    approvals: list[ApprovalSegment]
    ratings: list[LaneRatings]
    lanes: dict[str, str] = field(default_factory=lambda: dict(Lane.choices))


def operations_figures(
    *, now: dt.datetime | None = None, window: dt.timedelta = DEFAULT_WINDOW
) -> Operations:
    """All the figures of the operations page, for the tickets opened in the last `window`."""
    now = now or timezone.now()
    since = now - window
    outcomes = ticket_outcomes(since=since, now=now)
    states = Counter(o.state for o in outcomes)
    by_lane: dict[str, list[TicketOutcome]] = defaultdict(list)
    for o in outcomes:
        by_lane[o.lane].append(o)
    return Operations(
        since=since,
        now=now,
        spend=spend(now=now),
        tickets_by_state={state: states.get(state, 0) for state in TicketState.values},
        rates=rates_of(outcomes),
        rates_by_lane={lane: rates_of(rows) for lane, rows in sorted(by_lane.items())},
        lane_costs=lane_costs(outcomes=outcomes),
        cache=cache_rates(since=since, now=now),
        approvals=approval_segments(since=since, now=now),
        ratings=ratings_by_lane(since=since, now=now),
    )
