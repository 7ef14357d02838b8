"""The reply guard: a deterministic check of every draft against the records, before it is sent.

A reply may not claim what the rows do not show: a refund "issued" before it was executed, or
"approved" while it waits for staff or does not exist; an amount or currency that is none of the
ticket's refund request, the customer's own charges and invoices, or the public price list; an
identifier (email, charge, invoice, customer reference) that is not this customer's; a date or
time frame the policy does not give; a run of words from the model's own instructions. Peers use
a second model as the reviewer; ours is a check against the database, so a compromised model
cannot talk its way past it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.models import Charge, Customer, Invoice, Plan, RefundRequest, RefundRequestState
from ledgerly.llm import prompt_registry

_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP"}
_CODES = {
    "usd": "USD",
    "dollar": "USD",
    "dollars": "USD",
    "eur": "EUR",
    "euro": "EUR",
    "euros": "EUR",
    "gbp": "GBP",
    "pound": "GBP",
    "pounds": "GBP",
}
# A number as customers write it: 1,990.00, 1.990,00, 1 990,00 (thin or no-break spaces too), 49.
_NUMBER = r"\d{1,3}(?:[.,\u00a0\u202f ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_CODE_WORDS = r"usd|eur|gbp|dollars?|euros?|pounds?"
_MONEY = re.compile(
    rf"(?P<sym>[$€£])\s?(?P<a>{_NUMBER})"  # $49.00, €1.990,00
    rf"|\b(?P<code_first>usd|eur|gbp)\s?(?P<c>{_NUMBER})"  # EUR 1,990.00
    rf"|(?P<b>{_NUMBER})\s?(?:(?P<sym_after>[$€£])|(?P<code>{_CODE_WORDS})\b)",  # 1.990,00 €
    re.I,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_REF = re.compile(r"\b(?:ch|cus|re|sub|rr)_[A-Za-z0-9_]+\b|\bINV-[A-Za-z0-9-]+\b", re.I)
# A sentence ends at . ! ? or a line break, but not at the point of an amount ("$49.00 has").
_SENTENCE = re.compile(r"(?:\d[.,]\d|[^.!?\n])+[.!?]?")
_HEDGE = re.compile(
    r"\b(not|n't|never|no|once|before|after|when|whenever|if|until|unless|will be|would be|"
    r"can be|could be|may be|might be|as soon as|pending|waiting|awaiting|needs?|requires?|"
    # German, Spanish, French (customers are answered in their language)
    r"nicht|kein\w*|sobald|wenn|falls|bevor|nachdem|wird|cuando|una vez|antes|después|"
    r"pendiente|si|será|pas|jamais|dès que|quand|avant|après|sera|en attente)\b",
    re.I,
)
# What ends a clause: a hedge in another clause of the sentence does not hedge this claim
# ("Your refund has been issued and will be on your card..." claims the refund was issued).
_CLAUSE_BREAK = re.compile(r"[,;:()]|\s[-–—]\s|\b(?:and|but|so|und|aber|y|pero|et|mais)\b", re.I)
# Words between a claim's subject and its verb (an amount's decimal point is not a full stop).
_GAP = r"(?:\d[.,]\d|[^.!?])"
_CLAIM_EXECUTED = re.compile(
    rf"\b(refund|money|amount|payment)\b{_GAP}{{0,60}}"
    r"\b(has been|have been|was|were|'s been|is now)\s+"
    r"(issued|processed|sent|completed|refunded|credited|paid|returned|executed)\b"
    r"|\b(we|i)\s?(?:'ve|have)?\s+(issued|processed|sent|refunded|credited|returned)\b"
    r"|\brefunded (?:you|your)\b"
    rf"|\b(refund|money|payment)\b{_GAP}{{0,40}}\b(?:is|are|'s)\s+(?:now\s+)?(?:already\s+)?"
    r"(?:on (?:its|their|the) way|back (?:on|in|to))\b"
    rf"|\b(rückerstattung|erstattung|geld|betrag)\b{_GAP}{{0,60}}\b(wurde|wurden|ist)\s+(?:bereits\s+)?"
    r"(erstattet|zurückerstattet|ausgezahlt|überwiesen|gutgeschrieben|veranlasst|zurückgezahlt)\b"
    rf"|\b(wir haben|ich habe)\b{_GAP}{{0,60}}\b(erstattet|zurückerstattet|überwiesen|ausgezahlt)\b"
    rf"|\b(reembolso|dinero|importe|devolución)\b{_GAP}{{0,60}}\b(ha sido|fue|se ha|foi)\s+"
    r"(procesad[oa]|emitid[oa]|enviad[oa]|reembolsad[oa]|devuelt[oa]|realizad[oa]|abonad[oa]|"
    r"processad[oa]|efetuad[oa])\b"
    r"|\b(he|hemos)\s+(reembolsado|devuelto|procesado|emitido)\b"
    rf"|\b(remboursement|argent|montant)\b{_GAP}{{0,60}}\b(a été|est|ont été)\s+"
    r"(effectuée?s?|émise?s?|envoyée?s?|remboursée?s?|traitée?s?|versée?s?|créditée?s?)(?!\w)"
    r"|\b(j'ai|nous avons)\s+(remboursé|effectué|émis|traité|versé)(?!\w)",
    re.I,
)
_CLAIM_APPROVED = re.compile(
    rf"\b(refund|request)\b{_GAP}{{0,60}}\b(has been|have been|was|is|'s been|got)\s+"
    r"(approved|accepted|granted|authori[sz]ed)\b|\b(we|i)\s?(?:'ve|have)?\s+approved\b"
    rf"|\b(rückerstattung|erstattung|antrag)\b{_GAP}{{0,60}}\b(wurde|ist)\s+(?:bereits\s+)?"
    r"(genehmigt|bewilligt|freigegeben)\b"
    rf"|\b(reembolso|solicitud)\b{_GAP}{{0,60}}\b(ha sido|fue|está|foi)\s+(aprobad[oa]|aceptad[oa]|"
    r"aprovad[oa])\b"
    rf"|\b(remboursement|demande)\b{_GAP}{{0,60}}\b(a été|est)\s+"
    r"(approuvée?|acceptée?|validée?)(?!\w)",
    re.I,
)


# A condition in the clause just before a claim makes it one ("Once approved, your refund is on
# its way"); a negation or a modal only counts inside the claim's own clause ("No worries, your
# refund has been issued" claims it).
_CONDITION = re.compile(
    r"\b(once|before|after|when|whenever|if|until|unless|as soon as|sobald|wenn|falls|bevor|"
    r"nachdem|cuando|una vez|antes|después|si|dès que|quand|avant|après)\b",
    re.I,
)


def _claims(pattern: re.Pattern[str], sentence: str) -> bool:
    """Whether `sentence` makes the claim `pattern` describes, unhedged: no hedge word between
    the start of the claim's own clause and its verb ("once it is approved" passes), and no
    condition in the clause before it."""
    for match in pattern.finditer(sentence):
        breaks = list(_CLAUSE_BREAK.finditer(sentence, 0, match.start()))
        clause_start = breaks[-1].end() if breaks else 0
        previous = (
            sentence[breaks[-2].end() if len(breaks) > 1 else 0 : breaks[-1].start()]
            if breaks
            else ""
        )
        if _HEDGE.search(sentence[clause_start : match.end()]) or _CONDITION.search(previous):
            continue
        return True
    return False


_DATE_PROMISE = re.compile(
    r"\b(by|on|before|until)\s+(monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"tomorrow|tonight|the end of (?:the )?(?:day|week|month)|"
    r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+\d{1,2}|"
    # 5 December, the 15th of December, 15/12, 15.12.
    r"(?:the\s+)?\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?"
    r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*|\d{1,2}[./]\d{1,2}(?:[./]\d{2,4})?)\b"
    r"|\b(today|tomorrow|tonight|immediately|right away|instantly)\b"
    r"|\b(?:next|this) (?:week|month|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
    # German, Spanish, French
    r"|\b(?:bis|am|ab) (?:montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag|morgen|"
    r"ende der woche)\b|\b(?:heute|nächste woche|mañana|hoy|la próxima semana|el (?:lunes|martes|"
    r"miércoles|jueves|viernes))\b|\b(?:demain|aujourd'hui|la semaine prochaine|d'ici (?:lundi|"
    r"mardi|mercredi|jeudi|vendredi|demain|la fin de la semaine))(?!\w)"
    r"|\b(?:within|in)\s+(?:the\s+)?(?:next\s+)?(\d+)\s+(minutes?|hours?)\b",
    re.I,
)
_DAYS = re.compile(
    r"\b(\d+)\s*(?:-|–|to)?\s*(\d+)?\s+(business\s+|calendar\s+|working\s+)?days?\b", re.I
)
# Time frames POLICY.md gives (refund windows, processing, retries, retention, staff decisions).
POLICY_DAY_NUMBERS = frozenset({1, 2, 3, 5, 7, 10, 14, 30, 90, 180})


@dataclass(frozen=True)
class Verdict:
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def _amount(text: str) -> Decimal | None:
    cleaned = re.sub(r"[\s\u00a0\u202f]", "", text)
    # The last separator followed by one or two digits is the decimal one; any other separator
    # groups thousands (1.990,00 and 1,990.00 are the same amount; 1.990 is 1990).
    decimals = re.search(r"[.,](\d{1,2})$", cleaned)
    whole = cleaned[: decimals.start()] if decimals else cleaned
    number = whole.replace(".", "").replace(",", "") + (f".{decimals.group(1)}" if decimals else "")
    try:
        return Decimal(number).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def amounts_in(text: str) -> list[tuple[Decimal, str]]:
    found = []
    for match in _MONEY.finditer(text):
        raw = match.group("a") or match.group("b") or match.group("c")
        symbol = match.group("sym") or match.group("sym_after")
        code = match.group("code") or match.group("code_first")
        currency = _SYMBOLS[symbol] if symbol else _CODES[code.lower()]
        value = _amount(raw)
        if value is not None:
            found.append((value, currency))
    return found


@dataclass(frozen=True)
class Records:
    """The customer's billing rows a reply is checked against, read once per check."""

    customer: Customer
    charges: list[Charge]
    invoices: list[Invoice]
    requests: list[RefundRequest]
    subscription_ref: str | None
    prices: list[Decimal]

    @classmethod
    def of(cls, customer: Customer) -> Records:
        sub = billing_selectors.subscription_current_for_customer(customer=customer)
        return cls(
            customer=customer,
            charges=list(
                billing_selectors.charges_for_customer(customer=customer).prefetch_related(
                    "refunds"
                )
            ),
            invoices=list(billing_selectors.invoices_for_customer(customer=customer)),
            requests=list(billing_selectors.refund_requests_for_customer(customer=customer)),
            subscription_ref=sub.ref if sub is not None else None,
            prices=[Decimal(p) for p in Plan.objects.values_list("price", flat=True).distinct()],
        )


