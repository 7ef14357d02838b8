"""The router: which lane answers a ticket, cheapest signal first.

1. Rules, for the obvious (a dispute, "I was charged twice", "how do I download an invoice?").
2. The nearest labelled exemplars (pgvector over `RouterExemplar`, staff-editable, seeded from
   support/data/router_exemplars.jsonl) when they are close and agree.
3. The small model, only when both are unsure; an error from it is an error, never holding text.

Every decision says its lane, confidence and which tier decided. Whether the customer asks for
a human is a separate, rule-based question (`wants_human`) asked before any lane.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from memory import embeddings
from memory.selectors import vector_literal
from support.models import Lane, RouterExemplar

# --- rules -------------------------------------------------------------------------------------
# Asking for a person: a word for a person together with a wish to reach one, or an unambiguous
# phrase ("real person", "not a bot"). "Does a person look at refunds?" is not a request.
_PERSON = (
    r"(?:a |an |some |to a |to an |with a |with an |mit einem |con una |avec une )?(?:human|"
    r"real person|actual person|live (?:agent|person)|real agent|person|representative|operator|"
    r"staff member|someone|somebody|manager|humano|persona|mensch\w*|mitarbeiter\w*|humain|"
    r"personne|conseill\w*|pessoa|atendente|alguien)"
)
_HUMAN = re.compile(
    r"(\b(?:talk|speak|chat|get|connect|transfer|escalate|put|pass|hand|want|need|like|have|"
    r"reach|hablar|sprechen|parler|falar|quiero|möchte|voudrais|veux|quero)\b[^.?!]{0,25}\b"
    + _PERSON
    + r"\b|\b"
    + _PERSON
    + r"\b[^.?!]{0,25}\b(?:sprechen|reden|hablar|parler|falar|speak|talk)\b|"
    r"\b(?:real|actual|live) (?:person|human|agent)\b|\bnot (?:a |with a |to a )?bot\b|"
    r"\bhuman,? please\b|^\W*(?:human|agent|person|operator)\W*$|"
    r"\b(?:a real person|persona real|echte person|vraie personne|pessoa real|un humain)\b)",
    re.I,
)
_NOT_HUMAN = re.compile(r"\b(no|not|don'?t|without)\s+(?:need\s+)?(?:a\s+)?(human|person)", re.I)
_DISPUTE = re.compile(
    r"\b(chargeback|charge[- ]back|dispute[ds]?|disputing|fraud\w*|unauthori[sz]ed|"
    r"my bank reversed|bank (?:is )?reversing|(?:get|got|getting) my bank involved|"
    r"contest(?:ed|ing)? the charge|"
    r"contracargo|disputa|widerspruch|rückbuchung|litige|contestation|estorno no banco)\b",
    re.I,
)
# Money back, in the words customers use (several languages).
_REFUND_WORDS = re.compile(
    r"\b(refund\w*|reimburs\w*|money back|charge ?back|"
    r"(?:get|give|pay|send|want|have|put|need|like)\b[^.?!]{0,30}\bback\b|returned|"
    r"reversed?(?! charge)|rückerstatt\w*|erstattung|"
    r"reembols\w*|devolu\w*|devolv\w*|devuelv\w*|rimbors\w*|erstatt\w*|zurück\w*|"
    r"rembours\w*|restitu\w*|estorno\w*|terugbeta\w*|geld terug)",
    re.I,
)
# Being charged twice, as an event on the account.
_DUPLICATE = re.compile(
    r"(\b(?:charged|billed|debited|took|taken|hit|paid|pulled|cobr\w+|abgebucht|belastet|"
    r"prélevé|débité|addebitat\w*)\b[^.?!]{0,40}\b(?:twice|two times|2x|2 times|double|"
    r"dos veces|duas vezes|deux fois|zweimal|doppelt|due volte|twee keer)\b|"
    r"\bdouble[- ]?(?:charged|billed|charge|payment)|\bduplicate(?:d)? (?:charge|payment)|"
    r"\btwo (?:identical |separate |equal )?(?:[$€£]?\d+(?:[.,]\d\d)? )?(?:charges|payments)\b|"
    r"\bcharged (?:me )?twice\b)",
    re.I,
)
# A general or hypothetical question about how something works.
_GENERAL = re.compile(
    r"(^\W*(?:how long|how much time|how many days|how soon|how quickly|how does|how do refunds|"
    r"is there (?:a|any) (?:deadline|limit|time limit|window)|what(?:'s| is) (?:the|your)|"
    r"whats (?:the|your|ur)|are (?:any|all) |do you|does ledgerly|once i|if i|if we|in case|"
    r"out of curiosity|wie lange|wie viel zeit|gibt es|cuánto tiempo|cuanto tiempo|"
    r"quanto tempo|combien de temps|pour un|per un|hoe lang)|\bif i ever\b|"
    r"\bhypothetically\b|\bin general\b|\bgenerally\b|\b(?:refund )?policy\b)",
    re.I,
)
# A request aimed at this customer's own charge.
_TARGET = re.compile(
    r"\b(the duplicate|the (?:extra|second|other|repeated) (?:one|charge|payment)|"
    r"my (?:last|latest|annual|monthly|current|yearly)|this (?:month|week)|last (?:week|month)|"
    r"whatever'?s left|unused months|the whole|full refund|[$€£]\s?\d+|"
    r"\d+ (?:bucks|dollars|euros?))",
    re.I,
)
_INJECTION = re.compile(
    r"(ignore (?:all |any |the |your )?(?:previous|prior|above|earlier) (?:instructions|rules)|"
    r"system override|"
    r"system prompt|you are now|developer mode|</?system>|\[system\]|\bsystem:|tool_result|"
    r"override (?:the |your )?(?:rules|policy)|admin(?:istrator)? (?:mode|override|instruction))",
    re.I,
)
# Someone else's account: another email, other customers.
_SOMEONE_ELSE = re.compile(
    r"([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|\bother customers\b|\bcustomers who\b|"
    r"\banother customer\b|\bsomeone else'?s\b|\bmy (?:colleague|partner|friend|boss)'?s\b)",
    re.I,
)
# A question about the state of this customer's own account (needs lookups, not an article).
_ACCOUNT_LOOKUP = re.compile(
    r"\b((?:was|were|did|has|have) (?:my|our|the) (?:earlier |last |latest |failed |previous )?"
    r"(?:refund|payment|charge|invoice|card)|which card (?:did|was|were|is|do (?:i|we) have)|"
    r"what (?:did|have) (?:i|we) pa(?:y|id)|"
    r"what i paid|how much (?:was i|did i|have i|were we|did we)|check (?:that |if |whether )?"
    r"(?:our|my)|confirm (?:that |our |my )|(?:our|my|the) payment (?:has )?failed|"
    r"payment failed|when (?:are|will) you (?:going to )?(?:try|retry|charge)|lose access|"
    r"warum wurde mir|why (?:was|wasn't|were|weren't|did|didn't) (?:i|we|my|you)|"
    r"my (?:card )?statement|when does (?:it|my|our) (?:plan |subscription )?renew)",
    re.I,
)
# Other account matters a refund can come mixed with: these make the ticket the agent's.
_OTHER_PERSONAL = {
    "reissue": re.compile(
        r"\b(reissue|re-issue|redo|redone|refaire|rehacer|neu ausstellen|new address|"
        r"corrected invoice|with (?:our|the|my) (?:new )?(?:address|vat|number))",
        re.I,
    ),
    "vat": re.compile(r"\b(vat|ust|iva|tva|mwst|mehrwertsteuer|tax id|número fiscal)\b", re.I),
    "address": re.compile(r"\b(billing address|old address|company name|rechnungsadresse)", re.I),
    "plan_change": re.compile(
        r"\b(upgrade|downgrade|go up to|switch (?:to|plans?)|change (?:my )?plan|yearly billing)",
        re.I,
    ),
    "cancel": re.compile(
        r"\b(cancel\w* (?:my|our|the) (?:account|subscription|plan)|close my account|disdire)",
        re.I,
    ),
    "failed_payment": re.compile(
        r"\b(declined|payment failed|failed payment|card was refused)", re.I
    ),
    "export": re.compile(r"\b(export\w*|esportare|download (?:all )?(?:my|our) data)\b", re.I),
    "documents": re.compile(r"\b(pdf|receipt|how many invoices|invoice limit)\b", re.I),
    "bank_transfer": re.compile(r"\bbank transfer\b", re.I),
}
# Something that happened to this customer's account (not just "my card" in a how-to question).
_PERSONAL = re.compile(
    r"\b(i was|i've been|i have been|i got|i paid|we paid|we were|i received|i see|i noticed|"
    r"charged|billed|debited|took|taken|"
    r"my (?:last|latest|recent|current) (?:invoice|charge|payment|bill)|my account (?:is|was|has)|"
    r"me cobr\w+|wurde|wurden|abgebucht|on m'a|j'ai été|fui cobrad\w*)"
    r"\b|\b(ch|cus|re)_[a-z0-9_]+|\binv-[a-z0-9-]+",
    re.I,
)
_HOWTO = re.compile(
    r"(?:^|[.!?]\s+)\W*(how (?:do|can|should) (?:i|we)|where (?:do|can) (?:i|we)|wher do i|"
    r"can (?:i|we) "
    r"(?!get a refund|have a refund|get my money)|do you|does ledgerly|is it possible to)\b",
    re.I,
)
_QUESTION = re.compile(
    r"\?|^\W*(how|what|whats|wat|when|where|wher|which|why|do you|does|is there|are there|"
    r"can i|can we|can you|could you|do i|wie|was|wann|wo|kann|gibt es|cómo|como|qué|que|"
    r"cuándo|dónde|puedo|comment|quand|où|est-ce|puis-je|quanto|onde|posso)\b",
    re.I,
)

CHOICES = ("faq", "refund", "agent")
ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "lane": {"type": "string", "enum": ["faq", "refund", "complex"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["lane", "confidence", "reason"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Decision:
    lane: str  # faq | refund | agent, or "" when unsure (ask the customer one question)
    confidence: float
    tier: str  # rules | exemplars | model | forced
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wants_human(text: str) -> bool:
    """The customer asks for a person: they get one, whatever the lane thinks."""
    return bool(_HUMAN.search(text)) and not _NOT_HUMAN.search(text)


def by_rules(text: str) -> Decision | None:
    """A confident lane for the obvious cases, or None (then the exemplars, then the model)."""
    if _DISPUTE.search(text):
        return Decision("agent", 0.9, "rules", "dispute or chargeback wording")
    if _INJECTION.search(text) or _SOMEONE_ELSE.search(text):
        return Decision(
            "agent", 0.85, "rules", "instructions or someone else's account in the text"
        )
    refund = bool(_REFUND_WORDS.search(text) or _DUPLICATE.search(text))
    others = sorted(name for name, pattern in _OTHER_PERSONAL.items() if pattern.search(text))
    lookup = bool(_ACCOUNT_LOOKUP.search(text))
    if refund and others:
        return Decision("agent", 0.85, "rules", f"refund mixed with {', '.join(others)}")
    if refund and lookup:
        return Decision("agent", 0.8, "rules", "refund with questions about the account's history")
    if refund:
        general = _GENERAL.search(text) and not _TARGET.search(text)
        if general and not (_DUPLICATE.search(text) and not re.search(r"\bif\b", text, re.I)):
            return Decision("faq", 0.8, "rules", "a general question about refunds")
        return Decision("refund", 0.9, "rules", "asks for money back for a charge")
    if lookup or (len(others) >= 2 and _PERSONAL.search(text)):
        return Decision("agent", 0.8, "rules", "needs the account looked up")
    if _HOWTO.search(text) or (_QUESTION.search(text) and not _PERSONAL.search(text)):
        return Decision("faq", 0.8, "rules", "a general question")
    return None


# --- exemplars ---------------------------------------------------------------------------------
_NEAREST_SQL = """
    SELECT lane, 1 - (embedding <=> %s::vector) AS similarity
    FROM support_routerexemplar WHERE model_id = %s
    ORDER BY embedding <=> %s::vector LIMIT %s
