"""Context assembly: recent turns verbatim, older turns summarised through the gateway, passages
and this customer's memories, all within the token budget."""

from __future__ import annotations

import itertools

import pytest

from ledgerly.llm import CallContext
from ledgerly.llm.models import LLMCall
from memory import context, hot, services

pytestmark = pytest.mark.django_db(transaction=True)

LINES = [
    ("customer", "Hi, I am on the Growth plan and I was charged twice for invoice INV-2026-0042."),
    ("assistant", "Sorry about that. I can see two charges of 49 USD on INV-2026-0042."),
    ("customer", "Yes, ch_dup0042 is the second one, please refund it."),
    (
        "assistant",
        "I have filed a refund request for ch_dup0042; staff decide within 1 business day.",
    ),
]


def run_of(customer) -> CallContext:
    """The run a context assembly belongs to (its summary call counts against it)."""
    return CallContext.starting_now(
        run_id=f"run-ctx-{customer.ref}", ticket_id="", customer_ref=customer.ref, seconds=30
    )


def _long_conversation(customer, turns: int):
    conversation = services.conversation_start(customer=customer)
    for i in range(turns):
        role, text = LINES[i % len(LINES)]
        services.message_append(
            conversation=conversation, role=role, content=f"{text} (message {i + 1})"
        )
    return conversation


def test_a_short_conversation_is_all_verbatim_and_calls_no_model(
    helpcenter, customer, redis_client, gateway
):
    conversation = _long_conversation(customer, 4)

    built = context.build_context(conversation=conversation, ctx=run_of(customer))

    assert [t.seq for t in built.turns] == [1, 2, 3, 4]
    assert (built.summary, built.summary_source) == ("", "none")
    assert LLMCall.objects.count() == 0
    assert built.tokens_used <= built.token_budget


def test_a_long_conversation_fits_the_budget_with_older_turns_summarised(
    helpcenter, customer, redis_client, gateway, settings
):
    settings.CONTEXT_RECENT_TURNS = 4
    conversation = _long_conversation(customer, 40)
    services.customer_memory_add(customer=customer, text="Was double-charged once before, in May")

    built = context.build_context(conversation=conversation, ctx=run_of(customer), token_budget=900)

    assert built.tokens_used <= 900
    assert len(built.turns) >= 4
    assert built.turns[-1].seq == 40
    assert [t.seq for t in built.turns] == list(range(built.turns[0].seq, 41))
    assert built.summary_source == "model"
    assert built.summary
    call = LLMCall.objects.get()
    assert (call.purpose, call.tier, call.prompt_name) == (
        "summarise",
        "small",
        "summarise_conversation",
    )
    # The summary belongs to the run that asked for the context, and its customer's budget.
    assert (call.run_id, call.customer_id) == (f"run-ctx-{customer.ref}", customer.ref)
    spent = gateway.budgets.spent(run_id=call.run_id, customer_id=customer.ref)
    assert spent["run_usd"] == spent["customer_day"] > 0
    conversation.refresh_from_db()
    assert conversation.summary_through_seq == built.turns[0].seq - 1
    assert built.passages
    assert "duplicate-charges" in [p.slug for p in built.passages]
    assert [m.text for m in built.memories] == ["Was double-charged once before, in May"]


@pytest.mark.parametrize("budget", [250, 400, 900, 3000])
def test_context_never_exceeds_its_budget(helpcenter, customer, redis_client, gateway, budget):
    conversation = _long_conversation(customer, 30)

    built = context.build_context(
        conversation=conversation, ctx=run_of(customer), token_budget=budget
    )

    assert built.tokens_used <= budget
    assert built.turns[-1].seq == 30


def test_the_stored_summary_is_reused_and_extended_incrementally(
    helpcenter, customer, redis_client, gateway, settings
):
    settings.CONTEXT_RECENT_TURNS = 4
    conversation = _long_conversation(customer, 30)
    first = context.build_context(conversation=conversation, ctx=run_of(customer), token_budget=600)
    again = context.build_context(conversation=conversation, ctx=run_of(customer), token_budget=600)
    for i in range(6):
        services.message_append(conversation=conversation, role="customer", content=f"more {i}")
    later = context.build_context(conversation=conversation, ctx=run_of(customer), token_budget=600)

    assert (first.summary_source, again.summary_source, later.summary_source) == (
        "model",
        "stored",
        "model",
    )
    assert again.summary == first.summary
    assert LLMCall.objects.filter(purpose="summarise").count() == 2
    conversation.refresh_from_db()
    assert conversation.summary_through_seq == later.turns[0].seq - 1


def test_context_is_the_same_after_the_redis_copy_is_deleted(
    helpcenter, customer, redis_client, gateway
):
    conversation = _long_conversation(customer, 30)
    before = context.build_context(
        conversation=conversation, ctx=run_of(customer), token_budget=900
    )

    redis_client.delete(hot.key(conversation))
    after = context.build_context(conversation=conversation, ctx=run_of(customer), token_budget=900)

    assert after.turns == before.turns
    assert after.summary == before.summary
    assert after.messages() == before.messages()


def test_a_failing_model_degrades_to_a_marked_fallback_summary(
    helpcenter, customer, redis_client, gateway, simulator
):
    conversation = _long_conversation(customer, 30)
    simulator.inject("server_error", times=20)

    built = context.build_context(conversation=conversation, ctx=run_of(customer), token_budget=600)

    assert built.summary_source == "fallback"
    assert "earlier messages not summarised" in built.summary
    conversation.refresh_from_db()
    assert conversation.summary_through_seq == 0
    assert built.turns[-1].seq == 30


def test_messages_alternate_roles_and_start_with_the_customer(
    helpcenter, customer, redis_client, gateway
):
    conversation = _long_conversation(customer, 7)
    services.message_append(conversation=conversation, role="staff", content="Staff note.")
    services.message_append(conversation=conversation, role="customer", content="Thanks!")

    messages = context.build_context(
        conversation=conversation, ctx=run_of(customer), token_budget=900
    ).messages()

    roles = [m["role"] for m in messages]
    assert roles[0] == "user"
    assert roles[-1] == "user"
    assert all(a != b for a, b in itertools.pairwise(roles))


def test_a_huge_latest_message_is_cut_to_fit_the_budget(
    helpcenter, customer, redis_client, gateway
):
    conversation = _long_conversation(customer, 3)
    services.message_append(
        conversation=conversation, role="customer", content="blah " * 5000 + "Where is my refund?"
    )

    built = context.build_context(conversation=conversation, ctx=run_of(customer), token_budget=500)

    assert built.tokens_used <= 500
    assert built.turns[-1].content.startswith(context.TRUNCATED)
    assert built.turns[-1].content.endswith("Where is my refund?")
