"""The semantic answer cache's rules, as pure functions (no database).

Two guards decide what may be cached and what may be served:

- `customer_specific_reasons(text)`: an answer (or question) naming an email address, an invoice
  number (INV-…), a charge reference (ch_…) or an amount the help center does not state is about
  one customer and is never cached.
- `discriminators(text)`: the words that change the answer while barely moving a bag-of-words
  embedding (monthly vs annual, add vs remove, upgrade vs downgrade, Visa vs SEPA, Starter vs
  Scale, numbers...). A cached answer is served only when the new question has the same set.
  bench/semantic_cache.py measures cosine alone against cosine + this guard on labelled
  paraphrases and near-misses; the guard is what lets paraphrases hit with no false hit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_INVOICE = re.compile(r"\bINV-[\w-]+", re.I)
_CHARGE = re.compile(r"\b(?:ch|re|pi|in)_[A-Za-z0-9]{4,}")
_AMOUNT = re.compile(
    r"(?:[$€£]\s?(\d[\d,]*(?:\.\d{1,2})?))|(?:(\d[\d,]*(?:\.\d{1,2})?)\s?(?:USD|EUR|GBP)\b)", re.I
)


def amounts_in(text: str) -> set[str]:
    """Money amounts in `text`, normalised ("$1,990.00" and "€1990" -> "1990")."""
    found = set()
    for match in _AMOUNT.finditer(text):
        raw = (match.group(1) or match.group(2)).replace(",", "")
        value = raw.rstrip("0").rstrip(".") if "." in raw else raw
        found.add(value)
    return found


def customer_specific_reasons(text: str, *, public_amounts: Iterable[str] = ()) -> list[str]:
    """Why `text` is about one customer (empty when it is generic, i.e. cacheable).

    `public_amounts` are the amounts the help center states (prices, limits, examples);
    any other amount is taken to be a customer's own.
    """
    reasons = []
    if _EMAIL.search(text):
        reasons.append("email address")
    if _INVOICE.search(text):
        reasons.append("invoice number")
    if _CHARGE.search(text):
        reasons.append("payment reference")
    private = sorted(amounts_in(text) - set(public_amounts))
    if private:
        reasons.append(f"amount not in the help center: {', '.join(private)}")
    return reasons


# Each group lists contrasting alternatives; a phrase maps to one canonical value.
# Longer phrases are matched first, so "bank transfer" wins over "transfer".
_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "period": {
        "monthly": ("monthly", "month", "months", "per month", "a month", "every month"),
        "annual": ("annual", "annually", "yearly", "year", "years", "per year", "12 months"),
    },
    "plan": {"starter": ("starter",), "growth": ("growth",), "scale": ("scale",)},
    "direction": {
        "upgrade": ("upgrade", "upgrading", "move up", "bigger plan", "larger plan"),
        "downgrade": ("downgrade", "downgrading", "move down", "smaller plan", "cheaper plan"),
    },
    "edit": {
        "add": ("add", "adding", "enter", "put", "register", "invite"),
        "remove": ("remove", "removing", "delete", "deleting", "take off", "deregister"),
        "change": ("change", "changing", "update", "updating", "switch", "correct"),
        "pause": ("pause", "suspend"),
        "reactivate": ("reactivate", "resume", "restart"),
    },
    "method": {
        "visa": ("visa",),
        "mastercard": ("mastercard", "master card"),
        "maestro": ("maestro",),
        "amex": ("american express", "amex"),
        "sepa": ("sepa", "direct debit"),
        "bank_transfer": ("bank transfer", "wire transfer", "wire"),
        "paypal": ("paypal",),
    },
    "currency": {
        "usd": ("usd", "dollar", "dollars", "us dollars"),
        "eur": ("eur", "euro", "euros"),
        "gbp": ("gbp", "pound", "pounds", "sterling"),
    },
    "format": {"csv": ("csv",), "json": ("json",), "pdf": ("pdf",)},
    "when": {
        "within": ("within", "before", "less than"),
        "after": ("after", "more than", "past", "later than"),
        "first": ("first",),
        "last": ("last", "final"),
    },
    "negation": {"without": ("without", "no longer", "not have")},
    "identity": {
        "different": ("different", "another", "other"),
        "same": ("same", "original"),
    },
    "days": {
        "weekday": ("weekday", "weekdays", "monday", "friday"),
        "weekend": ("weekend", "weekends", "saturday", "sunday"),
    },
    "thing": {
        "refund_request": ("refund request",),
        "dispute": ("dispute", "disputed", "chargeback"),
        "duplicate": ("duplicate", "charged twice", "double charge", "double charged"),
        "seat": ("seat", "seats", "user", "users", "team member", "team members"),
        "invoice_count": (
            "how many invoices",
            "invoice limit",
            "invoices per month",
            "limit on invoices",
        ),
        "address": ("address",),
        "vat": ("vat id", "vat number"),
        "data": ("data",),
        "refund": ("refund", "refunds", "refunded", "money back"),
    },
}

_PHRASES: list[tuple[re.Pattern[str], str]] = sorted(
    (
        (re.compile(rf"\b{re.escape(phrase)}\b"), f"{group}:{value}")
        for group, values in _GROUPS.items()
        for value, phrases in values.items()
        for phrase in phrases
    ),
    key=lambda item: -len(item[0].pattern),
)
# Groups whose order in a question matters ("from Starter to Growth"); topic words do not.
_ORDERED_GROUPS = {"period", "plan", "direction", "method", "currency", "format"}
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def discriminators(text: str) -> frozenset[str]:
    """The answer-changing terms of a question, canonicalised (see the module docstring).

    When a question names two values of one group ("from monthly to annual"), their order is a
    term too: a bag-of-words embedding cannot tell "monthly to annual" from "annual to monthly".
    """
    lowered = " " + text.lower().replace("-", " ") + " "
    positions: list[tuple[int, str]] = []
    for pattern, value in _PHRASES:
        for match in pattern.finditer(lowered):
            positions.append((match.start(), value))
        # Blank the match out so "bank transfer" does not also count as "transfer".
        lowered = pattern.sub(lambda m: " " * len(m.group()), lowered)
    found = {value for _, value in positions}
    found.update(f"number:{n.replace(',', '')}" for n in _NUMBER.findall(lowered))
    by_group: dict[str, list[str]] = {}
    for _, value in sorted(positions):
        group = value.split(":", 1)[0]
        if group not in _ORDERED_GROUPS:
            continue
        values = by_group.setdefault(group, [])
        if value not in values:
            values.append(value)
    found.update("order:" + ">".join(values) for values in by_group.values() if len(values) > 1)
    return frozenset(found)


def guard_allows(cached_question: str, question: str) -> bool:
    """True when the two questions agree on every answer-changing term."""
    return discriminators(cached_question) == discriminators(question)
