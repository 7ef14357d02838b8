"""Small, deterministic language heuristics: terms, sentences, and what a ticket is about."""

from __future__ import annotations

import re
from dataclasses import dataclass

WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)?")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+")

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "hi",
        "hello",
        "hey",
        "thanks",
        "thank",
        "please",
        "ledgerly",
        "help",
        "know",
        "want",
        "like",
        "tell",
        "question",
        "need",
        "get",
        "got",
        "also",
        "im",
        "ive",
        "dont",
        "cant",
        "much",
        "many",
        "one",
        "really",
        "still",
        "let",
        "us",
    ]
)

# A question word matches a passage that uses a related word ("how long" -> days).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "long": ("day", "days", "week"),
    "cost": ("price", "$", "monthly", "annual"),
    "price": ("cost", "$", "monthly"),
    "cancel": ("cancellation", "cancel"),
    "money": ("refund",),
    "back": ("refund", "return"),
    "bill": ("invoice", "charge", "billing"),
    "charged": ("charge",),
    "twice": ("duplicate", "double"),
    "duplicate": ("twice", "double"),
    "double": ("duplicate", "twice"),
    "pay": ("payment",),
    "card": ("visa", "mastercard", "payment"),
    "delete": ("deleted", "kept"),
    "vat": ("tax", "vat"),
}


def stem(word: str) -> str:
    """A crude suffix stripper: charge/charged/charges -> charg, refunds -> refund."""
    for suffix in ("ations", "ation", "ings", "ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def terms(text: str) -> set[str]:
    return {stem(w) for w in WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def key_terms(question: str) -> set[str]:
    return {t for t in terms(question) if len(t) > 2 or t.isdigit()}


def covers(term: str, passage_terms: set[str], passage_lower: str) -> bool:
    if term in passage_terms:
        return True
    return any(
        stem(s) in passage_terms or (not s.isalnum() and s in passage_lower)
        for s in SYNONYMS.get(term, ())
    )


def sentences(text: str) -> list[str]:
    parts = [p.strip() for p in SENTENCE.split(text)]
    return [p for p in parts if p]


def _has(text: str, *patterns: str) -> bool:
    return any(re.search(p, text) for p in patterns)


REFUND = (
    r"\brefund",
    r"money back",
    r"charged (me )?twice",
    r"double[- ]charg",
    r"duplicate charge",
    r"charged two times",
    r"overcharg",
    r"reimburs",
    r"\bcharged .* twice",
)
DISPUTE = (
    r"\bdispute",
    r"chargeback",
    r"charge back",
    r"\bfraud",
    r"unauthori[sz]ed",
    r"didn'?t authori[sz]e",
    r"not authori[sz]ed",
    r"\blawyer",
    r"\blegal action",
)
PERSONAL = (
    r"\bi (was|got|have been|'ve been|am being) (charged|billed|debited)",
    r"\b(charged|billed) (me|us|my|our)\b",
    r"\b(my|our) (card|account|invoice|charge|payment|"
    r"bank|subscription|plan|statement)",
    r"\bmoney back",
    r"\brefund (me|us|my)\b",
    r"\b(i|we) (want|would like|'d like|need) (a |my |our )?refund",
    # "Can I get a refund?" from a customer is about their own charge; "... on an annual plan?"
    # or "... if ...?" is a policy question.
    r"\b(can|could|may) (i|we) (get|have) (a |my |our )?refund\b"
    r"(?! (on|for|of) (a|an|the)\b)(?! if)",
    r"\bch_\w+",
    r"\binv-",
    r"\bwhy (was|did|were|am|is) (i|we|my|you)",
)
QUESTION = (
    r"^\s*(how|what|when|where|which|who|why|can|could|do|does|is|are|will|should)\b",
    r"\?\s*$",
    r"\?",
)
TOPICS: dict[str, tuple[str, ...]] = {
    "refund": REFUND,
    # A bare invoice number is usually the subject of another issue; these are invoice issues.
    "invoice": (
        r"\bvat\b",
        r"billing address",
        r"\breceipt",
        r"reissu",
        r"company name",
        r"invoice (is |was )?(wrong|incorrect|missing)",
        r"(download|find) .{0,20}invoice",
        r"tax id",
    ),
    "payment": (
        r"payment (failed|declined)",
        r"\bdeclined",
        r"\bcard (was )?(declined|expired)",
        r"failed payment",
        r"read[- ]only",
    ),
    "plan": (r"\bupgrad", r"\bdowngrad", r"\bswitch (to|plan)", r"\bseats?\b"),
    "cancel": (r"\bcancel",),
    "data": (r"\bexport", r"\bdelete my data", r"\bgdpr"),
    "access": (r"\blog ?in\b", r"\bpassword", r"\blocked out"),
}


@dataclass(frozen=True)
class Signals:
    refund: bool
    dispute: bool
    personal: bool
    question: bool
    topics: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> Signals:
        lower = text.lower()
        topics = tuple(name for name, pats in TOPICS.items() if _has(lower, *pats))
        return cls(
            refund=_has(lower, *REFUND),
            dispute=_has(lower, *DISPUTE),
            personal=_has(lower, *PERSONAL),
            question=_has(lower, *QUESTION),
            topics=topics,
        )

    @property
    def several_issues(self) -> bool:
        return self.personal and len(set(self.topics) - {"cancel"}) >= 2

    @property
    def lane(self) -> str:
        """faq | refund | agent, cheapest sensible lane first."""
        if self.dispute or self.several_issues:
            return "agent"
        if self.refund and self.personal:
            return "refund"
        if self.question and not self.personal:
            return "faq"
        if self.personal:
            return "agent"
        return "faq" if self.question else "agent"

    @property
    def confidence(self) -> float:
        if self.dispute or (self.refund and self.personal and len(self.topics) == 1):
            return 0.92
        if self.question and not self.personal:
            return 0.88
        if self.several_issues:
            return 0.8
        return 0.6