"""


# Cosine similarity at which the nearest example is the same message (wording, case, a typo).
NEAR_DUPLICATE = 0.97


def by_exemplars(vector: np.ndarray, *, k: int = 5) -> Decision | None:
    """The nearest labelled examples' lane, when the nearest is close and most agree."""
    literal = vector_literal(vector)
    model_id = embeddings.get_provider().model_id
    with connection.cursor() as cursor:
        cursor.execute(_NEAREST_SQL, [literal, model_id, literal, k])
        rows = [(str(lane), float(sim)) for lane, sim in cursor.fetchall()]
    if not rows or rows[0][1] < settings.SUPPORT_ROUTER_EXEMPLAR_MIN_SIMILARITY:
        return None
    if rows[0][1] >= NEAR_DUPLICATE:
        # Staff label an example to fix how such a ticket is routed: its own wording decides,
        # whatever its neighbours say (a vote would let them overrule the correction).
        return Decision(rows[0][0], round(rows[0][1], 3), "exemplars", "a labelled example")
    votes: dict[str, float] = {}
    for lane, similarity in rows:
        votes[lane] = votes.get(lane, 0.0) + max(similarity, 0.0)
    lane, weight = max(votes.items(), key=lambda item: item[1])
    agreement = weight / sum(votes.values())
    if agreement < settings.SUPPORT_ROUTER_EXEMPLAR_MIN_AGREEMENT:
        return None
    confidence = round(min(rows[0][1], agreement), 3)
    return Decision(lane, confidence, "exemplars", f"nearest examples ({len(rows)}) say {lane}")