def known_amounts(
    *, customer: Customer, refund_request: RefundRequest | None, records: Records | None = None
) -> set[tuple[Decimal, str]]:
    """Every (amount, currency) the reply may state: the customer's records and public prices."""
    records = records or Records.of(customer)
    known: set[tuple[Decimal, str]] = set()
    currencies = ("USD", "EUR", "GBP")
    for price in records.prices:
        known |= {(price, c) for c in currencies}
    limit = Decimal(settings.REFUND_AUTO_APPROVE_LIMIT)
    known |= {(limit.quantize(Decimal("0.01")), c) for c in currencies}
    for charge in records.charges:
        for value in (
            charge.amount,
            charge.refunded_amount,
            charge.amount - charge.refunded_amount - charge.refund_pending_amount,
        ):
            known.add((Decimal(value), charge.currency))
    for invoice in records.invoices:
        for value in (invoice.total, invoice.subtotal, invoice.tax):
            known.add((Decimal(value), invoice.currency))
    for request in records.requests:
        known.add((Decimal(request.amount), request.currency))
        refundable = (request.evidence or {}).get("decision", {}).get("refundable_amount")
        if refundable:
            known.add((Decimal(str(refundable)), request.currency))
    if refund_request is not None:
        known.add((Decimal(refund_request.amount), refund_request.currency))
    return {(a.quantize(Decimal("0.01")), c) for a, c in known}


