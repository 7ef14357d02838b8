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
_HUMAN = re.compile(
    r"\b(human|real person|a person|actual person|someone real|live agent|real agent|"
    r"representative|operator|staff member|talk to (?:a |an |some)?(?:one|body|person|agent)|"
    r"speak (?:to|with) (?:a |an |some)?(?:one|body|person|agent|manager)|manager|"
    r"humano|persona real|una persona|hablar con alguien|agente real|"
    r"mensch|menschen|mitarbeiter(?:in)?|echte person|"
    r"humain|une personne|vraie personne|conseill(?:er|ère)|"
    r"pessoa real|atendente)\b",
    re.I,
)
_NOT_HUMAN = re.compile(r"\b(no|not|don'?t|without)\s+(?:need\s+)?(?:a\s+)?(human|person)", re.I)
_DISPUTE = re.compile(
    r"\b(chargeback|charge[- ]back|dispute[ds]?|disputing|fraud\w*|unauthori[sz]ed|"
    r"my bank reversed|bank (?:is )?reversing|contest(?:ed|ing)? the charge|"
    r"contracargo|disputa|widerspruch|rückbuchung|litige|contestation|estorno no banco)\b",
    re.I,
)
_REFUND_ASK = re.compile(
    r"(\b(?:charged|billed|debited|taken|paid)\b[^.?!]{0,30}\b(?:twice|two times|double|2 times|"
    r"two charges)\b|\bdouble[- ]?(?:charged|billed|charge)\b|\bduplicate (?:charge|payment)|"
    r"\b(?:i|we)\b[^.?!]{0,25}\b(?:want|need|would like|'d like|demand|request|expect|deserve)\b"
    r"[^.?!]{0,20}\b(?:refund|money back|reimburse\w*)|"
    r"\brefund (?:me|my|our|it|this|that)\b|\bget (?:a |my |our )?(?:refund|money back)\b|"
    r"\b(?:can|could|may) (?:i|we) (?:get|have|receive) (?:a |my |our |the )?(?:refund|money back)|"
    r"\bgive (?:me |us )?(?:my |our )?money back\b|\brefund please\b|\bmoney back\b|"
    r"reembols\w*|devolu\w*|devuelv\w*|cobr\w+ dos veces|cobr\w+ duas vezes|cobrado dos|"
    r"rückerstatt\w*|erstatt\w*|geld zurück|doppelt (?:abgebucht|belastet|berechnet)|"
    r"rembours\w*|deux fois|prélevé deux)",
    re.I,
)
# Other account matters a refund can come mixed with: these make the ticket the agent's.
_OTHER_PERSONAL = {
    "reissue": re.compile(
        r"\b(reissue|re-issue|new invoice|corrected invoice|neu ausstellen)", re.I
    ),
    "vat": re.compile(r"\b(vat|ust|iva|tva|mwst)\b", re.I),
    "address": re.compile(r"\b(billing address|company name|rechnungsadresse|dirección)", re.I),
    "plan_change": re.compile(
        r"\b(upgrade|downgrade|switch (?:to|plans?)|change (?:my )?plan)", re.I
    ),
    "cancel": re.compile(
        r"\b(cancel (?:my|our|the) (?:account|subscription|plan)|close my account)", re.I
    ),
    "failed_payment": re.compile(
        r"\b(declined|payment failed|failed payment|card was refused)", re.I
    ),
    "export": re.compile(r"\b(export|download (?:all )?my data)\b", re.I),
}
# Something that happened to this customer's account (not just "my card" in a how-to question).
_PERSONAL = re.compile(
    r"\b(i was|i've been|i have been|i got|i paid|we paid|we were|i received|i see|i noticed|"
    r"charged|billed|debited|took|taken|my (?:last|latest|recent|current) (?:invoice|charge|payment|"
    r"bill)|my account (?:is|was|has)|me cobr\w+|wurde|wurden|abgebucht|on m'a|j'ai été|fui cobrad\w*)"
    r"\b|\b(ch|cus|re)_[a-z0-9_]+|\binv-[a-z0-9-]+",
    re.I,
)
_QUESTION = re.compile(
    r"\?|^\s*(how|what|when|where|which|why|do you|does|is there|are there|can i|can you|"
    r"could you|wie|was|wann|kann|gibt es|cómo|como|qué|que|cuándo|puedo|comment|quand|"
    r"est-ce|puis-je|quanto)\b",
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
    """A confident lane for the obvious cases, or None."""
    if _DISPUTE.search(text):
        return Decision("agent", 0.9, "rules", "dispute or chargeback wording")
    refund = bool(_REFUND_ASK.search(text))
    others = sorted(name for name, pattern in _OTHER_PERSONAL.items() if pattern.search(text))
    if refund and others:
        return Decision("agent", 0.85, "rules", f"refund mixed with {', '.join(others)}")
    if refund:
        return Decision("refund", 0.9, "rules", "asks for money back for a charge")
    if len(others) >= 2 and _PERSONAL.search(text):
        return Decision("agent", 0.8, "rules", f"several account matters: {', '.join(others)}")
    if _QUESTION.search(text) and not _PERSONAL.search(text) and len(text) < 400:
        return Decision("faq", 0.8, "rules", "a general question")
    return None


# --- exemplars ---------------------------------------------------------------------------------
_NEAREST_SQL = """
    SELECT lane, 1 - (embedding <=> %s::vector) AS similarity
    FROM support_routerexemplar WHERE model_id = %s
    ORDER BY embedding <=> %s::vector LIMIT %s
"""


def by_exemplars(vector: np.ndarray, *, k: int = 5) -> Decision | None:
    """The nearest labelled examples' lane, when the nearest is close and most agree."""
    literal = vector_literal(vector)
    model_id = embeddings.get_provider().model_id
    with connection.cursor() as cursor:
        cursor.execute(_NEAREST_SQL, [literal, model_id, literal, k])
        rows = [(str(lane), float(sim)) for lane, sim in cursor.fetchall()]
    if not rows or rows[0][1] < settings.SUPPORT_ROUTER_EXEMPLAR_MIN_SIMILARITY:
        return None
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
