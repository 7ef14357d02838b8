"""The figures a real ticket leaves in this process's metrics (what /metrics sums per machine)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from billing.models import RefundRequest
from ledgerly.llm import CallContext
from ledgerly.llm.models import LLMCall
from support import runner
from support.models import GuardIntervention, Run, RunStep
from support.steps import Reply, StepEnv
from tests.support.conftest import ask
from tests.support.test_guard import CLAIM, EMMA

pytestmark = pytest.mark.usefixtures("demo_world")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def total(name: str, **match: str) -> float:
    """The sum of a family's samples whose labels include `match`."""
    found = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and match.items() <= sample.labels.items():
                found += sample.value
    return found


def test_an_agent_ticket_counts_its_model_and_tool_calls_refund_and_end_state(sim_gateway):
    before = {
        "tools": total("ledgerly_tool_calls_total", outcome="ok"),
        "calls": total("ledgerly_llm_calls_total", lane="agent", outcome="ok"),
        "tokens": total("ledgerly_llm_tokens_total", lane="agent", kind="output"),
        "cost": total("ledgerly_llm_cost_usd_total", lane="agent"),
        "auto": total("ledgerly_refund_decisions_total", decision="auto_approved"),
        "finished": total("ledgerly_runs_finished_total", lane="agent"),
        "steps": total("ledgerly_run_steps_sum", lane="agent"),
    }
    ticket = ask(
        "ben.okafor@example.com",
        "refund the double charge please, and also how many invoices can I send per month on "
        "my plan?",
    )
    calls = LLMCall.objects.filter(ticket_id=str(ticket.pk), outcome="ok")
    agent_calls = [c for c in calls if c.purpose.startswith("agent")]
    steps = RunStep.objects.filter(run__ticket=ticket).count()

    assert total("ledgerly_tool_calls_total", outcome="ok") - before["tools"] >= 2
    assert total("ledgerly_llm_calls_total", lane="agent", outcome="ok") - before["calls"] == len(
        agent_calls
    )
    assert total("ledgerly_llm_tokens_total", lane="agent", kind="output") - before[
        "tokens"
    ] == sum(c.output_tokens for c in agent_calls)
    assert total("ledgerly_llm_cost_usd_total", lane="agent") - before["cost"] == pytest.approx(
        float(sum(c.cost_usd for c in agent_calls))
    )
    (refund,) = RefundRequest.objects.filter(source=f"ticket:{ticket.pk}")
    assert refund.auto_approved
    assert total("ledgerly_refund_decisions_total", decision="auto_approved") - before["auto"] == 1
    assert total("ledgerly_runs_finished_total", lane="agent") - before["finished"] == 1
    assert value("ledgerly_runs_finished_total", lane="agent", outcome=ticket.state) >= 1
    assert total("ledgerly_run_steps_sum", lane="agent") - before["steps"] == steps


def test_guard_interventions_are_counted_by_lane_and_action(sim_gateway):
    ticket = ask(EMMA, "How long does a refund take to show up on my card?")
    run = Run.objects.get(ticket=ticket)
    env = StepEnv(
        run=run,
        ticket=ticket,
        customer=ticket.customer,
        checkpoint={},
        message="",
        ctx=CallContext.starting_now(
            run_id=f"run-{run.pk}",
            ticket_id=str(ticket.pk),
            customer_ref=ticket.customer.ref,
            seconds=30,
        ),
    )
    before = {
        action: value("ledgerly_guard_interventions_total", lane="agent", action=action)
        for action in ("regenerated", "replaced")
    }
    runner._guarded(env, "agent", Reply(f"{CLAIM}."), None)
    recorded = GuardIntervention.objects.filter(ticket=ticket, lane="agent")
    counts = {
        action: value("ledgerly_guard_interventions_total", lane="agent", action=action)
        - before[action]
        for action in ("regenerated", "replaced")
    }
    assert recorded.count() >= 1
    assert counts == {
        action: float(recorded.filter(action=action).count())
        for action in ("regenerated", "replaced")
    }


def test_the_faq_answer_cache_counts_a_miss_then_a_hit(sim_gateway, settings):
    settings.SUPPORT_SEMANTIC_CACHE = True
    question = "How long does a refund take to show up on my card?"
    misses = value("ledgerly_cache_requests_total", cache="semantic", result="miss")
    hits = value("ledgerly_cache_requests_total", cache="semantic", result="hit")
    answered = value("ledgerly_tickets_terminal_total", state="answered")
    ask("emma.schulz@example.com", question)
    ask("ana.lopez@example.com", question)
    assert value("ledgerly_cache_requests_total", cache="semantic", result="miss") - misses == 1
    assert value("ledgerly_cache_requests_total", cache="semantic", result="hit") - hits == 1
    assert value("ledgerly_tickets_terminal_total", state="answered") - answered == 2
