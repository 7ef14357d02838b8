# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""The simulator drives a support agent's tool set sensibly, by schema and result shape.

The tools are shaped like the support app's: scoped to the signed-in customer (no customer id
in any input), charges with `ref`/`amount`/`currency`/`status`/`invoice`/`charged_at`/
`disputed`/`refunded_amount`, a refund proposal that reports whether it was approved. Nothing
here is special-cased by tool name in the simulator; the checks run for several seeds, since the
evaluation repeats each ticket under different ones.
"""

from __future__ import annotations

import re
from typing import Any

import anthropic
import jsonschema
import pytest

from .helpers import run_agent

SEEDS = [0, 1, 2, 3, 4, 5]
MONEY = {"type": "string", "pattern": r"^\d+\.\d{2}$"}
NO_INPUT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 300}},
    "required": ["query"],
    "additionalProperties": False,
}
SUPPORT_TOOLS: list[dict[str, Any]] = [
    {"name": "lookup_customer", "description": "The customer's account.", "input_schema": NO_INPUT},
    {"name": "list_invoices", "description": "The customer's invoices.", "input_schema": NO_INPUT},
    {
        "name": "list_charges",
        "description": "The customer's charges, newest first. Optionally for one invoice.",
        "input_schema": {
            "type": "object",
            "properties": {"invoice_number": {"type": "string", "pattern": "^INV-"}},
            "additionalProperties": False,
        },
    },
    {"name": "search_help_center", "description": "Help-center search.", "input_schema": QUERY},
    {"name": "recall_customer_memory", "description": "Earlier facts.", "input_schema": QUERY},
    {
        "name": "propose_refund",
        "description": "Propose a refund of one charge; staff approve it. Never moves money.",
        "input_schema": {
            "type": "object",
            "properties": {
                "charge_ref": {"type": "string", "pattern": "^ch_"},
                "amount": MONEY,
                "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
                "reason": {"type": "string", "maxLength": 500},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "uncertainty": {"type": "string", "maxLength": 500},
            },
            "required": ["charge_ref", "reason", "confidence", "uncertainty"],
            "additionalProperties": False,
        },
    },
    {
        "name": "escalate_to_human",
        "description": "Hand the ticket to a person, with the point you are unsure of.",
        "input_schema": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "maxLength": 500},
                "uncertainty": {"type": "string", "maxLength": 500},
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
    },
]
SCHEMAS = {t["name"]: t["input_schema"] for t in SUPPORT_TOOLS}
LOOKUPS = {"lookup_customer", "list_invoices", "list_charges", "search_help_center"}
LOOKUPS |= {"recall_customer_memory"}


def _charge(ref: str, amount: str, charged_at: str, **extra: Any) -> dict[str, Any]:
    return {
        "ref": ref,
        "invoice": "INV-DEMO-01",
        "amount": amount,
        "currency": "USD",
        "status": "succeeded",
        "charged_at": charged_at,
        "disputed": False,
        "refunded_amount": "0.00",
        "refund_pending_amount": "0.00",
        **extra,
    }


def _results(charges: list[dict[str, Any]], refund: dict[str, Any]) -> dict[str, Any]:
    return {
        "lookup_customer": {
            "ref": "cus_demo_ana",
            "name": "Ana Lopez",
            "email": "ana.lopez@example.com",
            "country": "US",
            "currency": "USD",
            "vat_id": "",
            "plan": {"code": "growth", "interval": "month", "price": "49.00"},
        },
        "list_invoices": {
            "invoices": [
                {"number": "INV-DEMO-01", "total": "49.00", "currency": "USD", "status": "paid"},
                {"number": "INV-DEMO-00", "total": "49.00", "currency": "USD", "status": "paid"},
            ]
        },
        "list_charges": {"charges": charges},
        "search_help_center": {
            "articles": [
                {
                    "slug": "refund-policy",
                    "title": "Refunds",
                    "text": "Duplicate charges are always refunded in full within 180 days. "
                    "Refunds take 5-10 business days to appear on your statement.",
                }
            ]
        },
        "recall_customer_memory": {"memories": []},
        "propose_refund": refund,
        "escalate_to_human": {"status": "escalated"},
    }


# Newest first, as the tool lists them; dates without times, so the pair ties on date.
DUPLICATE = [
    _charge("ch_demo_ana_2", "49.00", "2026-11-28"),
    _charge("ch_demo_ana_1", "49.00", "2026-11-28"),
    _charge("ch_demo_ana_0", "49.00", "2026-10-28", invoice="INV-DEMO-00"),
]
PROPOSED = {
    "status": "proposed",
    "refund_request": 12,
    "amount": "49.00",
    "currency": "USD",
    "requires_approval": True,
    "auto_approved": False,
}
AUTO_APPROVED = {
    "status": "approved",
    "refund_request": 13,
    "amount": "19.00",
    "currency": "USD",
    "requires_approval": False,
    "auto_approved": True,
}
CLAIMS_DONE = re.compile(r"\b(issued|approved|refunded|processed|on its way)\b", re.I)
ASK = "Hi, I was charged twice for my subscription this month. Can I get a refund?"


def _run(
    client: anthropic.Anthropic, seed: int, *, user: str = ASK, **kwargs: Any
) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    calls, final = run_agent(
        client,
        user=user,
        tools=SUPPORT_TOOLS,
        extra_headers={"x-sim-seed": str(seed)},
        max_turns=10,
        **kwargs,
    )
    assert final.stop_reason == "end_turn"
    for name, args in calls:
        jsonschema.validate(args, SCHEMAS[name])  # every input fits its tool's schema
    return calls, final.content[-1].text


@pytest.mark.parametrize("seed", SEEDS)
def test_duplicate_charge_lookups_first_then_a_refund_of_the_later_charge_at_the_ledger_amount(
    client: anthropic.Anthropic, seed: int
) -> None:
    calls, answer = _run(client, seed, results=_results(DUPLICATE, PROPOSED))

    names = [name for name, _ in calls]
    assert names[-1] == "propose_refund"
    assert set(names[:-1]) <= LOOKUPS
    assert {"lookup_customer", "list_charges"} <= set(names[:-1])
    args = calls[-1][1]
    assert (args["charge_ref"], args["amount"], args["currency"]) == (
        "ch_demo_ana_2",
        "49.00",
        "USD",
    )
    assert 0.8 <= args["confidence"] <= 1.0
    assert args["uncertainty"]
    assert args["uncertainty"] != ASK
    assert "ch_demo_ana_2" in args["reason"]
    assert "49.00" in answer
    assert "ch_demo_ana_2" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_proposed_refund_is_not_told_as_issued_or_approved(
    client: anthropic.Anthropic, seed: int
) -> None:
    _, answer = _run(client, seed, results=_results(DUPLICATE, PROPOSED))

    assert "$49.00" in answer
    assert not CLAIMS_DONE.search(answer), answer


@pytest.mark.parametrize("seed", SEEDS)
def test_an_auto_approved_refund_is_told_as_approved_automatically(
    client: anthropic.Anthropic, seed: int
) -> None:
    small = [_charge("ch_ben_2", "19.00", "2026-11-29"), _charge("ch_ben_1", "19.00", "2026-11-29")]

    calls, answer = _run(client, seed, results=_results(small, AUTO_APPROVED))

    assert calls[-1][1]["charge_ref"] == "ch_ben_2"
    assert "$19.00" in answer
    assert "approved automatically" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_disputed_charge_is_escalated_not_refunded(
    client: anthropic.Anthropic, seed: int
) -> None:
    disputed = [_charge("ch_farid_1", "49.00", "2026-11-25", currency="GBP", disputed=True)]

    calls, answer = _run(
        client,
        seed,
        user="Can I get a refund for my last payment?",
        results=_results(disputed, PROPOSED),
    )

    names = [name for name, _ in calls]
    assert names[-1] == "escalate_to_human"
    assert "propose_refund" not in names
    assert "ch_farid_1" in calls[-1][1]["reason"]
    assert calls[-1][1]["uncertainty"]
    assert "£49.00" in answer
    assert "person from our support team" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_only_what_is_left_after_an_earlier_refund_is_proposed(
    client: anthropic.Anthropic, seed: int
) -> None:
    partly = [_charge("ch_isla_1", "19.00", "2026-11-26", refunded_amount="10.00")]
    left = {**PROPOSED, "amount": "9.00"}

    calls, answer = _run(client, seed, results=_results(partly, left))

    assert (calls[-1][1]["charge_ref"], calls[-1][1]["amount"]) == ("ch_isla_1", "9.00")
    assert "$9.00" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_policy_refusal_from_the_refund_tool_is_explained_without_claiming_a_handover(
    client: anthropic.Anthropic, seed: int
) -> None:
    late = [_charge("ch_emma_1", "19.00", "2026-11-11", currency="EUR")]
    why = "Monthly plans are refunded within 14 days of the charge; this one is 20 days old."

    calls, answer = _run(
        client,
        seed,
        results=_results(late, PROPOSED),
        errors=frozenset({"propose_refund"}),
        error_payloads={"propose_refund": {"error": f"the refund policy does not allow it: {why}"}},
    )

    assert [name for name, _ in calls][-1] == "propose_refund"
    assert why.rstrip(".") in answer
    assert "passed your case" not in answer
    assert not re.search(r"\b(submitted|approved|issued|on its way)\b", answer), answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_general_question_is_answered_from_the_help_center_results_with_a_citation(
    client: anthropic.Anthropic, seed: int
) -> None:
    calls, answer = _run(
        client,
        seed,
        user="How long do refunds take to appear on my statement?",
        results=_results(DUPLICATE, PROPOSED),
    )

    names = [name for name, _ in calls]
    assert "search_help_center" in names
    assert "propose_refund" not in names
    assert "5-10 business days" in answer
    assert "[refund-policy]" in answer


def test_seeds_vary_the_order_and_batching_of_the_lookups(client: anthropic.Anthropic) -> None:
    def turns(seed: int) -> tuple[tuple[str, ...], ...]:
        collected: list[list[str]] = []
        run_agent(
            client,
            user=ASK,
            tools=SUPPORT_TOOLS,
            results=_results(DUPLICATE, PROPOSED),
            extra_headers={"x-sim-seed": str(seed)},
            max_turns=10,
            turns=collected,
        )
        return tuple(tuple(turn) for turn in collected)

    runs = {turns(seed) for seed in SEEDS}

    assert len(runs) >= 3
    assert any(len(turn) == 2 for run in runs for turn in run)


@pytest.mark.parametrize(
    ("user", "recalled"),
    [
        ("As I told you last time, I was charged twice this month. Refund please.", True),
        (ASK, False),
    ],
    ids=["refers_to_an_earlier_conversation", "does_not"],
)
def test_customer_memory_is_recalled_when_the_customer_refers_to_earlier_conversations(
    client: anthropic.Anthropic, user: str, recalled: bool
) -> None:
    calls, _ = _run(client, 0, user=user, results=_results(DUPLICATE, PROPOSED))

    assert ("recall_customer_memory" in [name for name, _ in calls]) is recalled
    assert calls[-1][0] == "propose_refund"
