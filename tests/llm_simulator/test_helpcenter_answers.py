"""The simulator reads the real help center the way the FAQ lane shows it.

Each request is built exactly as `support/lanes/faq.py` builds it: the repository's articles
ingested, `passages_search(query=q, k=4)`, `passages_as_documents`, the customer question after
the documents, and the versioned `faq_answer` system prompt. The questions are written for this
test (not taken from the golden set) in customers' own words, some in other languages; each
must be answered with the facts a small real model would quote, citing an article that holds
them. Off-topic questions must still get the plain "not in the help center" answer.
"""

from __future__ import annotations

import re

import anthropic
import pytest
from django.db import transaction

from ledgerly.llm import prompt_registry
from memory import selectors, services

# Retrieval needs the test database, which pytest-django sets up only for tests marked so.
pytestmark = pytest.mark.django_db

PASSAGES = 4  # support.lanes.faq.PASSAGES (tests may not import support into llm tests)
CITATION = re.compile(r"\[([a-z0-9][a-z0-9-]*)\]")
NOT_FOUND = "couldn't find"

# Retrieval (memory.selectors, not the simulator) does not return the article holding the facts
# for these today (a known miss of the help-center search, reported in its bench).
RETRIEVAL_MISS = pytest.mark.xfail(
    reason="known retrieval miss in memory.selectors.passages_search: the article with the facts "
    "ranks below the top four (invoice articles outrank exporting-your-data for 'what formats'; "
    "memory/query_rewrite.py has no Italian, so seats-per-plan is not found)",
    strict=True,
)


def _missed(question: str, facts: tuple[str, ...], slugs: tuple[str, ...]) -> object:
    return pytest.param(question, facts, slugs, marks=RETRIEVAL_MISS)


# (question, facts that must all appear (a fact "A|B": either), articles any of which may be
# cited for them)
ANSWERABLE: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    (
        "If we stop using Ledgerly, how long do you hang on to our data before it's gone?",
        ("90 days",),
        ("data-retention", "exporting-your-data", "cancelling-your-subscription"),
    ),
    (
        "can i get all my client and invoice data out of ledgerly? what formats",
        ("CSV", "JSON"),
        ("exporting-your-data", "data-retention"),
    ),
    (
        "We moved offices. How far back can you reissue invoices with the new address on them?",
        ("90 days",),
        ("changing-billing-address", "reissuing-an-invoice"),
    ),
    (
        "How much is the Growth plan if I pay yearly?",
        ("$490",),
        ("plans-and-prices", "switching-billing-period", "monthly-vs-annual-billing"),
    ),
    ("which cards do you accept", ("Visa", "Mastercard"), ("payment-methods",)),
    ("whats ur cheapest plan", ("Starter", "$19"), ("plans-and-prices",)),
    (
        "Is there a way to get my money back on a monthly subscription, and by when must I ask?",
        ("14 days",),
        ("refunds-monthly-plans", "requesting-a-refund"),
    ),
    (
        "How many people on my team can sign in with the Growth plan?",
        ("5 seats",),
        ("seats-per-plan", "team-members", "plans-and-prices"),
    ),
    ("do you take amex", ("American Express",), ("payment-methods",)),
    (
        "my card got declined, how many times will you try charging it again?",
        ("1, 3 and 7",),
        ("failed-payments", "read-only-account"),
    ),
    (
        "When does an unpaid account get locked to read-only?",
        ("14 days",),
        ("read-only-account", "failed-payments"),
    ),
    (
        "Our subscription is billed in US dollars. Can we switch to SEPA direct debit?",
        ("EUR accounts only|cannot switch to SEPA",),
        ("sepa-direct-debit", "payment-methods"),
    ),
    (
        "What VAT does a German business without a VAT number pay on top of the price?",
        ("19%",),
        ("eu-vat", "vat-id"),
    ),
    (
        "If I drop down from Scale to Growth, does that happen right away?",
        ("next period",),
        ("downgrading-your-plan",),
    ),
    (
        "once a refund is approved how long until it shows on my bank statement",
        ("business days",),
        ("refund-timing", "refund-approval", "requesting-a-refund"),
    ),
    (
        "Who decides whether my refund request is approved?",
        ("staff",),
        ("refund-approval", "requesting-a-refund"),
    ),
    (
        "What's the most invoices I can send my clients in a month on Starter?",
        ("50",),
        ("invoice-limits", "plans-and-prices"),
    ),
    (
        "We started paying in euros. Could we move the subscription over to pounds?",
        ("cannot switch",),
        ("currencies",),
    ),
    (
        "can we pay by wire transfer on the growth plan",
        ("Scale annual",),
        ("bank-transfer", "payment-methods", "switching-billing-period"),
    ),
    (
        "Where do I grab a PDF of an old invoice for my accountant?",
        ("PDF", "Billing → Invoices"),
        ("invoices-and-pdf",),
    ),
    (
        "what hours are your human support staff around?",
        ("08:00",),
        ("contacting-support",),
    ),
    (
        "If I cancel mid-month do I keep access until the end of what I paid for?",
        ("end of the paid period",),
        ("cancelling-your-subscription",),
    ),
    (
        "We have an EU VAT ID. Do we still get charged VAT?",
        ("reverse charge",),
        ("vat-id", "eu-vat"),
    ),
    (
        "I got billed two times for one invoice. How long do I have to tell you?",
        ("180 days",),
        ("duplicate-charges", "requesting-a-refund"),
    ),
    (
        "Can I still get part of my money back on an annual plan after the first month?",
        ("prorated",),
        ("refunds-annual-plans", "requesting-a-refund", "monthly-vs-annual-billing"),
    ),
    # --- other languages ---
    (
        "Wie lange habe ich Zeit, bei einem Monatsabo eine Erstattung zu beantragen?",
        ("14 days",),
        ("refunds-monthly-plans", "requesting-a-refund"),
    ),
    (
        "quanto tempo leva pro reembolso aparecer no cartão?",
        ("business days",),
        ("refund-timing", "refund-approval", "requesting-a-refund"),
    ),
    (
        "¿Cuánto cuesta el plan Growth al año?",
        ("$490",),
        ("plans-and-prices", "switching-billing-period", "monthly-vs-annual-billing"),
    ),
    (
        "Quels moyens de paiement acceptez-vous ?",
        ("Visa",),
        ("payment-methods",),
    ),
    (
        "Posso esportare i miei dati dei clienti? In quale formato?",
        ("CSV",),
        ("exporting-your-data", "data-retention"),
    ),
    (
        "Kann ich eine alte Rechnung mit unserer neuen Adresse neu ausstellen lassen?",
        ("90 days",),
        ("reissuing-an-invoice", "changing-billing-address"),
    ),
    (
        "¿Cuántos días tengo para pedir el reembolso de un plan anual?",
        ("30 days",),
        ("refunds-annual-plans", "requesting-a-refund"),
    ),
    (
        "Combien de temps gardez-vous mes données après la résiliation ?",
        ("90 days",),
        ("data-retention", "cancelling-your-subscription", "exporting-your-data"),
    ),
    (
        "Quanti utenti posso avere con il piano Scale?",
        ("25",),
        ("seats-per-plan", "team-members", "plans-and-prices"),
    ),
    (
        "Was kostet der Starter-Plan im Monat?",
        ("$19",),
        ("plans-and-prices",),
    ),
    (
        "Em quantos dias úteis o reembolso cai na conta depois de aprovado?",
        ("business days",),
        ("refund-timing", "refund-approval", "requesting-a-refund"),
    ),
]

