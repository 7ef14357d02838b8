"""The agent's hard caps against a model that never stops asking for tools: each cap ends the run
in an escalation with a reply (never silence, never a loop); malformed tool input and results
that break their schema; and every model call of a ticket carries its run and customer."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from django.utils import timezone

from billing.demo import demo_customer_reset
from ledgerly.llm.models import LLMCall
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from support import services, tools
from support.lanes import agent
from support.models import Escalation, Run, RunStatus, RunStep, Ticket, TicketState
from tests.support.conftest import ask, customer, drive

ANA = "ana.lopez@example.com"
JONAS = "jonas.berg@example.com"
# Routed to the agent by the rules (an account look-up), so no model decides the lane.
AGENT_TEXT = "Why was my card declined and when will you retry the payment?"
PARTIAL = "Still looking into your account."


@pytest.fixture
def seeded(seeded_world: int) -> int:
    """The demo world, seeded once a module and flushed after it (see tests/support/conftest)."""
    return seeded_world


@pytest.fixture
def world(seeded, redis_client) -> Iterator[None]:
    yield
    for email in (ANA, JONAS):
        Ticket.objects.filter(customer__email=email).update(refund_request=None)
        demo_customer_reset(email=email)


pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("world")]


class NeverStops(httpx2.BaseTransport):
    """A model that answers every agent turn with tool calls (`script` gives each turn's calls,
    the last one repeating forever); other calls (router, summary, redraft) are the simulator.
    It keeps the agent requests it saw."""

    def __init__(self, *script: list[tuple[str, Any]]) -> None:
        self.script = list(script) or [[("lookup_customer", {})]]
        self.inner = SimulatorTransport(SimulatorConfig(retry_after_s=0.01))
        self.agent_requests: list[dict[str, Any]] = []
        self.ids = itertools.count(1)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.read() or b"{}")
        if not body.get("tools"):
            return self.inner.handle_request(request)
        self.agent_requests.append(body)
        calls = self.script[min(len(self.agent_requests), len(self.script)) - 1]
        content: list[dict[str, Any]] = [{"type": "text", "text": PARTIAL}]
        content += [
            {"type": "tool_use", "id": f"toolu_{next(self.ids):04d}", "name": name, "input": args}
            for name, args in calls
        ]
        message = {
            "id": f"msg_{len(self.agent_requests)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 1500, "output_tokens": 120},
        }
        return httpx2.Response(200, json=message, request=request)


def tools_called(escalation: Escalation) -> list[str]:
    """The tool calls in the steps staff see, in order."""
    return [step["tool_call"] for step in escalation.facts["steps"] if "tool_call" in step]


def agent_calls(ticket: Ticket) -> int:
    return LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="agent").count()


def assert_escalated_with_a_reply(ticket: Ticket, reason: str) -> None:
    assert ticket.state == TicketState.ESCALATED
    assert Escalation.objects.get(ticket=ticket).reason == reason
    assert ticket.reply.endswith(agent.CAPPED_TAIL)
    run = Run.objects.get(ticket=ticket)
    assert run.status == RunStatus.IDLE
    # No loop: driving the run again takes no further step.
    steps = RunStep.objects.filter(run=run).count()
    drive(ticket)
    assert RunStep.objects.filter(run=run).count() == steps


@pytest.mark.parametrize("turns", [8, 3])
def test_the_turn_cap_ends_a_model_that_never_stops_in_an_escalation(sim_gateway, settings, turns):
    settings.SUPPORT_AGENT_MAX_TURNS = turns
    sim_gateway(transport=NeverStops())
    ticket = ask(ANA, AGENT_TEXT)

    assert ticket.lane == "agent"
    assert_escalated_with_a_reply(ticket, "cap_turns")
    assert ticket.reply.startswith(PARTIAL)  # the best partial answer, then the hand-over
    assert agent_calls(ticket) == turns
    assert Run.objects.get(ticket=ticket).turns == turns
    escalation = Escalation.objects.get(ticket=ticket)
    assert tools_called(escalation) == ["lookup_customer"] * turns


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("SUPPORT_AGENT_MAX_COST_USD", Decimal("0.000001"), "cap_cost"),
        ("SUPPORT_AGENT_MAX_TOKENS", 1000, "cap_tokens"),
    ],
)
def test_the_cost_and_token_caps_stop_the_loop_after_the_first_turn(
    sim_gateway, settings, setting, value, reason
):
    setattr(settings, setting, value)
    sim_gateway(transport=NeverStops())
    ticket = ask(ANA, AGENT_TEXT)

    assert_escalated_with_a_reply(ticket, reason)
    assert agent_calls(ticket) == 1


def test_the_wall_clock_cap_ends_a_run_whose_deadline_passed_mid_loop(sim_gateway):
    sim_gateway(transport=NeverStops())
    ticket = services.ticket_submit(customer=customer(ANA), text=AGENT_TEXT)
    drive(ticket, max_steps=4)  # routed, then a few turns and tool batches
    run = Run.objects.get(ticket=ticket)
    assert run.status == RunStatus.READY
    past = (timezone.now() - dt.timedelta(seconds=1)).isoformat()
    Run.objects.filter(pk=run.pk).update(checkpoint={**run.checkpoint, "deadline_at": past})
    calls_before = agent_calls(ticket)

    ticket = drive(ticket)

    assert_escalated_with_a_reply(ticket, "cap_wall_clock")
    assert agent_calls(ticket) == calls_before  # no model call after the deadline


def test_a_tiny_wall_clock_budget_escalates_before_any_model_call(sim_gateway, settings):
    settings.SUPPORT_RUN_WALL_SECONDS = 0
    sim_gateway(transport=NeverStops())
    ticket = ask(ANA, AGENT_TEXT)

    assert_escalated_with_a_reply(ticket, "cap_wall_clock")
    assert not LLMCall.objects.filter(ticket_id=str(ticket.pk)).exists()


def test_the_tool_call_anomaly_limit_escalates(sim_gateway, settings):
    settings.SUPPORT_TOOL_CALL_LIMIT = 3
    sim_gateway(transport=NeverStops([("lookup_customer", {}), ("list_invoices", {})]))
    ticket = ask(ANA, AGENT_TEXT)

    assert_escalated_with_a_reply(ticket, "cap_tool_calls")
    kinds = list(RunStep.objects.filter(run__ticket=ticket).values_list("kind", flat=True))
    assert kinds.count("agent_tools") == 1  # the second batch (4 calls in all) never ran
    assert agent_calls(ticket) == 2


@pytest.mark.parametrize(
    "broken",
    [
        {"charges": [{"ref": "ch_demo_ana_2", "amount": "lots of money"}]},
        {"charges": "none"},
        {"rows": []},
    ],
)
def test_a_tool_result_that_breaks_its_schema_escalates(sim_gateway, monkeypatch, broken):
    monkeypatch.setitem(tools.IMPLEMENTATIONS, "list_charges", lambda scope, args: broken)
    model = NeverStops([("list_charges", {})])
    sim_gateway(transport=model)
    ticket = ask(ANA, AGENT_TEXT)

    assert_escalated_with_a_reply(ticket, "tool_schema")
    assert "list_charges returned a result that breaks its schema" in (
        Escalation.objects.get(ticket=ticket).detail
    )
    assert len(model.agent_requests) == 1  # the model never saw the broken result


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        block
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


MALFORMED = [
    ("search_help_center", {"query": 5}),
    ("propose_refund", {"charge_ref": "ch_demo_ana_2"}),  # required fields missing
    ("list_charges", {"invoice_number": "not-an-invoice", "extra": True}),
]


@pytest.mark.parametrize(("name", "args"), MALFORMED)
def test_malformed_tool_input_gets_an_error_result(sim_gateway, settings, name, args):
    settings.SUPPORT_AGENT_MAX_TURNS = 2
    model = NeverStops([(name, args)], [("lookup_customer", {})])
    sim_gateway(transport=model)
    ticket = ask(ANA, AGENT_TEXT)

    [result] = tool_results(model.agent_requests[1])
    assert result["is_error"] is True
    assert "invalid input" in result["content"]
    # The run went on to the next turn: an input error is the model's to fix, not a hand-over.
    assert len(model.agent_requests) == 2
    assert Escalation.objects.get(ticket=ticket).reason == "cap_turns"


@pytest.mark.parametrize(("name", "args"), MALFORMED)
def test_repeated_malformed_tool_input_ends_in_an_escalation(sim_gateway, name, args):
    model = NeverStops([(name, args)])
    sim_gateway(transport=model)
    ticket = ask(ANA, AGENT_TEXT)

    assert_escalated_with_a_reply(ticket, "cap_tool_input")
    assert agent_calls(ticket) == 3
    assert all(r["is_error"] for body in model.agent_requests[1:] for r in tool_results(body))
    assert not RunStep.objects.filter(run__ticket=ticket, kind="agent_answer").exists()


def test_every_model_call_of_a_ticket_carries_its_run_and_customer(sim_gateway, settings):
    # A short window so the agent's context summarises the earlier turns.
    settings.CONTEXT_RECENT_TURNS = 2
    settings.CONTEXT_TOKEN_BUDGET = 400
    settings.SUPPORT_AGENT_MAX_TURNS = 2
    sim_gateway(transport=NeverStops())
    started = timezone.now()
    ticket = ask(
        JONAS,
        "How do I download an invoice as PDF? I need last month's for my accountant, who asks "
        "for a PDF of every invoice with the VAT shown separately.",
        "Can I pay by SEPA direct debit? My bank is in Germany and I would rather not use a "
        "credit card for the subscription any more.",
        "Do you accept American Express cards too, for the colleagues who travel a lot?",
        AGENT_TEXT,
    )
    run = Run.objects.get(ticket=ticket)
    calls = LLMCall.objects.filter(created_at__gte=started)

    purposes = set(calls.values_list("purpose", flat=True))
    assert {"summarise", "agent", "faq_answer"} <= purposes
    assert set(calls.values_list("run_id", flat=True)) == {f"run-{run.pk}"}
    assert set(calls.values_list("ticket_id", flat=True)) == {str(ticket.pk)}
    assert set(calls.values_list("customer_id", flat=True)) == {ticket.customer.ref}


def test_a_follow_up_on_a_capped_ticket_stays_with_staff(sim_gateway, settings):
    settings.SUPPORT_AGENT_MAX_TURNS = 2
    sim_gateway(transport=NeverStops())
    ticket = ask(ANA, AGENT_TEXT, "Hello? Is anyone looking at this?")

    assert Escalation.objects.get(ticket=ticket).state == "open"
    assert ticket.state == TicketState.ESCALATED
