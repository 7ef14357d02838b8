"""Small, deterministic language heuristics: terms, sentences, and what a ticket is about."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from . import lexicon

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
    for suffix in ("ations", "ation", "ings", "ing", "ies", "ied", "es", "ed", "s"):
        # A short plural too (days -> day, fees -> fee), but not "-ss" (express, access).
        shortest = 2 if suffix == "s" else 3
        if suffix == "s" and word.endswith("ss"):
            continue
        if len(word) > len(suffix) + shortest and word.endswith(suffix):
            word = word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
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


# --------------------------------------------------------------------------------- reading passages
def fold(text: str) -> str:
    """Lower case without accents, so "Rückerstattung", "días" and "données" match the lexicon."""
    text = text.lower().replace("ß", "ss")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


FOLDED_WORD = re.compile(r"[a-z0-9]+(?:[.,:][0-9]+)*")
# Words that name no subject of their own ("plan" is in nearly every passage): they count a
# little towards a match, never alone.
GENERIC = lexicon.words(
    "plan account subscription customer client use using used way time new old thing things "
    "option options able possible work service business company team also there ur whats "
    "okay ok bit lot lots sure go going make made someone anyone something"
)
GENERIC_WEIGHT = 0.3
# The plans' names say which plan a question is about, not what it asks.
NAMES = frozenset(["starter", "growth", "scale"])
EXTRA_STOPWORDS = lexicon.words(
    "other others ever any anything every everything already yet once exactly actually "
    "basically currently right wondering wonder curious quick quickly went come comes came "
    "goes whole stuff might maybe perhaps "
    # what is left of a contraction once its apostrophe is a space ("don't" -> "don t")
    "don doesn didn isn aren wasn weren won wouldn couldn shouldn haven hasn ll ve re"
)
# The question asks for a quantity or a date: a sentence with a number answers it better.
QUANTITY = re.compile(
    r"\bhow (long|much|many|often|far|soon)\b|\bwhen\b|\bby when\b|\bcheap|\bprice|\bcost|"
    r"\bhours?\b|\bopen\b|\blimit|\bmax|\bdeadline|\bcuant|\bquant|\bwie (lange|viel)|"
    r"\bwann\b|\bcombien\b|"
    r"\bquand\b|\bcuando\b|\bkost|\bprix\b|\bprecio|\bpreco|\bprezzo"
)


@dataclass(frozen=True)
class Concept:
    """One thing the question asks about, and the passage words that count as it."""

    word: str
    forms: frozenset[str]  # stems
    symbols: tuple[str, ...]  # literal marks such as "$"
    weight: float
    own: frozenset[str] = frozenset()  # the asked word's own stems (not its synonyms)

    @property
    def subject(self) -> bool:
        """A word that can make a passage about the question (not "plan" or "Growth")."""
        return self.weight == 1.0

    def in_words(self, stems: set[str], text: str) -> bool:
        if self.forms & stems or any(s in text for s in self.symbols):
            return True
        # "cancel" ~ "cancell(ation)", "export" ~ "exporting": the asked word with a suffix.
        return any(
            len(a) >= 5 and b.startswith(a) and len(b) - len(a) <= 4
            for a in self.own
            for b in stems
            if len(b) > len(a)
        )


def _concept(word: str, english: tuple[str, ...], *, phrase: bool = False) -> Concept:
    meant: list[str] = []
    for w in english:
        meant.extend([w, *lexicon.SYNONYMS.get(w, ())])
    forms = frozenset(stem(w) for w in meant if w.isalnum())
    symbols = tuple(dict.fromkeys(w for w in meant if not w.isalnum()))
    if all(w in GENERIC for w in english):
        weight = GENERIC_WEIGHT
    elif all(w in NAMES for w in english):
        weight = 0.6
    else:
        weight = 1.0
    own = frozenset() if phrase else frozenset(stem(w) for w in english if w.isalnum())
    return Concept(word, forms, symbols, weight, own)


# The label a prompt puts before the customer's words ("Customer question:") is not asked.
_LABEL = re.compile(r"^\s*(?:the\s+)?(?:customer'?s?\s+)?(?:question|message)\s*:\s*", re.I)


def question_concepts(question: str) -> list[Concept]:
    """What `question` asks about, in English help-center words (phrases, synonyms, and billing
    words of Spanish, German, French, Portuguese and Italian)."""
    question = _LABEL.sub("", question)
    # An apostrophe separates words ("d'utilisateurs", "l'offre"; "what's" -> "what s").
    text = " " + re.sub(r"[-'’]", " ", fold(question)) + " "
    found: list[Concept] = []
    for phrase in sorted(lexicon.PHRASES, key=len, reverse=True):
        pattern = rf"\b{re.escape(phrase)}\b"
        if re.search(pattern, text):
            found.append(_concept(phrase, lexicon.PHRASES[phrase], phrase=True))
            text = re.sub(pattern, " ", text)
    for token in FOLDED_WORD.findall(text):
        if token in STOPWORDS or token in EXTRA_STOPWORDS or token in lexicon.FOREIGN_STOPWORDS:
            continue
        english = lexicon.FOREIGN.get(token) or _compound(token)
        if english:
            found.append(_concept(token, (english,)))
        elif len(token) > 2 or token.isdigit():
            found.append(_concept(token, (token,)))
    unique: dict[frozenset[str], Concept] = {}
    for c in found:
        unique.setdefault(c.forms, c)
    return list(unique.values())


def _compound(token: str) -> str | None:
    """A German compound ("Jahresrechnung") read by its last known part, as German puts the
    thing itself last; a known word merely inside an English one ("custo" in "customer") is
    not a part."""
    if len(token) < 8:
        return None
    parts = [
        k for k in lexicon.FOREIGN if len(k) >= 4 and token.endswith(k) and len(token) - len(k) >= 3
    ]
    return lexicon.FOREIGN[max(parts, key=len)] if parts else None


ASKING = re.compile(
    r"[?¿]|^\s*(how|what|when|where|which|who|why|can|could|do|does|is|are|will|should|would)\b|"
    r"\b(like to know|want to know|need to know|wondering|tell me)\b",
    re.I,
)


def focus(text: str) -> str:
    """The sentences of a long message that ask something, as a reader picks out the question
    from the background ("Bit of background first: ... So can I take my data with me?")."""
    parts = _split_prose(" ".join(text.split()))
    if len(parts) <= 2:
        return text
    asking = [p for p in parts if ASKING.search(p)]
    return " ".join(asking) if asking else text


def asks_quantity(question: str) -> bool:
    return bool(QUANTITY.search(fold(question)))


def folded_stems(text: str) -> set[str]:
    folded = fold(text).replace("-", " ")
    return {stem(w) for w in FOLDED_WORD.findall(folded) if w not in STOPWORDS}


# Sentence ends that are not: "e.g. Visa", "approx. 5", "No. 12", "U.S. dollars".
ABBREVIATIONS = lexicon.words(
    "e.g i.e etc vs approx incl excl no nr min max mr mrs ms dr st co inc ltd corp dept est "
    "fig u.s u.k z.b ca p.a bzw usw jan feb mar apr jun jul aug sep sept oct nov dec mon tue "
    "wed thu fri sat sun"
)
_BOUNDARY = re.compile(r"([.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[€$£])")
_LIST_ITEM = re.compile(r"^(?:[-*+•]|\d{1,2}[.)])\s+")
_TABLE_RULE = re.compile(r"^\|?[\s:|-]+\|?$")


def _split_prose(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        before = text[start : m.start() + 1]
        last = before.split()[-1].lower() if before.split() else ""
        word = last.rstrip(".").lstrip("(\"'")
        if m.group(1) == "." and (word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _plain(text: str) -> str:
    """Markdown emphasis, code and links as plain text."""
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"(\*\*|__|`)", "", text)
    text = re.sub(r"(?<!\w)[*_](\S[^*_]*\S|\S)[*_](?!\w)", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _cells(row: str) -> list[str]:
    return [_plain(c) for c in row.strip().strip("|").split("|")]


def _table_sentence(row: str, header: list[str] | None) -> str | None:
    """A table row as a sentence ("Growth: monthly $49 per month, annual $490 per year.")."""
    cells = _cells(row)
    if not any(cells):
        return None
    if header is None or len(header) != len(cells):
        return "; ".join(c for c in cells if c) + "."
    rest = [f"{h} {c}".strip() if h else c for h, c in zip(header[1:], cells[1:], strict=True)]
    return f"{cells[0]}: " + ", ".join(r for r in rest if r) + "."


def _finish(sentence: str) -> str:
    sentence = sentence.strip().rstrip(";,")
    if sentence and sentence[0].islower():
        sentence = sentence[0].upper() + sentence[1:]
    if sentence and not sentence.endswith((".", "!", "?", ":")):
        sentence += "."
    return sentence


@dataclass(frozen=True)
class Quote:
    """A passage sentence that can be quoted, and the list it belongs to (if any): a list is
    also offered whole, introduced by its lead-in, as one quote of that group."""

    text: str
    group: int | None = None
    whole_list: bool = False


def passage_sentences(text: str) -> list[str]:
    """The whole sentences of a help-center passage, as a reader would quote them.

    Hard-wrapped lines are joined before splitting (a line break is not a sentence end), an
    abbreviation's full stop does not end a sentence, list items become sentences, a table row
    becomes a sentence naming its columns, and headings and lines that only introduce a list
    ("Ledgerly accepts these ways to pay:") are left out.
    """
    return [q.text for q in passage_quotes(text) if not q.whole_list]


def passage_quotes(text: str) -> list[Quote]:
    """passage_sentences, plus each list whole ("Ledgerly accepts these ways to pay: Cards:
    Visa, ...; SEPA Direct Debit: ...; Bank transfer: ...")."""
    units: list[tuple[str, str]] = []  # (kind, text)
    for block in re.split(r"\n\s*\n", text.replace("\r", "")):
        for line in block.split("\n"):
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                units.append(("heading", stripped))
            elif stripped.startswith("|"):
                units.append(("row", stripped))
            elif _LIST_ITEM.match(stripped):
                units.append(("item", _LIST_ITEM.sub("", stripped)))
            elif units and units[-1][0] in ("prose", "item") and not units[-1][1].endswith("\0"):
                units[-1] = (units[-1][0], f"{units[-1][1]} {stripped}")
            else:
                units.append(("prose", stripped))
        if units and units[-1][0] in ("prose", "item"):
            units[-1] = (units[-1][0], units[-1][1] + "\0")  # a blank line ends the paragraph
    out: list[Quote] = []
    header: list[str] | None = None
    previous = ""
    lead = ""  # the sentence introducing the list being read
    items: list[str] = []
    groups = 0

    def close_list() -> None:
        nonlocal items
        if len(items) > 1:
            body = "; ".join(items)
            whole = f"{lead} {body}." if lead else f"{body}."
            out.append(Quote(whole, groups, whole_list=True))
        items = []

    for kind, unit in units:
        unit = unit.rstrip("\0")
        if kind != "item" and previous == "item":
            close_list()
        if kind == "row":
            if _TABLE_RULE.match(unit):
                pass
            elif previous != "row":
                header = _cells(unit)  # a table's first row names its columns
            else:
                row = _table_sentence(unit, header)
                if row:
                    out.append(Quote(row))
        elif kind == "item":
            if previous != "item":
                groups += 1
                lead = out[-1].text if out and out[-1].text.endswith(":") else ""
            said = _split_prose(_plain(unit))
            items.append(" ".join(said).rstrip(";,."))  # as written, inside the whole list
            out.extend(Quote(_finish(s), groups) for s in said)
        elif kind == "prose":
            out.extend(Quote(_finish(s)) for s in _split_prose(_plain(unit)))
        previous = kind
    if previous == "item":
        close_list()
    return [
        q for q in out if q.text and not q.text.endswith(":") and re.search(r"[A-Za-z]", q.text)
    ]