OFF_TOPIC = [
    "Is there an integration with QuickBooks or Xero?",
    "what's the street address of your headquarters?",
    "Do you have an app for iPhone?",
    "Who is the CEO of Ledgerly?",
    "Do you offer a discount for charities?",
]


@pytest.fixture(scope="module")
def documents(django_db_setup, django_db_blocker) -> dict[str, str]:
    """Each question's `<documents>`, retrieved once from the ingested help center.

    Ingesting embeds every article, so it is done once for the module inside a transaction
    that is rolled back: later tests see an empty knowledge base, as they would otherwise.
    """
    questions = [q for q, _, _ in ANSWERABLE] + OFF_TOPIC
    with django_db_blocker.unblock(), transaction.atomic():
        services.helpcenter_ingest()
        found = {
            q: selectors.passages_as_documents(
                selectors.passages_search(query=q, k=PASSAGES, cache=False)
            )
            for q in questions
        }
        transaction.set_rollback(True)
    return found


@pytest.fixture
def ask(documents: dict[str, str], client: anthropic.Anthropic):
    """The FAQ lane's model call for a question, answered by the simulator."""
    system = prompt_registry.get("faq_answer").text

    def ask(question: str) -> str:
        message = client.messages.create(
            model="claude-haiku-5-5",
            max_tokens=500,
            system=system,
            messages=[
                {
                    "role": "user",
                    "content": f"{documents[question]}\n\nCustomer question:\n{question}",
                }
            ],
        )
        block = message.content[-1]
        assert isinstance(block, anthropic.types.TextBlock)
        return block.text

    return ask


def _normalised(text: str) -> str:
    return " ".join(text.replace("–", "-").replace("—", "-").split()).lower()


# Still missed by retrieval (the article itself is not in the top four): strict, so the day
# retrieval finds them the mark must go.
MISSED = {
    "can i get all my client and invoice data out of ledgerly? what formats",
    "Quanti utenti posso avere con il piano Scale?",
}
CASES = [_missed(*case) if case[0] in MISSED else case for case in ANSWERABLE]


def _has(answer: str, fact: str) -> bool:
    return any(_normalised(option) in _normalised(answer) for option in fact.split("|"))


@pytest.mark.parametrize(("question", "facts", "slugs"), CASES)
def test_a_question_the_help_center_answers_gets_its_facts_cited(
    ask, question: str, facts: tuple[str, ...], slugs: tuple[str, ...]
) -> None:
    answer = ask(question)

    assert NOT_FOUND not in answer
    assert all(_has(answer, fact) for fact in facts), answer
    assert set(CITATION.findall(answer)) & set(slugs), answer
    quoted = [p for p in re.split(r"\s*\[[a-z0-9-]+\]\s*", answer) if p]
    assert "|" not in answer
    assert all(p[0].isupper() and p.endswith((".", "!", "?")) for p in quoted), quoted


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_a_question_no_passage_is_about_is_not_answered(ask, question: str) -> None:
    answer = ask(question)

    assert NOT_FOUND in answer
    assert not CITATION.findall(answer)
