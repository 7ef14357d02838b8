"""How the simulator reads help-center passages: whole sentences, and questions in customers' words.

Pure functions and in-process requests; no database (test_helpcenter_answers.py reads the real
help center through retrieval).
"""

from __future__ import annotations

import re

import anthropic
import pytest

from ledgerly.llm.simulator.language import passage_sentences, question_concepts

from .helpers import documents

WRAPPED = (
    "You can move up to a bigger plan (Starter to Growth, Growth to Scale, or Starter straight to\n"
    "Scale) at any time.\n\n## When it takes effect\n\nAn upgrade takes effect at once."
)
TABLE = (
    "Three plans.\n\n| plan | monthly | annual |\n|---|---|---|\n"
    "| Starter | $19 per month | $190 per year |\n| Growth | $49 per month | $490 per year |\n"
)
LIST = (
    "We accept these ways to pay:\n\n- **Cards**: Visa and Mastercard, on every plan.\n"
    "- **SEPA Direct Debit**: for EUR accounts\n  only.\n\nCheques are not accepted."
)
ABBREVIATED = "Pay by card, e.g. Visa or Mastercard. Approx. 5 days later it appears. Done."


def test_a_hard_wrapped_line_does_not_end_a_sentence() -> None:
    assert passage_sentences(WRAPPED) == [
        "You can move up to a bigger plan (Starter to Growth, Growth to Scale, or Starter "
        "straight to Scale) at any time.",
        "An upgrade takes effect at once.",
    ]


def test_a_table_row_is_a_sentence_naming_its_columns() -> None:
    assert passage_sentences(TABLE) == [
        "Three plans.",
        "Starter: monthly $19 per month, annual $190 per year.",
        "Growth: monthly $49 per month, annual $490 per year.",
    ]


def test_list_items_are_sentences_and_a_lead_in_alone_is_not_quoted() -> None:
    assert passage_sentences(LIST) == [
        "Cards: Visa and Mastercard, on every plan.",
        "SEPA Direct Debit: for EUR accounts only.",
        "Cheques are not accepted.",
    ]


def test_an_abbreviation_does_not_end_a_sentence() -> None:
    assert passage_sentences(ABBREVIATED) == [
        "Pay by card, e.g. Visa or Mastercard.",
        "Approx. 5 days later it appears.",
        "Done.",
    ]


@pytest.mark.parametrize(
    ("question", "meant"),
    [
        ("how do I get my money back", "refund"),
        ("how long do you hang on to our data", "kept"),
        ("what formats can I export", "csv"),
        ("Wie lange habe ich Zeit für eine Erstattung?", "refund"),
        ("¿Me pueden reenviar la factura?", "invoic"),
        ("Combien de jours pour un remboursement ?", "day"),
        ("Quanto tempo leva o reembolso?", "refund"),
        ("Quanti giorni per il rimborso?", "day"),
        ("Was kostet die Jahresrechnung?", "invoic"),
        ("combien d'utilisateurs avec l'offre Scale ?", "user"),
        ("Wat kost Scale per jaar?", "year"),
    ],
)
def test_a_question_is_read_in_the_help_centers_words(question: str, meant: str) -> None:
    forms = set().union(*(c.forms for c in question_concepts(question)))

    assert meant in forms


PLANS = documents(
    (
        "plans-and-prices",
        "Ledgerly plans and prices",
        "Ledgerly comes in three plans.\n\n| plan | monthly | annual |\n|---|---|---|\n"
        "| Starter | $19 per month | $190 per year |\n| Growth | $49 per month | $490 per year |\n"
        "\nSo Starter costs $19 a month or $190 a year, and Growth costs $49 a month or $490\n"
        "a year.",
    ),
    (
        "data-retention",
        "What happens to my data after I cancel?",
        "After cancellation your data is kept for 90 days, then deleted.\n\nDuring those 90 days "
        "you can still export it as CSV or JSON.",
    ),
    (
        "upgrading-your-plan",
        "Upgrading to a bigger plan",
        WRAPPED,
    ),
)


def _ask(client: anthropic.Anthropic, question: str) -> str:
    message = client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=400,
        system="Answer only from the help-center documents. Cite each by its [slug].",
        messages=[{"role": "user", "content": f"{PLANS}\n\nCustomer question:\n{question}"}],
    )
    block = message.content[-1]
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


