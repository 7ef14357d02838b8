"""The operations figures on a small dataset whose every number is worked out by hand here:
rates with confirmed and assumed resolutions apart, cost per ticket and per resolution by lane
and model, cache hit rates, tickets by state, spend against budget, approval rate per plan and
interval, ratings by lane."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from billing.models import RefundRequest, RefundRequestState
from ledgerly.llm.models import LLMCall
from memory.models import Message, SemanticCacheLookup
from support import operations
from support.models import AnswerRating, Escalation, Ticket, TicketState
from tests.billing import factories as billing_factories
from tests.staff import factories

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 15, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _ticket(*, lane: str, state: str = TicketState.ANSWERED, last_at: dt.datetime) -> Ticket:
    made = factories.ticket(lane=lane, state=state)
    Ticket.objects.filter(pk=made.pk).update(created_at=last_at - HOUR)
    Message.objects.filter(conversation=made.conversation).update(created_at=last_at)
    return made


def _call(ticket: Ticket | None, model: str, cost: str, **fields: Any) -> LLMCall:
    call = LLMCall.objects.create(
        ticket_id=str(ticket.pk) if ticket else "",
        purpose="test",
        tier="small",
        model=model,
        prompt_name="test",
        prompt_version=1,
        prompt_hash="x",
        cost_usd=Decimal(cost),
        outcome=fields.pop("outcome", LLMCall.Outcome.OK),
        **fields,
    )
    LLMCall.objects.filter(pk=call.pk).update(created_at=NOW - HOUR)
    return call


def _at(at: dt.datetime, ticket: Ticket | None, model: str, cost: str, **kw: Any) -> None:
    call = _call(ticket, model, cost, **kw)
    LLMCall.objects.filter(pk=call.pk).update(created_at=at)


def _rate(ticket: Ticket, seq: int, helpful: bool, lane: str, at: dt.datetime) -> None:
    rating = AnswerRating.objects.create(ticket=ticket, message_seq=seq, helpful=helpful, lane=lane)
    AnswerRating.objects.filter(pk=rating.pk).update(created_at=at, updated_at=at)


def _request(plan: str, interval: str, state: str, *, auto: bool = False) -> RefundRequest:
    charge = billing_factories.charge(charged_at=NOW - 2 * HOUR, code=plan, interval=interval)
    made = RefundRequest.objects.create(
        customer=charge.customer,
        charge=charge,
        amount=charge.amount,
        currency=charge.currency,
        clause="test",
        reason="test",
        evidence={"plan": {"code": plan, "interval": interval}},
        state=state,
        requires_approval=not auto,
        auto_approved=auto,
        proposed_by="test",
        decided_at=NOW - HOUR if state != RefundRequestState.PROPOSED else None,
        expires_at=NOW + 24 * HOUR,
        idempotency_key=f"k-{charge.ref}",
    )
    RefundRequest.objects.filter(pk=made.pk).update(created_at=NOW - 2 * HOUR)
    return made


@pytest.fixture
def dataset(settings, approver):
    settings.LLM_DAILY_BUDGET_USD = Decimal("2.00")
    settings.LLM_MONTHLY_BUDGET_USD = Decimal("10.00")
    old = NOW - 30 * HOUR  # the customer has been quiet for more than 24 h
    t1 = _ticket(lane="faq", last_at=old)  # rated not helpful, then helpful: confirmed
    t2 = _ticket(lane="faq", last_at=old)  # quiet 30 h, unrated: assumed
    t3 = _ticket(lane="faq", last_at=NOW - 2 * HOUR)  # answered 2 h ago: not yet assumed
    t4 = _ticket(lane="refund", last_at=old)  # staff-approved refund executed: confirmed, involved
    t5 = _ticket(lane="agent", state=TicketState.ESCALATED, last_at=old)  # involved, unresolved
    t6 = _ticket(lane="faq", last_at=old)  # rated not helpful: neither
    before = _ticket(lane="faq", last_at=NOW - 40 * 24 * HOUR)  # outside the 30-day window

    _rate(t1, 1, False, "faq", NOW - 5 * HOUR)
    _rate(t1, 2, True, "faq", NOW - 4 * HOUR)
    _rate(t6, 2, False, "faq", NOW - 4 * HOUR)
    _rate(t4, 2, True, "refund", NOW - 4 * HOUR)
    Escalation.objects.create(ticket=t5, reason="cap", detail="ran out of turns")

    executed = _request("growth", "monthly", RefundRequestState.EXECUTED)
    RefundRequest.objects.filter(pk=executed.pk).update(decided_by=approver)
    Ticket.objects.filter(pk=t4.pk).update(refund_request=executed)
    _request("growth", "monthly", RefundRequestState.APPROVED)
    _request("growth", "monthly", RefundRequestState.REJECTED)
    _request("growth", "monthly", RefundRequestState.EXECUTED, auto=True)  # no one decided
    _request("starter", "monthly", RefundRequestState.REJECTED)
    _request("starter", "monthly", RefundRequestState.EXPIRED)
    _request("scale", "annual", RefundRequestState.PROPOSED)

    _call(t1, "m-small", "0.010", input_tokens=100, cache_read_input_tokens=300)
    _call(t2, "m-small", "0.020", input_tokens=200)
    _call(t4, "m-small", "0.005", input_tokens=50)
    _call(
        t5,
        "m-large",
        "0.300",
        input_tokens=1000,
        cache_read_input_tokens=3000,
        cache_creation_input_tokens=1000,
    )
    _call(t5, "m-small", "0.010", input_tokens=100)
    _call(t5, "m-large", "0.001", input_tokens=999, outcome=LLMCall.Outcome.FAILED)
    _at(NOW - 13 * 24 * HOUR, None, "m-small", "1.000", outcome=LLMCall.Outcome.FAILED)  # Dec 2
    _at(NOW - 15 * 24 * HOUR, None, "m-small", "5.000", outcome=LLMCall.Outcome.FAILED)  # Nov 30
    _at(NOW - 40 * 24 * HOUR, before, "m-small", "0.500", input_tokens=7777)

    for hit in (True, False, False, False):
        lookup = SemanticCacheLookup.objects.create(
            question="q",
            hit=hit,
            similarity=0.9,
            reason="hit" if hit else "below_threshold",
            prompt_version="p1",
            kb_version=1,
        )
        SemanticCacheLookup.objects.filter(pk=lookup.pk).update(created_at=NOW - HOUR)
    return {"t1": t1, "t2": t2, "t3": t3, "t4": t4, "t5": t5, "t6": t6}


def test_rates_keep_confirmed_and_assumed_resolutions_apart(dataset):
    f = operations.operations_figures(now=NOW)
    r = f.rates
    assert (r.tickets, r.involved, r.confirmed, r.assumed) == (6, 2, 2, 1)
    assert (r.automated_confirmed, r.automated_assumed) == (1, 1)
    assert r.involvement_rate == round(2 / 6, 4)
    assert (r.resolution_rate, r.confirmed_resolution_rate) == (0.5, round(2 / 6, 4))
    assert r.assumed_resolution_rate == round(1 / 6, 4)
    assert r.automation_rate == round(2 / 6, 4)
    assert f.rates_by_lane["faq"].tickets == 4
    assert f.rates_by_lane["faq"].resolution_rate == 0.5
    outcome = {o.id: o for o in operations.ticket_outcomes(since=NOW - 30 * 24 * HOUR, now=NOW)}
    assert outcome[dataset["t3"].pk].resolved is False  # only 2 h quiet
    assert outcome[dataset["t6"].pk].resolved is False  # said not helpful
    assert outcome[dataset["t4"].pk].involved
    assert outcome[dataset["t4"].pk].confirmed


def test_cost_per_ticket_and_per_resolution_by_lane_and_model(dataset):
    rows = {(c.lane, c.model): c for c in operations.operations_figures(now=NOW).lane_costs}
    assert set(rows) == {
        ("agent", "all"),
        ("agent", "m-large"),
        ("agent", "m-small"),
        ("faq", "all"),
        ("faq", "m-small"),
        ("refund", "all"),
        ("refund", "m-small"),
    }
    faq = rows[("faq", "all")]
    assert (faq.cost_usd, faq.tickets, faq.resolved) == (Decimal("0.030"), 4, 2)
    assert (faq.per_ticket_usd, faq.per_resolution_usd) == (Decimal("0.0075"), Decimal("0.015"))
    assert rows[("faq", "m-small")].tickets == 2
    assert rows[("faq", "m-small")].per_ticket_usd == Decimal("0.015")
    agent = rows[("agent", "all")]
    assert (agent.cost_usd, agent.per_ticket_usd, agent.per_resolution_usd) == (
        Decimal("0.311"),
        Decimal("0.311"),
        None,
    )
    assert rows[("agent", "m-large")].cost_usd == Decimal("0.301")  # the failed attempt too
    assert rows[("refund", "all")].per_resolution_usd == Decimal("0.005")


def test_cache_rates(dataset):
    c = operations.operations_figures(now=NOW).cache
    assert (c.semantic_lookups, c.semantic_hits, c.semantic_hit_rate) == (4, 1, 0.25)
    # successful calls in the window: input 100+200+50+1000+100, read 300+3000, written 1000
    assert (c.prompt_input_tokens, c.prompt_cache_read_tokens) == (1450, 3300)
    assert c.prompt_cache_hit_rate == round(3300 / 5750, 4)
    assert (c.calls, c.calls_with_cache_read, c.calls_cache_read_rate) == (5, 2, 0.4)


def test_tickets_by_state(dataset):
    states = operations.operations_figures(now=NOW).tickets_by_state
    assert states["answered"] == 5
    assert states["escalated"] == 1
    assert sum(states.values()) == 6
    assert set(states) == set(TicketState.values)


def test_spend_against_budget_by_utc_day_and_month(dataset):
    s = operations.operations_figures(now=NOW).spend
    assert s.today_usd == Decimal("0.346")
    assert s.month_usd == Decimal("1.346")  # Dec 2 counts, Nov 30 does not
    assert (s.today_fraction, s.month_fraction) == (0.173, 0.1346)


def test_a_shadow_releases_calls_count_in_spend_but_not_in_cost_per_ticket(dataset):
    _call(dataset["t1"], "m-small", "0.500", customer_id="shadow:cus_x")
    figures = operations.operations_figures(now=NOW)
    faq = {(c.lane, c.model): c for c in figures.lane_costs}[("faq", "all")]
    assert faq.cost_usd == Decimal("0.030")
    assert figures.spend.today_usd == Decimal("0.846")


def test_approval_rate_per_plan_and_interval(dataset):
    segments = {(a.plan, a.interval): a for a in operations.operations_figures(now=NOW).approvals}
    growth = segments[("growth", "monthly")]
    assert (growth.approved, growth.rejected, growth.approval_rate) == (2, 1, 0.6667)
    starter = segments[("starter", "monthly")]
    assert (starter.approved, starter.rejected, starter.expired, starter.approval_rate) == (
        0,
        1,
        1,
        0.0,
    )
    scale = segments[("scale", "annual")]
    assert (scale.waiting, scale.approval_rate) == (1, None)


def test_ratings_by_lane(dataset):
    ratings = {x.lane: x for x in operations.operations_figures(now=NOW).ratings}
    assert (ratings["faq"].helpful, ratings["faq"].not_helpful) == (1, 2)
    assert ratings["faq"].helpful_share == round(1 / 3, 4)
    assert ratings["refund"].helpful_share == 1.0


def test_the_page_shows_the_figures_beside_accessible_charts(viewer_client):
    made = factories.ticket(lane="faq")
    AnswerRating.objects.create(ticket=made, message_seq=2, helpful=True, lane="faq")
    _call(made, "m-small", "0.250", input_tokens=10)
    LLMCall.objects.update(created_at=timezone.now())
    body = viewer_client.get("/staff/operations/").content.decode()
    assert 'data-testid="confirmed-resolution-rate">100.0%<' in body
    assert 'data-testid="tickets-state-answered">1<' in body
    assert 'data-testid="cost-per-ticket-faq-all">$0.2500<' in body
    assert 'data-testid="spend-today">$0.2500<' in body
    assert 'data-testid="helpful-share-faq">100.0%<' in body
    for chart in ("spend", "states", "rates", "cost", "cache", "approvals", "ratings"):
        assert f'aria-labelledby="chart-{chart}-title chart-{chart}-desc"' in body
        assert f'<title id="chart-{chart}-title">' in body