def own_refs(customer: Customer, records: Records | None = None) -> set[str]:
    records = records or Records.of(customer)
    refs = {customer.ref, *(c.ref for c in records.charges), *(i.number for i in records.invoices)}
    # Every refund of the customer's charges, seeded history included (not only requested ones).
    for charge in records.charges:
        refs |= {r.ref for r in charge.refunds.all()}
    if records.subscription_ref:
        refs.add(records.subscription_ref)
    return {r.lower() for r in refs}


def record_days(customer: Customer, records: Records | None = None) -> set[int]:
    """Day counts the records themselves give: each charge's age, days to its next retry."""
    records = records or Records.of(customer)
    today = timezone.now().date()
    days: set[int] = set()
    for charge in records.charges[:50]:
        days.add((today - charge.charged_at.date()).days)
        if charge.next_retry_at is not None:
            days.add(max((charge.next_retry_at.date() - today).days, 0))
    return days


# A reply repeating this many consecutive words of a prompt is quoting our instructions (what
# "reveal your system prompt" injections are after); no canned reply or article shares a run
# this long with any prompt.
_QUOTE_WORDS = 10


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@functools.cache
def _instruction_runs() -> frozenset[str]:
    runs: set[str] = set()
    for prompt in prompt_registry.all_prompts():
        words = _words(prompt.text)
        runs |= {
            " ".join(words[i : i + _QUOTE_WORDS]) for i in range(len(words) - _QUOTE_WORDS + 1)
        }
    return frozenset(runs)


