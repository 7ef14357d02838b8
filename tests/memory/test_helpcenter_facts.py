"""Every fact of the company's policy is stated, with its exact numbers, in some article."""

from __future__ import annotations

import pytest

from memory.knowledge import HELPCENTER_DIR, chunk_body, load_directory

ARTICLES = load_directory(HELPCENTER_DIR)

# Each fact: phrases that must all appear together in one article (numbers exactly as in policy).
FACTS = {
    "starter prices": ["Starter", "$19", "$190"],
    "growth prices": ["Growth", "$49", "$490"],
    "scale prices": ["Scale", "$199", "$1,990"],
    "annual is 2 months free": ["annual", "2 months free"],
    "starter seats": ["Starter", "1 seat"],
    "growth seats": ["Growth", "5 seats"],
    "scale seats": ["Scale", "25 seats"],
    "starter invoices": ["Starter", "50 invoices"],
    "growth invoices": ["Growth", "500 invoices"],
    "scale invoices": ["Scale", "unlimited invoices"],
    "currencies": ["USD", "EUR", "GBP", "same numeric price"],
    "currency kept": ["keeps the currency it started in"],
    "upgrade at once, prorated": ["upgrade takes effect at once", "prorated charge"],
    "downgrade next period": ["downgrade takes effect at the next period"],
    "monthly refund 14 days": ["monthly", "full refund", "within 14 days", "no refund"],
    "annual refund 30 days": ["annual", "within 30 days", "whole charge is refunded"],
    "annual prorated 6 months": ["prorated refund of the unused whole months", "within 6 months"],
    "annual none after 6 months": ["no refund of an annual charge", "more than 6 months"],
    "duplicate 180 days": ["duplicate charge is always refunded in full", "180 days"],
    "refund never exceeds remainder": ["never exceeds what is left of the charge"],
    "partial refunds": ["Partial refunds are allowed"],
    "original payment method": ["original payment method"],
    "5-10 business days": ["5\u201310 business days"],
    "staff approval": ["Every refund needs a staff approval"],
    "auto-approval $25": ["$25 or less", "approved automatically"],
    "1 business day": ["Staff decide refund requests within 1 business day"],
    "disputes": ["under dispute", "cannot be refunded through support"],
    "cards": ["Visa", "Mastercard", "American Express"],
    "sepa for EUR": ["SEPA Direct Debit", "EUR accounts only"],
    "bank transfer scale annual": ["Bank transfer", "only for Scale annual"],
    "retries": ["days 1, 3 and 7 after the failure"],
    "read-only after 14 days": [
        "read-only after 14 days unpaid",
        "restored as soon as the invoice is paid",
    ],
    "invoice each billing date, PDF": ["invoice on each billing date", "PDF", "Billing → Invoices"],
    "address change future invoices": ["billing address", "applies to future invoices"],
    "reissue once within 90 days": ["invoice from the last 90 days can be reissued once"],
    "vat id future invoices": ["VAT ID", "applies to future invoices"],
    "EU VAT rate": ["charged VAT at their country's rate"],
    "reverse charge": ["valid EU VAT ID", "reverse charge", "0% VAT"],
    "cancel": ["cancel any time from Settings → Billing", "runs to the end of the paid period"],
    "export": ["CSV or JSON at any time"],
    "retention": ["kept 90 days after cancellation", "deleted"],
    "assistant around the clock": ["assistant answers around the clock"],
    "human hours": ["Monday\u2013Friday, 08:00\u201318:00 CET"],
}


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


@pytest.mark.parametrize(("fact", "phrases"), FACTS.items(), ids=list(FACTS))
def test_policy_fact_is_stated_in_some_article(fact, phrases):
    holders = [
        a.slug
        for a in ARTICLES
        if all(_normalise(p) in _normalise(f"{a.title}\n{a.body}") for p in phrases)
    ]
    assert holders, f"no article states {fact!r} with {phrases}"


def test_help_center_has_at_least_25_articles_with_unique_slugs():
    assert len(ARTICLES) >= 25
    assert len({a.slug for a in ARTICLES}) == len(ARTICLES)


@pytest.mark.parametrize("article", ARTICLES, ids=[a.slug for a in ARTICLES])
def test_every_article_has_title_section_and_passages(article):
    assert article.title
    assert article.section
    assert chunk_body(article.body)


@pytest.mark.parametrize("article", ARTICLES, ids=[a.slug for a in ARTICLES])
def test_no_article_promises_a_refund_to_a_card(article):
    # Refunds go back to the original payment method, which may be a SEPA bank account or a
    # bank transfer (Scale annual), not always a card.
    assert "back to your card" not in _normalise(article.body)


@pytest.mark.parametrize("article", ARTICLES, ids=[a.slug for a in ARTICLES])
def test_an_article_offering_export_after_cancelling_says_for_90_days(article):
    body = _normalise(article.body)
    offers_export_after_cancelling = "export" in body and "after you cancel" in body

    assert "90 days" in body or not offers_export_after_cancelling
