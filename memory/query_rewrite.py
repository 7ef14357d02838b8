"""Query rewriting for help-center retrieval: customers' words in Spanish, German and French.

Both encoders (wordllama, all-MiniLM-L6-v2) and Postgres' English full-text configuration only
know English, and the help center is written in English, so a question such as "Wie kann ich
mein Abo kündigen?" lands on unrelated passages. `expand` appends the English help-center terms
for the foreign billing words it finds; the original words stay, so nothing is lost when a word
is also English. The glossary covers the help center's topics (plans, prices, seats, refunds,
charges, payments, invoices, VAT, cancelling, data, support), written from the articles'
vocabulary, not from benchmark questions. A translation model would cover more, but none ships
inside a wheel here, and this table is cheap, deterministic and reviewable.

Pure functions (no database).
"""

from __future__ import annotations

import re
import unicodedata

# Bump when the glossary changes: cached retrieval results are keyed by it.
VERSION = "1"

# foreign word or phrase (accents stripped, lower case) -> English help-center words.
# A phrase is matched before the words in it ("doppelt belastet" before "belastet").
_GLOSSARY: dict[str, str] = {
    # --- Spanish ---
    "cuanto cuesta": "price cost",
    "precio": "price",
    "precios": "prices pricing",
    "cuesta": "cost price",
    "tarifa": "plan price",
    "suscripcion": "subscription",
    "cancelar": "cancel",
    "darme de baja": "cancel subscription",
    "reembolso": "refund",
    "reembolsar": "refund",
    "devolucion": "refund money back",
    "devolver": "refund money back",
    "factura": "invoice",
    "facturas": "invoices",
    "recibo": "receipt invoice",
    "cobraron": "charged",
    "cobro": "charge",
    "cobrado": "charged",
    "dos veces": "twice duplicate",
    "duplicado": "duplicate",
    "pago": "payment",
    "pagar": "pay payment",
    "tarjeta": "card",
    "tarjeta de credito": "credit card",
    "transferencia": "bank transfer",
    "domiciliacion": "direct debit SEPA",
    "fallido": "failed",
    "rechazado": "declined failed",
    "usuarios": "users seats",
    "usuario": "user seat",
    "equipo": "team",
    "mensual": "monthly",
    "al mes": "per month monthly",
    "anual": "annual yearly",
    "al ano": "per year annual",
    "mejorar": "upgrade",
    "cambiar de plan": "change plan upgrade downgrade",
    "moneda": "currency",
    "exportar": "export",
    "datos": "data",
    "iva": "VAT",
    "numero de iva": "VAT ID",
    "direccion": "address",
    "soporte": "support",
    "horario": "support hours",
    "cuenta": "account",
    "bloqueada": "locked read-only",
    "disputa": "dispute chargeback",
    "contracargo": "chargeback",
    # --- German ---
    "kosten": "cost price",
    "kostet": "costs price",
    "preis": "price",
    "preise": "prices pricing",
    "tarif": "plan",
    "abo": "subscription",
    "abonnement": "subscription",
    "kundigen": "cancel",
    "kundigung": "cancellation cancel",
    "erstattung": "refund",
    "ruckerstattung": "refund",
    "erstatten": "refund",
    "geld zuruck": "money back refund",
    "rechnung": "invoice",
    "rechnungen": "invoices",
    "quittung": "receipt",
    "doppelt belastet": "charged twice duplicate charge",
    "doppelt": "twice duplicate",
    "zweimal": "twice",
    "belastet": "charged",
    "abbuchung": "charge",
    "zahlung": "payment",
    "zahlen": "pay",
    "bezahlen": "pay",
    "fehlgeschlagen": "failed",
    "abgelehnt": "declined",
    "karte": "card",
    "kreditkarte": "credit card",
    "lastschrift": "SEPA direct debit",
    "uberweisung": "bank transfer",
    "nutzer": "users seats",
    "benutzer": "users seats",
    "mitarbeiter": "team members users",
    "monatlich": "monthly",
    "jahrlich": "annual yearly",
    "pro jahr": "per year annual",
    "pro monat": "per month monthly",
    "wahrung": "currency",
    "exportieren": "export",
    "daten": "data",
    "ust idnr": "VAT ID",
    "ust id": "VAT ID",
    "umsatzsteuer": "VAT",
    "mehrwertsteuer": "VAT",
    "mwst": "VAT",
    "steuernummer": "tax ID VAT ID",
    "eintragen": "add enter",
    "adresse": "address",
    "anschrift": "address",
    "kundendienst": "support contact",
    "konto": "account",
    "gesperrt": "locked read-only",
    "ruckbuchung": "chargeback dispute",
    # --- French ---
    "combien coute": "price cost",
    "prix": "price",
    "tarifs": "prices pricing",
    "abonnement mensuel": "monthly subscription",
    "resilier": "cancel",
    "annuler": "cancel",
    "remboursement": "refund",
    "rembourser": "refund",
    "rembourse": "refund",
    "facture": "invoice",
    "factures": "invoices",
    "recu": "receipt",
    "debite deux fois": "charged twice duplicate charge",
    "deux fois": "twice duplicate",
    "debite": "charged",
    "preleve": "charged",
    "paiement": "payment",
    "payer": "pay",
    "echoue": "failed",
    "carte": "card",
    "carte bancaire": "card",
    "prelevement": "SEPA direct debit",
    "virement": "bank transfer",
    "utilisateur": "user seat team member",
    "utilisateurs": "users seats",
    "mensuel": "monthly",
    "annuel": "annual yearly",
    "par an": "per year annual",
    "par mois": "per month monthly",
    "devise": "currency",
    "exporter": "export",
    "donnees": "data",
    "tva": "VAT",
    "numero de tva": "VAT ID",
    "adresse de facturation": "billing address",
    "assistance": "support",
    "compte": "account",
    "bloque": "locked read-only",
    "litige": "dispute chargeback",
    "ajouter": "add",
}

_WORDS = re.compile(r"[a-z0-9]+")
_PATTERNS: list[tuple[re.Pattern[str], str]] = sorted(
    (
        (re.compile(r"(?<![a-z0-9])" + r"\s+".join(phrase.split()) + r"(?![a-z0-9])"), english)
        for phrase, english in _GLOSSARY.items()
    ),
    key=lambda item: -len(item[0].pattern),
)


def fold(text: str) -> str:
    """Lower case without accents or punctuation ("¿Cuánto?" -> "cuanto"; "ü" -> "u")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_WORDS.findall(stripped.replace("ß", "ss")))


def expansions(query: str) -> list[str]:
    """The English terms for the foreign billing words in `query`, in order, without repeats."""
    folded = f" {fold(query)} "
    found: list[str] = []
    for pattern, english in _PATTERNS:
        if pattern.search(folded):
            found.append(english)
            # Blank the phrase so its words do not match again on their own.
            folded = pattern.sub(" ", folded)
    return list(dict.fromkeys(w for terms in found for w in terms.split()))


def expand(query: str) -> str:
    """`query` with the English terms for its foreign billing words appended (unchanged when
    it has none, which is the case for every English question)."""
    extra = expansions(query)
    return f"{query} ({' '.join(extra)})" if extra else query