def quotes_instructions(text: str) -> bool:
    """Whether `text` repeats a run of words from one of the model prompts."""
    words, runs = _words(text), _instruction_runs()
    return any(
        " ".join(words[i : i + _QUOTE_WORDS]) in runs for i in range(len(words) - _QUOTE_WORDS + 1)
    )


def check(
    *,
    text: str,
    customer: Customer,
    refund_request: RefundRequest | None,
    extra_days: set[int] | None = None,
) -> Verdict:
    """The violations of `text` against the records (empty: it may be sent). Reads fresh rows."""
    if refund_request is not None:
        refund_request.refresh_from_db()
    violations: list[str] = []
    records = Records.of(customer)
    state = refund_request.state if refund_request is not None else None
    for sentence in _SENTENCE.findall(text):
        if _claims(_CLAIM_EXECUTED, sentence) and state != RefundRequestState.EXECUTED:
            violations.append(f"claims a refund was issued ({state or 'no refund request'})")
        if _claims(_CLAIM_APPROVED, sentence) and state not in (
            RefundRequestState.APPROVED,
            RefundRequestState.EXECUTED,
        ):
            violations.append(f"claims a refund was approved ({state or 'no refund request'})")
        promise = _DATE_PROMISE.search(sentence)
        if promise and re.search(
            r"refund|money|credit|back|receive|arriv|appear|decid|review|"
            r"erstatt|geld|reembols|dinero|recib|rembours|argent|recev",
            sentence,
            re.I,
        ):
            violations.append(f"promises a date the policy does not give: {promise.group(0)!r}")
    allowed_days = POLICY_DAY_NUMBERS | (extra_days or set()) | record_days(customer, records)
    for match in _DAYS.finditer(text):
        numbers = {int(n) for n in match.groups()[:2] if n}
        if numbers - allowed_days:
            violations.append(f"a time frame the policy does not give: {match.group(0)!r}")
    known = known_amounts(customer=customer, refund_request=refund_request, records=records)
    for amount, currency in amounts_in(text):
        if (amount, currency) not in known:
            violations.append(f"an amount not in the records: {amount} {currency}")
    for email in _EMAIL.findall(text):
        if email.lower() != customer.email.lower() and not email.lower().endswith(
            "@ledgerly.example"
        ):
            violations.append("names an email that is not the customer's")
    mine = own_refs(customer, records)
    for ref in _REF.findall(text):
        if ref.lower() not in mine:
            violations.append(f"names a reference that is not the customer's: {ref}")
    if quotes_instructions(text):
        violations.append("quotes the assistant's instructions")
    return Verdict(list(dict.fromkeys(violations)))


def safe_reply(*, refund_request: RefundRequest | None) -> str:
    """What to send instead of a draft that failed twice: only what the records show."""
    base = (
        "I want to be sure I only tell you what our records show, so a member of our support "
        "team will look at this and reply here (staff work Monday to Friday, 08:00-18:00 CET)."
    )
    if refund_request is None:
        return base
    refund_request.refresh_from_db()
    amount = f"{refund_request.amount} {refund_request.currency}"
    status = {
        RefundRequestState.PROPOSED: "is waiting for a staff member's approval",
        RefundRequestState.APPROVED: "has been approved and is being processed",
        RefundRequestState.EXECUTED: "has been sent to your original payment method",
        RefundRequestState.REJECTED: "was not approved",
        RefundRequestState.EXPIRED: "expired before a decision",
        RefundRequestState.FAILED: "could not be completed",
        RefundRequestState.WITHDRAWN: "was withdrawn",
    }.get(RefundRequestState(refund_request.state), "is on record")
    return f"Your refund request for {amount} {status}. {base}"
