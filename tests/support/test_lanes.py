"""The three lanes end to end in one process: real Postgres, Redis, the simulator as the model."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import Refund, RefundRequest, RefundRequestState
from ledgerly.llm.models import LLMCall
from memory.models import Message
from support.models import Escalation, RunStep, TicketState
from tests.support.conftest import ask

pytestmark = pytest.mark.usefixtures("demo_world", "sim_gateway")


def requests_of(ticket) -> list[RefundRequest]:
    return list(RefundRequest.objects.filter(source=f"ticket:{ticket.pk}"))


def test_faq_question_is_answered_from_the_help_center_with_its_sources():
    ticket = ask("emma.schulz@example.com", "How long does a refund take to show up on my card?")
    assert ticket.first_lane == "faq"
    assert ticket.state == TicketState.ANSWERED
    assert "business days" in ticket.reply
    assert ticket.sources
    assert all(s["slug"] and s["title"] for s in ticket.sources)
    assert "[" not in ticket.reply  # citation markers become sources, not text
    assert requests_of(ticket) == []


def test_a_question_the_help_center_does_not_answer_is_not_guessed():
    ticket = ask("emma.schulz@example.com", "Do you have an office in Singapore I could visit?")
    assert ticket.state == TicketState.ANSWERED
    assert "human" in ticket.reply
    assert ticket.sources == []


def test_duplicate_charge_over_the_limit_is_proposed_for_approval():
    ticket = ask(
        "ana.lopez@example.com", "hi, you charged me twice this month, I want my money back"
    )
    assert ticket.first_lane == "refund"
    assert ticket.state == TicketState.AWAITING_APPROVAL
    [request] = requests_of(ticket)
    assert (request.amount, request.currency, request.state) == (
        Decimal("49.00"),
        "USD",
        RefundRequestState.PROPOSED,
    )
    assert request.charge.ref == "ch_demo_ana_2"
    assert "$49.00" in ticket.reply
    assert "approved" not in ticket.reply.lower().replace("once it is approved", "")
    assert not Refund.objects.filter(refund_request=request).exists()


def test_small_duplicate_is_approved_automatically():
    ticket = ask(
        "ben.okafor@example.com", "I was billed two times for the same invoice, refund please"
    )
    [request] = requests_of(ticket)
    assert request.auto_approved
    assert request.amount == Decimal("19.00")
    assert "$19.00" in ticket.reply


@pytest.mark.parametrize(
    ("email", "fact"),
    [
        ("emma.schulz@example.com", "14 days"),
        ("hugo.rossi@example.com", "6 months"),
    ],
)
def test_a_refund_the_policy_does_not_allow_is_explained_with_its_clause(email, fact):
    ticket = ask(email, "Can I get a refund for my last payment?")
    assert ticket.first_lane == "refund"
    assert requests_of(ticket) == []
    assert fact in ticket.reply


def test_prorated_annual_refund_amount_comes_from_the_ledger():
    ticket = ask("dev.patel@example.com", "I'd like a refund of $490 for my annual plan please")
    [request] = requests_of(ticket)
    assert (request.amount, request.currency) == (Decimal("326.67"), "USD")
    assert "$326.67" in ticket.reply


def test_disputed_charge_goes_to_staff_with_the_raw_facts():
    ticket = ask("farid.haddad@example.com", "please refund my last charge of £49")
    assert ticket.state == TicketState.ESCALATED
    assert requests_of(ticket) == []
    escalation = Escalation.objects.get(ticket=ticket)
    assert escalation.reason == "disputed_charge"
    assert {c["ref"] for c in escalation.facts["charges"]} >= {"ch_demo_farid_1"}
    assert escalation.facts["conversation"][0]["text"].startswith("please refund")


def test_another_customers_charge_named_in_the_message_is_never_touched():
    ticket = ask("emma.schulz@example.com", "I want a refund of charge ch_demo_ana_2, it's mine")
    assert requests_of(ticket) == []
    assert RefundRequest.objects.filter(charge__ref="ch_demo_ana_2").count() == 0
    assert "ch_demo_ana_2" not in ticket.reply
    assert "ana.lopez" not in ticket.reply


def test_cancel_withdraws_an_undecided_request():
    ticket = ask(
        "ana.lopez@example.com",
        "you charged me twice, refund the duplicate please",
        "actually never mind, keep it",
    )
    [request] = requests_of(ticket)
    assert request.state == RefundRequestState.WITHDRAWN
    assert "withdrawn" in ticket.reply


def test_a_digression_is_answered_and_the_refund_flow_goes_on():
    ticket = ask(
        "ana.lopez@example.com",
        "I was charged twice, please refund me",
        "while I wait: can I pay by SEPA direct debit?",
    )
    [request] = requests_of(ticket)
    assert request.state == RefundRequestState.PROPOSED
    assert "SEPA" in ticket.reply
    assert "waiting for a staff member's approval" in ticket.reply
    assert ticket.state == TicketState.AWAITING_APPROVAL


@pytest.mark.parametrize(
    "messages",
    [
        ("I want to talk to a human",),
        ("I was charged twice, refund please", "this is taking too long, get me a real person"),
    ],
)
def test_asking_for_a_human_escalates_at_any_point(messages):
    ticket = ask("ana.lopez@example.com", *messages)
    assert ticket.state == TicketState.ESCALATED
    assert Escalation.objects.filter(ticket=ticket, reason="customer_asked").count() == 1


def test_mixed_intents_go_to_the_agent_which_proposes_through_the_policy():
    ticket = ask(
        "jonas.berg@example.com",
        "Two things: I want a refund for my last invoice, and please reissue it with my VAT ID "
        "DE123456789 on it.",
    )
    assert ticket.first_lane == "agent"
    kinds = list(RunStep.objects.filter(run__ticket=ticket).values_list("kind", flat=True))
    assert "agent_tools" in kinds
    for request in requests_of(ticket):
        assert request.state in (RefundRequestState.PROPOSED, RefundRequestState.WITHDRAWN)
        assert request.amount <= request.charge.amount


def test_every_model_call_of_a_ticket_belongs_to_its_run():
    ticket = ask(
        "jonas.berg@example.com",
        "I need a refund and also my VAT ID added to the invoice, what happens with the tax?",
    )
    calls = LLMCall.objects.filter(ticket_id=str(ticket.pk))
    assert calls.exists()
    assert set(calls.values_list("run_id", flat=True)) == {f"run-{ticket.run.pk}"}
    assert set(calls.values_list("customer_id", flat=True)) == {ticket.customer.ref}


def test_the_conversation_holds_each_message_and_reply_once():
    ticket = ask("ana.lopez@example.com", "double charged, refund please", "thanks!")
    roles = list(
        Message.objects.filter(conversation=ticket.conversation)
        .order_by("seq")
        .values_list("role", flat=True)
    )
    assert roles == ["customer", "assistant", "customer", "assistant"]


def test_a_correction_withdraws_the_first_request_and_asks_for_the_other_charge():
    ticket = ask(
        "ana.lopez@example.com",
        "you charged me twice, please refund the duplicate",
        "no, not that one, the other charge",
    )
    states = {r.charge.ref: r.state for r in requests_of(ticket)}
    assert states["ch_demo_ana_2"] == RefundRequestState.WITHDRAWN
    assert states["ch_demo_ana_1"] == RefundRequestState.PROPOSED


def test_the_customer_may_ask_for_less_than_the_policy_allows_but_never_more():
    ticket = ask(
        "isla.novak@example.com",
        "I'd like a refund on this week's Starter charge",
        "actually, just $5 of it is fine",
    )
    live = [r for r in requests_of(ticket) if r.state == RefundRequestState.PROPOSED]
    assert [(r.amount, r.currency) for r in live] == [(Decimal("5.00"), "USD")]
    assert "$5.00" in ticket.reply


def test_why_only_part_of_it_is_answered_with_the_policys_figures():
    ticket = ask(
        "isla.novak@example.com",
        "can i get my money back for the starter charge?",
        "why only $9? I paid $19",
    )
    assert "$10.00" in ticket.reply
    assert "$9.00" in ticket.reply
    [request] = requests_of(ticket)
    assert request.amount == Decimal("9.00")
