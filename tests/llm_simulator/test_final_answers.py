# The SDK types content blocks as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""The agent's final answer answers every question of the customer's message, each from its
source: account facts from the lookups, help-center sentences (with their `[slug]`) from the
search results, money written as people write it ("$1,990.00", "€58.31", "£49.00").

Same tool shapes as test_support_shape.py (the support app's); the customer messages are this
file's own. Each check runs for several seeds, as the evaluation repeats tickets under them.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from ledgerly.llm.simulator.brain import money_text, questions_in, search_query

from .test_support_shape import PROPOSED, SEEDS, _charge, _results, _run

HELP_CENTER = {
    "articles": [
        {
            "slug": "vat-and-tax",
            "title": "VAT on your invoices",
            "text": "EU customers pay VAT at their country's rate. With a valid EU VAT ID the "
            "reverse charge applies, so invoices show 0% VAT.",
        },
        {
            "slug": "invoices",
            "title": "Downloading invoices",
            "text": "Every invoice can be downloaded as a PDF from Billing → Invoices. An "
            "invoice from the last 90 days can be reissued once with new details.",
        },
        {
            "slug": "failed-payments",
            "title": "When a payment fails",
            "text": "We retry a failed payment 1, 3 and 7 days after it fails. After 14 days "
            "unpaid the account becomes read-only until the invoice is paid.",
        },
    ]
}
EU_CUSTOMER = {
    "ref": "cus_test_lena",
    "name": "Lena Vogel",
    "email": "lena@example.com",
    "country": "DE",
    "currency": "EUR",
    "vat_id": "DE123456789",
    "plan": {"code": "growth", "interval": "month", "price": "49.00"},
}
EU_INVOICES = {
    "invoices": [
        {
            "number": "INV-LENA-07",
            "total": "49.00",
            "tax": "0.00",
            "currency": "EUR",
            "status": "paid",
            "issued_at": "2026-11-03",
        }
    ]
}


def _with(**overrides: Any) -> dict[str, Any]:
    results = _results([_charge("ch_t_1", "49.00", "2026-11-03")], PROPOSED)
    results["search_help_center"] = HELP_CENTER
    results.update(overrides)
    return results


@pytest.mark.parametrize(
    ("amount", "currency", "written"),
    [
        ("49.00", "USD", "$49.00"),
        ("58.31", "EUR", "€58.31"),
        ("49", "GBP", "£49.00"),
        ("1990.00", "USD", "$1,990.00"),
        ("12.50", "CHF", "12.50 CHF"),
    ],
)
def test_money_is_written_with_its_symbol_and_a_thousands_comma(
    amount: str, currency: str, written: str
) -> None:
    assert money_text(amount, currency) == written


def test_a_message_of_several_questions_is_read_as_those_questions() -> None:
    asked = questions_in(
        "Our card changed last month. When will you charge it again, and is my account "
        "going read-only?"
    )

    assert asked == ["When will you charge it again", "is my account going read-only?"]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_vat_question_with_an_invoice_question_gets_both_answers_and_the_account_facts(
    client: anthropic.Anthropic, seed: int
) -> None:
    turns: list[list[str]] = []
    calls, answer = _run(
        client,
        seed,
        user="Our VAT number is registered now, so how come there's no VAT on our bill? "
        "And how do I download that invoice as a PDF?",
        results=_with(
            lookup_customer=EU_CUSTOMER,
            list_invoices=EU_INVOICES,
            list_charges={"charges": [_charge("ch_t_1", "49.00", "2026-11-03", currency="EUR")]},
        ),
        turns=turns,
    )

    names = [name for name, _ in calls]
    assert "search_help_center" in names
    assert "propose_refund" not in names
    assert len(turns) <= 6  # the support app stops at 8 turns, the answer included
    assert "reverse charge" in answer
    assert "[vat-and-tax]" in answer
    assert "PDF" in answer
    assert "[invoices]" in answer
    assert "DE123456789" in answer
    assert "€49.00" in answer
    assert "49.00 EUR" not in answer
    assert "The charges I found" not in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_failed_payment_question_gets_the_retry_days_and_the_failed_charge(
    client: anthropic.Anthropic, seed: int
) -> None:
    failed = [_charge("ch_t_9", "199.00", "2026-11-20", status="failed", currency="GBP")]

    calls, answer = _run(
        client,
        seed,
        user="my card got declined I think. when do you try it again? do we get locked out?",
        results=_with(list_charges={"charges": failed}),
    )

    assert "search_help_center" in [name for name, _ in calls]
    assert "propose_refund" not in [name for name, _ in calls]
    assert "escalate_to_human" not in [name for name, _ in calls]
    assert "read-only" in answer
    assert "[failed-payments]" in answer
    assert "£199.00" in answer
    assert "ch_t_9" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_how_much_was_charged_and_refunded_is_answered_from_the_charges(
    client: anthropic.Anthropic, seed: int
) -> None:
    partly = [_charge("ch_t_5", "1990.00", "2026-06-02", refunded_amount="400.00")]

    calls, answer = _run(
        client,
        seed,
        user="Was the money you sent back ever paid out? What did the charge come to?",
        results=_with(list_charges={"charges": partly}),
    )

    assert "propose_refund" not in [name for name, _ in calls]
    assert "$1,990.00" in answer
    assert "$400.00" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_refund_the_policy_caps_is_told_with_the_policy_amount(
    client: anthropic.Anthropic, seed: int
) -> None:
    annual = [_charge("ch_t_3", "490.00", "2026-08-01")]
    capped = {**PROPOSED, "amount": "326.67"}

    calls, answer = _run(
        client,
        seed,
        user="We barely used the annual plan. Please refund us what's left of it.",
        results=_with(list_charges={"charges": annual}, propose_refund=capped),
    )

    assert calls[-1][0] == "propose_refund"
    assert "$326.67" in answer
    assert "$490.00" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_refund_request_with_a_question_is_proposed_and_the_question_answered(
    client: anthropic.Anthropic, seed: int
) -> None:
    dup = [
        _charge("ch_t_8", "49.00", "2026-11-28"),
        _charge("ch_t_7", "49.00", "2026-11-28"),
    ]

    calls, answer = _run(
        client,
        seed,
        user="You took the same payment twice, please refund the extra one. Also, where can I "
        "get a PDF of my invoice?",
        results=_with(list_charges={"charges": dup}),
    )

    names = [name for name, _ in calls]
    assert "propose_refund" in names
    assert "search_help_center" in names
    assert len(calls) <= 8
    assert "$49.00" in answer
    assert "PDF" in answer
    assert "[invoices]" in answer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_refused_refund_is_explained_and_the_other_question_still_answered(
    client: anthropic.Anthropic, seed: int
) -> None:
    old = [_charge("ch_t_4", "19.00", "2026-10-01")]
    why = "Monthly plans are refunded within 14 days of the charge; this one is 61 days old."

    calls, answer = _run(
        client,
        seed,
        user="I want my money back for the last charge, and tell me how long an unpaid account "
        "stays usable.",
        results=_with(list_charges={"charges": old}),
        errors=frozenset({"propose_refund"}),
        error_payloads={"propose_refund": {"error": f"the refund policy does not allow it: {why}"}},
    )

    assert calls[-1][0] == "propose_refund"
    assert "search_help_center" in [name for name, _ in calls]
    assert why.rstrip(".") in answer
    assert "read-only" in answer
    assert "[failed-payments]" in answer


def test_a_request_to_confirm_something_is_a_question_of_its_own() -> None:
    asked = questions_in("Can you see our VAT ID on file, and confirm the last invoice had no VAT?")

    assert asked == ["Can you see our VAT ID on file", "confirm the last invoice had no VAT?"]


@pytest.mark.parametrize(
    ("question", "query"),
    [
        ("Posso esportare tutti i dati prima di disdire?", "export data cancel"),
        ("How long until my refund shows up?", "How long until my refund shows up?"),
    ],
    ids=["italian_in_english_words", "english_as_asked"],
)
def test_the_help_center_is_searched_in_english_words(question: str, query: str) -> None:
    assert search_query(question) == query


def test_a_question_in_italian_is_searched_in_english(client: anthropic.Anthropic) -> None:
    calls, _ = _run(
        client,
        0,
        user="Posso esportare tutti i dati prima di disdire? E quando finisce il mio abbonamento?",
        results=_with(),
    )

    queries = [args["query"] for name, args in calls if name == "search_help_center"]
    assert "export data cancel" in queries
    assert len(queries) == 2


def test_the_one_question_beside_a_request_is_what_is_searched(
    client: anthropic.Anthropic,
) -> None:
    calls, _ = _run(
        client,
        0,
        user="Please refund the duplicate payment, and how many seats come with my plan?",
        results=_with(),
    )

    queries = [args["query"] for name, args in calls if name == "search_help_center"]
    assert queries == ["how many seats come with my plan?"]