@pytest.mark.parametrize(
    ("question", "fact", "slug"),
    [
        ("whats ur cheapest plan", "$19", "plans-and-prices"),
        ("How much is Growth if we pay yearly?", "$490", "plans-and-prices"),
        ("If we stop using you, how long do you hang on to our data?", "90 days", "data-retention"),
        ("Combien de temps gardez-vous mes données après la résiliation ?", "90 days", "data-"),
        ("¿Cuánto cuesta el plan Growth al año?", "$490", "plans-and-prices"),
        ("Can I go from Starter straight to Scale?", "at any time", "upgrading-your-plan"),
        (
            "Hi! We are four bookkeepers and have used spreadsheets for years, and my partner "
            "finally talked me into proper software. Before I commit I want the money side "
            "straight. If we went with Growth and paid for the whole year, what would that be?",
            "$490",
            "plans-and-prices",
        ),
    ],
)
def test_a_question_in_other_words_is_answered_and_cited(
    client: anthropic.Anthropic, question: str, fact: str, slug: str
) -> None:
    answer = _ask(client, question)

    assert fact in answer
    assert f"[{slug}" in answer


@pytest.mark.parametrize(
    "question",
    [
        "Can I go from Starter straight to Scale?",
        "How much is Growth per month?",
        "What do Starter and Growth cost?",
    ],
)
def test_an_answer_quotes_whole_sentences_never_table_rows_or_pieces(
    client: anthropic.Anthropic, question: str
) -> None:
    answer = _ask(client, question)
    quoted = [p for p in re.split(r"\s*\[[a-z0-9-]+\]\s*", answer) if p]

    assert quoted
    assert "|" not in answer
    assert all(p[0].isupper() and p.endswith((".", "!", "?")) for p in quoted), quoted
    assert "straight to." not in answer


@pytest.mark.parametrize(
    "question",
    [
        "Do you integrate with SAP?",
        "what's the street address of your office?",
        "Is there an app for Android?",
    ],
)
def test_a_question_no_passage_is_about_is_not_answered(
    client: anthropic.Anthropic, question: str
) -> None:
    answer = _ask(client, question)

    assert "couldn't find" in answer
    assert "[" not in answer


VAT = documents(
    (
        "vat-id",
        "Adding a VAT ID",
        "If your business is in the EU, add your VAT ID.\n\nWith a valid EU VAT ID the reverse "
        "charge applies: you are charged 0% VAT.",
    ),
    (
        "eu-vat",
        "VAT for customers in the EU",
        "A valid EU VAT ID applies the reverse charge: 0% VAT is charged and your business "
        "accounts for the VAT itself.",
    ),
)


def test_a_rule_two_articles_both_state_is_quoted_once_and_the_answer_comes_first(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=400,
        system="Answer only from the help-center documents.",
        messages=[
            {
                "role": "user",
                "content": f"{VAT}\n\nCustomer question:\nDo we pay VAT with a VAT ID?",
            }
        ],
    )
    block = message.content[-1]
    assert isinstance(block, anthropic.types.TextBlock)

    assert block.text.startswith("With a valid EU VAT ID the reverse charge applies")
    assert block.text.count("reverse charge") == 1


PAYMENTS = documents(
    (
        "failed-payments",
        "What happens when a payment fails",
        "We retry a failed payment automatically on days 1, 3 and 7 after the failure.",
    ),
    (
        "disputes-and-chargebacks",
        "Disputes and chargebacks",
        "A dispute is when you ask your bank or card issuer to reverse a charge instead of us.",
    ),
)


def test_a_sentence_from_a_less_relevant_article_is_not_added_for_one_shared_word(
    client: anthropic.Anthropic,
) -> None:
    question = "my card got declined, how many times will you try charging it again?"
    message = client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=400,
        system="Answer only from the help-center documents.",
        messages=[{"role": "user", "content": f"{PAYMENTS}\n\nCustomer question:\n{question}"}],
    )
    block = message.content[-1]
    assert isinstance(block, anthropic.types.TextBlock)

    assert "days 1, 3 and 7" in block.text
    assert "[failed-payments]" in block.text
    assert "[disputes-and-chargebacks]" not in block.text