def exemplar_add(*, text: str, lane: str, source: str = "staff") -> RouterExemplar:
    """Store a labelled example (embedded now) for the nearest-neighbour tier."""
    if lane not in CHOICES:
        raise ValueError(f"lane must be one of {', '.join(CHOICES)}")
    provider = embeddings.get_provider()
    exemplar, _ = RouterExemplar.objects.update_or_create(
        text=text,
        model_id=provider.model_id,
        defaults={"lane": lane, "embedding": embeddings.embed_text(text), "source": source},
    )
    return exemplar


# --- batching the embeddings of tickets waiting to be routed ------------------------------------
class EmbeddingBatcher:
    """Tickets being routed at the same moment in this process share one embedding call: the
    first caller waits `wait_s` for company, then embeds everyone's text in one batch."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Future[np.ndarray]]] = []
        self._leader = False
        self.batches = 0  # calls made (for tests and metrics)

    def embed(self, text: str) -> np.ndarray:
        future: Future[np.ndarray] = Future()
        with self._lock:
            self._pending.append((text, future))
            lead = not self._leader
            if lead:
                self._leader = True
        if lead:
            time.sleep(self.wait_s)
            with self._lock:
                batch, self._pending, self._leader = self._pending, [], False
            try:
                vectors = embeddings.embed_texts([t for t, _ in batch], use_cache=False)
                self.batches += 1
                for (_, waiting), vector in zip(batch, vectors, strict=True):
                    waiting.set_result(vector)
            except Exception as exc:
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(exc)
        return future.result(timeout=30)


_batcher: EmbeddingBatcher | None = None
_batcher_lock = threading.Lock()


def batcher() -> EmbeddingBatcher:
    global _batcher
    with _batcher_lock:
        if _batcher is None:
            _batcher = EmbeddingBatcher(settings.SUPPORT_ROUTER_BATCH_WAIT_MS / 1000)
        return _batcher


# --- the whole decision ----------------------------------------------------------------------
def by_model(complete: Callable[..., Any], text: str) -> Decision:
    """The small model's lane (structured output). Raises what the gateway raises: the router
    gets an error, never the holding text, when no model can answer."""
    completion = complete(
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=[{"role": "user", "content": f"<ticket>\n{text[:4000]}\n</ticket>"}],
        max_tokens=200,
        output_schema=ROUTE_SCHEMA,
        fallback="none",
    )
    data = completion.data or {}
    lane = "agent" if data.get("lane") == "complex" else str(data.get("lane", "agent"))
    confidence = float(data.get("confidence", 0.0))
    reason = str(data.get("reason", ""))[:200]
    if confidence < settings.SUPPORT_ROUTER_MODEL_MIN_CONFIDENCE:
        return Decision("", confidence, "model", f"unsure: {reason}")
    return Decision(lane, confidence, "model", reason)


def decide(*, text: str, complete: Callable[..., Any]) -> Decision:
    """Rules, then exemplars, then the small model."""
    if settings.SUPPORT_BASELINE:
        return Decision(Lane.AGENT, 1.0, "forced", "baseline: every ticket through the agent")
    decision = by_rules(text)
    if decision is not None:
        return decision
    decision = by_exemplars(batcher().embed(text[:2000]))
    if decision is not None:
        return decision
    return by_model(complete, text)
