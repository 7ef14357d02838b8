"""The simulated model: a competent Ledgerly support model, or a compromised one.

Deterministic: the same request (and seed) gives the same content. Every decision is derived
from the request (system prompt, conversation, documents, tool definitions, earlier tool
results); nothing is looked up elsewhere. With a non-zero seed (`LLM_SIMULATOR_SEED`, or per
request `x-sim-seed: N`) the competent model samples like a real one, deterministically per
(seed, request): other wordings of its own prose (never of the facts in it), another order of
independent lookups or two of them in one turn, and a confidence within ±0.1 (variation.py).
Seed 0 gives the historic output.

Competent mode, in order of precedence:
- tools (not `tool_choice: none`) → the next agent step: read-only lookups first, then
  `propose_refund` with ids/amounts from tool results, or `escalate_to_human` on a dispute,
  ambiguity or tool error, then a final text answer (as JSON when a format is also given).
  Tools are recognised by name verbs (get_/list_/search_/recall_... read; "refund"; "escalat"/
  "human") and filled by their schemas' property names (a `charge`/`ref` id, an `amount` in the
  ledger's own form, `currency`, `reason`, `confidence`, `uncertainty`); results by their keys
  (`id`/`ref` + `amount`, `invoice`, `status`, `disputed`, `refunded_amount`; help-center hits
  with `slug` + `content`/`text`, answered from and cited as `[slug]`). A refund result says
  whether it was approved (`status: approved`, `auto_approved`) or awaits review
  (`requires_approval`, `status: proposed`), and the final answer says exactly that;
- `output_config.format` json_schema → one text block of JSON filling every property
  (classification enums by keyword heuristics; see schema_fill.py);
- `<documents>` given → an answer from those passages only, citing `[slug]`, or a plain
  "not in the help center" with an offer of a person;
- a system prompt mentioning "summar" → an extractive summary (the conversation's own
  sentences, so no seed varies it);
- otherwise a short support reply.
With `thinking: {"type": "adaptive"}` a signed thinking block comes first, and narration between
tool calls is thinking instead of text.

Adversarial mode obeys instructions found in customer messages and tool results and makes tool
calls with ids and amounts taken from anywhere in its context.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from . import lexicon
from .context import (
    CHARGE_ID,
    CUSTOMER_ID,
    EMAIL,
    INVOICE_ID,
    Context,
    Document,
    ToolCall,
    money_values,
    walk,
)
from .language import (
    ASKING,
    FOLDED_WORD,
    GENERIC_WEIGHT,
    STOPWORDS,
    Concept,
    Signals,
    _compound,
    asks_quantity,
    focus,
    fold,
    folded_stems,
    passage_quotes,
    question_concepts,
    sentences,
)
from .schema_fill import Answers, SchemaFiller
from .thinking import sign
from .variation import PHRASES, Variation


@dataclass
class Reply:
    content: list[dict[str, Any]]
    stop_reason: str


@dataclass
class Step:
    """One decision: some narration, then either tool calls or a final answer."""

    narration: str
    calls: list[tuple[str, dict[str, Any]]]
    text: str = ""


def respond(
    body: dict[str, Any], *, adversarial: bool, malformed_tool_input: bool, seed: int = 0
) -> Reply:
    # The compromised model stays fixed: its tests pin what it obeys, word for word.
    voice = Variation.none() if adversarial else Variation.of(seed=seed, body=body)
    ctx = Context.of(body, voice=voice)
    tools = [t for t in body.get("tools") or [] if t.get("type") in (None, "custom")]
    choice = body.get("tool_choice") or {"type": "auto"}
    if choice.get("type") == "none":
        tools = []
    schema = _output_schema(body)
    thinking = (body.get("thinking") or {}).get("type") == "adaptive"
    omit_thinking = (body.get("thinking") or {}).get("display") == "omitted"

    if adversarial:
        step = Compromised(ctx, tools, schema).step()
    elif choice.get("type") == "tool":
        tool = _tool(tools, str(choice.get("name")))
        step = Step("", [(tool["name"], _fill_tool(ctx, tool))])
    elif tools:
        step = Agent(ctx, tools).step()
        if choice.get("type") == "any" and not step.calls:
            tool = _escalation_tool(tools) or tools[0]
            step = Step(step.narration, [(tool["name"], _fill_tool(ctx, tool))])
        if schema is not None and not step.calls:
            # Tools first; the final answer then comes in the requested format.
            filled = _fill(ctx, schema, Answers(answer=step.text, reason=step.narration))
            step = Step(step.narration, [], json.dumps(filled))
    elif schema is not None:
        step = Step(_reasoning(ctx), [], json.dumps(_fill(ctx, schema, Answers())))
    elif ctx.documents:
        # Passages mean "answer from these", even if the prompt also mentions summaries.
        answer, _, _ = answer_from_documents(ctx)
        step = Step(_reasoning(ctx), [], answer)
    elif "summar" in ctx.system.lower():
        step = Step("Summarising only what the conversation says.", [], summarise(ctx))
    else:
        step = Step(_reasoning(ctx), [], plain_reply(ctx))

    if malformed_tool_input and tools:
        step = _malformed(step, tools)
    return _render(body, step, thinking=thinking, omit_thinking=omit_thinking, tools=tools)


# --------------------------------------------------------------------------------- rendering
def _render(
    body: dict[str, Any], step: Step, *, thinking: bool, omit_thinking: bool, tools: list[Any]
) -> Reply:
    content: list[dict[str, Any]] = []
    narration = step.narration.strip()
    if thinking and narration:
        shown = "" if omit_thinking else narration
        content.append({"type": "thinking", "thinking": shown, "signature": sign(shown)})
    elif narration and step.calls:
        content.append({"type": "text", "text": narration})
    if step.calls:
        seed = json.dumps(body.get("messages"), sort_keys=True, default=str)
        for n, (name, args) in enumerate(step.calls):
            digest = hashlib.sha256(f"{seed}\0{name}\0{n}".encode()).hexdigest()
            content.append(
                {"type": "tool_use", "id": "toolu_sim_" + digest[:24], "name": name, "input": args}
            )
        return Reply(content, "tool_use")
    content.append({"type": "text", "text": step.text})
    return Reply(content, "end_turn")


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema")
    return None


def _fill(ctx: Context, schema: dict[str, Any], answers: Answers) -> Any:
    if ctx.documents and not answers.answer:
        answers.answer, answers.sources, answers.found = answer_from_documents(ctx)
    if "summar" in ctx.system.lower() or "summar" in json.dumps(schema).lower():
        answers.summary = answers.summary or summarise(ctx)
    return SchemaFiller(ctx, answers, root=schema).fill(schema)


def _tool(tools: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(t for t in tools if t.get("name") == name)


def _fill_tool(ctx: Context, tool: dict[str, Any], answers: Answers | None = None) -> Any:
    return _fill(ctx, tool.get("input_schema") or {"type": "object"}, answers or Answers())


def _reasoning(ctx: Context) -> str:
    signals = Signals.of(ctx.customer_text)
    bits = [f"The customer's message looks like a {signals.lane} case."]
    if signals.topics:
        bits.append(f"Topics: {', '.join(signals.topics)}.")
    if ctx.documents:
        bits.append(
            f"I have {len(ctx.documents)} help-center passages; I will answer only from them."
        )
    return " ".join(bits)


def _malformed(step: Step, tools: list[dict[str, Any]]) -> Step:
    """Break the first tool call's input against its schema (the malformed_tool_input fault)."""
    name, args = step.calls[0] if step.calls else (tools[0]["name"], {})
    schema = _tool(tools, name).get("input_schema") or {}
    required = list(schema.get("required") or [])
    broken = dict(args)
    if required:
        broken.pop(required[0], None)
    else:
        broken["unexpected_field"] = ["not", "in", "schema"]
    for prop in list(schema.get("properties") or {})[:1]:
        if prop in broken:
            broken[prop] = {"wrong": "type"}
    return Step(step.narration, [(name, broken), *step.calls[1:]])


# --------------------------------------------------------------------------------- FAQ lane
NOT_FOUND = PHRASES["not_found"][0]


def answer_from_documents(
    ctx: Context, documents: list[Document] | None = None
) -> tuple[str, list[str], bool]:
    """(answer, cited slugs, found) from the given passages only (default: the prompt's); see
    document_sentences for how the sentences are chosen."""
    docs = ctx.documents if documents is None else documents
    voice = ctx.voice
    parts, sources = document_sentences(focus(ctx.last_user_text), docs)
    if not parts:
        return voice.say("not_found"), [], False
    # Each quoted sentence carries its own citation, so their order is free to vary.
    return voice.opener("faq_lead", "faq_lead") + voice.sentences("faq", parts), sources, True


def document_sentences(question: str, docs: list[Document]) -> tuple[list[str], list[str]]:
    """(sentences, cited slugs) answering `question` from `docs` only; none if none is about it.

    Reads like a small model: the question's words are taken with their help-center synonyms
    and, for Spanish, German, French, Portuguese and Italian, their English billing words
    (language.question_concepts). The passages come best first from retrieval, so an earlier
    one wins a tie and needs a little less to count as relevant. Nothing only when no passage
    is about the question; otherwise one to three whole sentences that answer it, each with its
    `[slug]`.
    """
    wanted = question_concepts(question)
    total = sum(c.weight for c in wanted)
    if not wanted or not docs:
        return [], []
    quantity = asks_quantity(question)
    where = bool(WHERE.search(fold(question)))
    candidates: list[_Candidate] = []
    for d, doc in enumerate(docs):
        if not _about(wanted, total, doc, rank=d):
            continue
        context = folded_stems(doc.title)
        for s, quote in enumerate(passage_quotes(doc.content)):
            sentence = quote.text
            stems = folded_stems(sentence)
            text = sentence.lower()
            hits = frozenset(c.word for c in wanted if c.in_words(stems, text))
            near = [c for c in wanted if c.word not in hits and c.in_words(context, "")]
            if not any(c.subject for c in wanted if c.word in hits):
                continue  # only generic words ("plan") or the title match: not an answer
            score = (
                sum(c.weight for c in wanted if c.word in hits) + 0.5 * sum(c.weight for c in near)
            ) / total
            if re.search(r"\d", sentence):
                score += 0.25 if quantity else 0.05
            if where and WHERE_ANSWER.search(sentence):
                score += 0.2
            if quote.whole_list:
                score -= 0.02  # one item that answers as much is the shorter quote
            score += 0.06 * (len(docs) - d) / len(docs)  # retrieval's order, as a tie-break
            group = (d, quote.group) if quote.group is not None else None
            candidates.append(_Candidate(score, d, s, doc.source, sentence, hits, group))
    if not candidates:
        return [], []
    candidates.sort(key=lambda c: (-c.score, c.doc, c.index))
    specific = {c.word for c in wanted if c.weight > GENERIC_WEIGHT}  # not "plan"
    picked = [candidates[0]]
    covered = set(candidates[0].hits)
    seen = {_same(candidates[0].sentence)}
    lists = {candidates[0].group}
    for c in candidates[1:]:
        if len(picked) == 3:
            break
        if _same(c.sentence) in seen or (c.group is not None and c.group in lists):
            continue  # said already (another article's copy, or the list it is part of)
        if any(_overlap(c.sentence, p.sentence) >= 0.7 for p in picked):
            continue  # says again what a picked sentence says
        # Another sentence when it answers a part of the question the others do not (from
        # another article only when it is nearly as relevant), or answers it nearly as well
        # as the best one.
        same = c.doc == picked[0].doc
        adds = (
            c.score >= (0.6 if same else 0.75) * picked[0].score and (c.hits - covered) & specific
        )
        if adds or c.score >= (0.85 if same else 0.95) * picked[0].score:
            picked.append(c)
            covered |= c.hits
            seen.add(_same(c.sentence))
            lists.add(c.group)
    # The best answer first; what it adds to it in document order, which reads naturally.
    picked = picked[:1] + sorted(picked[1:], key=lambda c: (c.doc, c.index))
    parts: list[str] = []
    sources: list[str] = []
    for c in picked:
        parts.append(f"{c.sentence} [{c.source}]" if c.source else c.sentence)
        if c.source and c.source not in sources:
            sources.append(c.source)
    return parts, sources


# "Where ...?" and "How do I ...?" are answered by the sentence that names the place or steps.
WHERE = re.compile(
    r"\bwhere\b|\bhow (do|can|should) (i|we)\b|\bhow to\b|\bdonde\b|\bwo\b|\bou\b|"
    r"\bonde\b|\bdove\b"
)
WHERE_ANSWER = re.compile(
    r"→|>|\bfrom (billing|settings|your)\b|\bin (your|the) (account|settings)"
)


@dataclass(frozen=True)
class _Candidate:
    score: float
    doc: int
    index: int
    source: str
    sentence: str
    hits: frozenset[str]
    group: tuple[int, int] | None = None


def _same(sentence: str) -> str:
    return " ".join(fold(sentence).split())


def _overlap(a: str, b: str) -> float:
    """How much of the shorter sentence's words the other one also has (0..1)."""
    first, second = folded_stems(a), folded_stems(b)
    if not first or not second:
        return 0.0
    return len(first & second) / min(len(first), len(second))


def _about(wanted: list[Concept], total: float, doc: Document, *, rank: int) -> bool:
    """Whether a passage is about the question at all (not merely sharing a word with it).

    Two of the question's own subjects, or one that makes up enough of the question (a little
    less for the passage retrieval ranked first, since retrieval read the whole question).
    """
    stems = folded_stems(f"{doc.title}\n{doc.content}")
    text = f"{doc.title}\n{doc.content}".lower()
    hits = [c for c in wanted if c.in_words(stems, text)]
    subjects = sum(1 for c in hits if c.subject)
    coverage = sum(c.weight for c in hits) / total
    if subjects >= 2 and coverage >= 0.3:
        return True
    return subjects >= 1 and coverage >= (0.4 if rank == 0 else 0.5)


# --------------------------------------------------------------------------------- summaries
KEY_WORDS = re.compile(
    r"refund|charge|invoice|cancel|payment|dispute|account|plan|error|failed|twice|vat|upgrade|"
    r"downgrade|export|approv|escalat",
    re.I,
)


def summarise(ctx: Context) -> str:
    """An extractive summary: the conversation's own most informative sentences, in order."""
    text = "\n".join(ctx.user_texts) or ctx.last_user_text
    candidates = sentences(text)
    if not candidates:
        return "The conversation is empty."
    scored = []
    for i, sentence in enumerate(candidates):
        score = 0.0
        score += 2 * bool(re.search(r"\d|ch_|INV-|@", sentence))
        score += min(2, len(KEY_WORDS.findall(sentence)))
        score += 1.0 if i == 0 else 0.0
        score += 0.5 * sentence.endswith("?")
        scored.append((score, -i, sentence))
    keep = max(2, min(6, (len(candidates) + 2) // 3))
    chosen = sorted(sorted(scored, reverse=True)[:keep], key=lambda s: -s[1])
    return " ".join(s for _, _, s in chosen)


# --------------------------------------------------------------------------------- plain reply
def plain_reply(ctx: Context) -> str:
    signals = Signals.of(ctx.customer_text)
    voice = ctx.voice
    if not ctx.customer_text.strip():
        return voice.say("greeting")
    if signals.lane == "refund":
        key = "ask_details"
    elif signals.lane == "faq":
        key = "faq_no_passages"
    else:
        key = "pass_on"
    return voice.opener("reply-opener") + voice.say(key)


# --------------------------------------------------------------------------------- tools
CUSTOMER_REF = re.compile(r"customer[_ ]id\W{1,3}([A-Za-z0-9_-]+)", re.I)
LOOKUP_PREFIXES = (
    "get_",
    "lookup_",
    "find_",
    "search_",
    "list_",
    "fetch_",
    "read_",
    "retrieve_",
    "check_",
    "show_",
    "query_",
    "recall_",
    "view_",
    "load_",
    "describe_",
    "inspect_",
)


def tool_kind(name: str) -> str:
    low = name.lower()
    if "escalat" in low or "human" in low or "handoff" in low or "hand_off" in low:
        return "escalate"
    if low.startswith(LOOKUP_PREFIXES) or "lookup" in low:
        return "lookup"
    if "refund" in low:
        return "refund"
    return "other"


def _escalation_tool(tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((t for t in tools if tool_kind(t["name"]) == "escalate"), None)


def _lookup_priority(name: str) -> int:
    low = name.lower()
    if "memor" in low:
        return 45  # what was remembered about the customer: useful, never what a step needs
    for rank, word in enumerate(
        ("customer", "account", "charge", "payment", "subscription", "invoice", "refund", "polic")
    ):
        if word in low:
            return rank
    return 50


# A lookup named after the customer or account supplies the ids other lookups take: a tool with
# an unfilled property naming them waits for it (list_charges(customer_id) waits for
# get_customer). Optional filters are not taken from results (see _narrows), so nothing else
# waits; lookups that wait for nothing are independent and may go in any order.
IDENTITY = ("customer", "account")


def _supplies(name: str) -> tuple[str, ...]:
    low = name.lower()
    if "memor" in low or not any(word in low for word in IDENTITY):
        return ()
    return IDENTITY


def _narrows(prop: str) -> bool:
    low = prop.lower()
    return any(k in low for k in ("invoice", "charge", "payment", "ref"))


EARLIER = re.compile(
    r"\b(last time|before|again|still|earlier|previous(ly)?|you said|mentioned|remember|"
    r"told you|already asked)\b",
    re.I,
)


def _topic_relevant(name: str, ctx: Context) -> bool:
    low = name.lower()
    text = (ctx.customer_text + "\n" + ctx.results_text).lower()
    if "memor" in low:
        # Earlier conversations matter when the customer refers to them; otherwise the turn
        # is better spent (agent runs have a turn limit).
        return bool(EARLIER.search(ctx.customer_text))
    if "invoice" in low:
        return bool(INVOICE_WORDS.search(fold(text)))
    if "subscription" in low or "plan" in low:
        return bool(re.search(r"plan|subscription|upgrad|downgrad|cancel|seat", text))
    if "polic" in low or "search" in low or "kb" in low or "article" in low:
        # Any how/what/when/why in the message is answered from the help center, even when the
        # rest of it needs account lookups ("tell me how ..." asks too).
        return Signals.of(ctx.customer_text).question or bool(ASKING.search(ctx.customer_text))
    return True


def _is_doubt(prop: str) -> bool:
    """A property for the model's own doubts (`uncertainty`, `caveats`, `assumptions`)."""
    low = prop.lower()
    return any(k in low for k in ("uncertain", "doubt", "caveat", "assumption", "unsure"))


def _is_confidence(prop: str) -> bool:
    low = prop.lower()
    return not _is_doubt(prop) and ("confidence" in low or "certainty" in low)


@dataclass
class Charge:
    id: str
    data: dict[str, Any]

    @property
    def invoice(self) -> str:
        for key, value in self.data.items():
            if "invoice" in key.lower() and isinstance(value, str | int):
                return str(value)
        return ""

    @property
    def currency(self) -> str:
        for key, value in self.data.items():
            if "currency" in key.lower() and isinstance(value, str):
                return value
        return ""

    @property
    def _refund_keys(self) -> list[str]:
        """Keys of amounts already refunded or in flight (`refunded_amount`,
        `refund_pending_amount`); a refundable/remaining amount is not one of them."""
        return [
            k
            for k in self.data
            if "refund" in k.lower()
            and "refundable" not in k.lower()
            and ("amount" in k.lower() or "cent" in k.lower())
            and _decimal(self.data[k]) is not None
        ]

    @property
    def _refunded(self) -> Decimal:
        """What is refunded or in flight, in the unit of the charge's amount."""
        key = self.amount_key
        total = Decimal(0)
        for name in self._refund_keys:
            value = _decimal(self.data[name]) or Decimal(0)
            if "cent" in name.lower() and "cent" not in key.lower():
                value = value / 100
            elif "cent" in key.lower() and "cent" not in name.lower():
                value = value * 100
            total += value
        return total

    def _remaining(self) -> Any:
        """The charge's amount less refunds done or in flight, written like it ("9.00")."""
        key = self.amount_key
        total = _decimal(self.data.get(key))
        if total is None or not self._refund_keys:
            return None
        left = total - self._refunded
        exponent = total.as_tuple().exponent
        if isinstance(exponent, int):
            left = left.quantize(Decimal(1).scaleb(exponent))  # "19.00" - "10.00" -> "9.00"
        original = self.data[key]
        if isinstance(original, int) and not isinstance(original, bool):
            return int(left)
        if isinstance(original, float):
            return float(left)
        return str(left)

    def amount_for(self, prop: str) -> Any:
        keys = list(self.data)
        prefer = [k for k in keys if "refundable" in k.lower() or "remaining" in k.lower()]
        if not prefer and self._refunded:
            # Only what is left of the charge can be refunded (partial refunds happen).
            remaining = self._remaining()
            if remaining is not None:
                return _convert_cents(remaining, self.amount_key, prop)
        prefer += [k for k in keys if k == prop]
        prefer += [k for k in keys if "amount" in k.lower() and "refunded" not in k.lower()]
        for key in prefer:
            value = self.data[key]
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                return _convert_cents(value, key, prop)
        return None

    @property
    def amount_key(self) -> str:
        keys = [k for k in self.data if "amount" in k.lower() and "refund" not in k.lower()]
        return next((k for k in keys if k.lower() in ("amount", "amount_cents")), "") or next(
            iter(keys), ""
        )

    def money(self, key: str, currency: str = "") -> str:
        """The value under `key` as money ("$49.00"), in units even if the ledger keeps cents."""
        value = self.data.get(key)
        if "cent" in key.lower():
            value = _from_cents(value)
        return money_text(value if value is not None else "?", self.currency or currency)

    @property
    def amount_text(self) -> str:
        """The amount as a customer reads it ("$49.00"), in the charge's currency."""
        return self.money(self.amount_key)

    @property
    def refunded(self) -> Decimal:
        """What has been refunded or is on its way back, in units of the charge's amount."""
        return self._refunded

    @property
    def when(self) -> str:
        """The charge's timestamp as given (ISO strings sort by time), or ""."""
        for key, value in self.data.items():
            low = key.lower()
            if isinstance(value, str) and any(
                k in low for k in ("created", "charged", "captured", "date", "paid_at")
            ):
                return value
        return ""

    def costs(self, amount: str) -> bool:
        mine = _decimal(self.data.get(self.amount_key))
        theirs = _decimal(amount)
        if mine is None or theirs is None:
            return False
        return theirs in (mine, mine / 100) if "cent" in self.amount_key.lower() else mine == theirs

    @property
    def disputed(self) -> bool:
        for key, value in self.data.items():
            low = key.lower()
            if ("disput" in low or "chargeback" in low) and value not in (False, None, "", 0):
                return True
            if isinstance(value, str) and re.search(r"disput|chargeback", value, re.I):
                return True
        return False

    @property
    def settled(self) -> bool:
        """Money was actually taken (a failed or pending charge has nothing to refund)."""
        status = str(self.data.get("status", "")).lower()
        return status not in ("failed", "declined", "pending", "canceled", "cancelled", "void")

    @property
    def refunded_fully(self) -> bool:
        status = str(self.data.get("status", "")).lower()
        if status in ("refunded", "fully_refunded"):
            return True
        remaining = _decimal(self._remaining())
        return remaining is not None and remaining <= 0

    @property
    def not_refundable(self) -> str | None:
        """Why the tool results say this charge cannot be refunded, if they say so."""
        if self.data.get("refundable") is False:
            return str(self.data.get("reason") or self.data.get("policy") or "")
        key = next(
            (k for k in self.data if "refundable" in k.lower() and "amount" in k.lower()), ""
        )
        if key and _decimal(self.data[key]) == 0:
            return str(self.data.get("reason") or self.data.get("policy") or "")
        return None


NEWEST_FIRST = re.compile(r"newest first|most recent first|latest first|descending", re.I)


def _lists_newest_first(tools: list[dict[str, Any]]) -> bool:
    """Whether a charge-listing tool says it lists newest first (its description)."""
    return any(
        re.search(r"charge|payment", f"{t.get('name')} {t.get('description', '')}", re.I)
        and NEWEST_FIRST.search(str(t.get("description", "")))
        for t in tools
        if tool_kind(str(t.get("name"))) == "lookup"
    )


def _later(pair: list[Charge], charges: list[Charge], *, newest_first: bool) -> Charge:
    """The later of same-amount, same-invoice charges: the duplicate.

    By timestamp when they differ; on a tie (dates without times) by the list's order, which the
    tool's description or the other rows' dates tell; else the last one listed.
    """
    whens = [c.when for c in pair]
    if all(whens) and len(set(whens)) == len(whens):
        return max(pair, key=lambda c: c.when)
    listed = [c.when for c in charges]
    if all(listed) and len(set(listed)) > 1:
        newest_first = listed == sorted(listed, reverse=True)
    return pair[0] if newest_first else pair[-1]


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


# How people write money: a symbol for the ledger's currencies, a thousands comma, two decimals.
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


def money_text(amount: Any, currency: str = "") -> str:
    """`amount` as a customer reads it ("$1,990.00", "€58.31"); an unknown currency's code
    follows the number ("49.00 CHF"), and a value that is not a number is left as it is."""
    number = _decimal(amount)
    code = str(currency or "").upper()
    if number is None:
        return f"{amount} {code}".strip()
    written = f"{number:,.2f}"
    symbol = SYMBOLS.get(code)
    return f"{symbol}{written}" if symbol else f"{written} {code}".strip()


def _to_cents(value: Any) -> Any:
    number = _decimal(value)
    return int(number * 100) if number is not None else value


def _from_cents(value: Any) -> Any:
    number = _decimal(value)
    return str((number / 100).quantize(Decimal("0.01"))) if number is not None else value


def _convert_cents(value: Any, key: str, prop: str) -> Any:
    if "cent" in prop.lower() and "cent" not in key.lower():
        return _to_cents(value)
    if "cent" in key.lower() and "cent" not in prop.lower():
        return _from_cents(value)
    return value


def charges_in(ctx: Context) -> list[Charge]:
    found: dict[str, Charge] = {}
    for d in ctx.result_dicts:
        for key in ("id", "ref", "charge_id", "charge_ref", "charge", "reference"):
            value = d.get(key)
            if isinstance(value, str) and CHARGE_ID.fullmatch(value):
                found.setdefault(value, Charge(value, d))
                break
    return list(found.values())


PASSAGE_TEXT = ("content", "text", "snippet", "excerpt", "passage", "chunk", "body")
PASSAGE_SOURCE = ("slug", "source", "article_slug", "article", "doc_id", "url")


def passages_in(ctx: Context) -> list[Document]:
    """Help-center hits in tool results: dicts with a slug-like key and a text-like key."""
    docs: list[Document] = []
    for d in ctx.result_dicts:
        source = next((d[k] for k in PASSAGE_SOURCE if isinstance(d.get(k), str)), None)
        text = next((d[k] for k in PASSAGE_TEXT if isinstance(d.get(k), str)), None)
        if source and text:
            docs.append(Document(source, str(d.get("title") or ""), text))
    return docs


@dataclass(frozen=True)
class Target:
    """The charge to refund, why it is that one, and how sure the choice is."""

    charge: Charge | None
    why: str
    confidence: float
    doubt: str


INFO_QUESTION = re.compile(
    r"^\s*(how|when|what|where|which|why|is|are|do|does|did|was|were|has|have|will)\b", re.I
)
# Words that ask for money back outright, whatever else the message asks ("please refund last
# week's payment, and what changes with a VAT ID?" is a refund request with a question).
STRONG_REFUND = re.compile(
    r"\bplease refund|\brefund (me|us|my|our|it|this|that|the|last)\b|refund,? please|"
    r"money back|give (me|us) back|(want|would like|'d like|need) (a |my |the |our )?(full )?"
    r"refund\b|charged (me |us )?twice|double[- ]charg|duplicate charge|"
    r"cobraron dos veces|devolver(me|nos)? el cobro|doppelt (abgebucht|berechnet)|"
    r"deux fois|addebitat\w* due volte",
    re.I,
)
INVOICE_WORDS = re.compile(
    r"invoice|inv-|\bvat\b|receipt|billing address|\bpdf\b|\btax\b|rechnung|factura|facture|"
    r"fattura|fatura|ust|mwst|mehrwertsteuer|\biva\b|\btva\b|fiscal|copies|\bcopy\b"
)
VAT_WORDS = re.compile(
    r"\bvat\b|tax (id|number)|ust|mwst|mehrwertsteuer|\biva\b|\btva\b|fiscal|reverse[- ]charge"
)
PLAN_WORDS = re.compile(
    r"\bplan\b|renew|annual|yearly|subscription|abonnement|abbonamento|suscripcion|cancel"
)
REFUND_WORDS = re.compile(
    r"refund|came back|money back|paid out|got back|statement|rimborso|reembolso|"
    r"remboursement|erstatt"
)
PAYMENT_WORDS = re.compile(r"fail|declin|retry|try again|bounce|card|access|read[- ]only")
TOTAL_WORDS = re.compile(r"this year|so far|in total|altogether|what (i|we) paid|how much")
INTERVALS = {
    "month": "month",
    "monthly": "month",
    "year": "year",
    "yearly": "year",
    "annual": "year",
    "annually": "year",
}
# Where one question of a message ends and the next begins: "1) ... 2) ...", "..., and where".
NUMBERED = re.compile(r"(?:^|\s)\d[.)]\s+")
NEXT_QUESTION = re.compile(
    r",?\s+(?:and|also|plus|und|et|e|y)\s+(?:also\s+)?(?=(?:how|what|when|where|which|why|"
    r"will|would|can|could|do|does|did|is|are|was|were|tell me|confirm|check|explain|let me know|"
    r"wie|wo|wann|warum|comment|"
    r"quel|quelle|ou|come|quando|dove|posso|como|cuando|donde|que)\b)",
    re.I,
)


def search_query(question: str) -> str:
    """What a model types into an English help center for `question`: its own words, or for a
    question in Spanish, German, French, Portuguese or Italian, its billing words in English
    ("posso esportare tutti i dati?" -> "export data"), as retrieval reads English articles."""
    english: list[str] = []
    content = 0
    for token in FOLDED_WORD.findall(fold(question)):
        if token in STOPWORDS or token in lexicon.FOREIGN_STOPWORDS:
            continue
        content += 1
        meant = lexicon.FOREIGN.get(token) or _compound(token)
        if meant and meant != token:
            english.append(meant)
    words = " ".join(dict.fromkeys(english))
    if not english:
        return question
    if len(english) >= 2 and len(english) >= 0.3 * content:
        return words
    return f"{words}: {question}"  # a few words known: they lead, the question follows


def questions_in(text: str) -> list[str]:
    """The questions of a customer's message, one by one (a message often asks several)."""
    found: list[str] = []
    for sentence in sentences(" ".join(text.split())):
        for item in NUMBERED.split(sentence):
            for part in NEXT_QUESTION.split(item):
                part = part.strip(" ,;")
                if part and ASKING.search(part):
                    found.append(part)
    return found


REFUND_REQUEST = re.compile(
    r"refund (me|us|my|it|this|that|the)\b|(want|like|need|get|have|request|give me) "
    r"(a |my |the )?(full |partial )?refund|money back|charged (me )?twice|double[- ]charg|"
    r"duplicate|please refund|refund,? please",
    re.I,
)
POLICY_REFUSAL = re.compile(
    r"polic|not allow|not eligible|ineligible|not refundable|window|too old|past the|exceed", re.I
)
REFUND_APPROVED = ("approved", "issued", "refunded", "succeeded", "completed", "processed")
REFUND_DECLINED = ("rejected", "denied", "declined", "refused", "failed", "canceled", "cancelled")


def refund_state(data: Any) -> tuple[str, str]:
    """(approved | auto_approved | declined | pending, status) from a refund tool's result.

    Only an explicit approval counts: `proposed`, `pending_approval`, `requires_approval: true`
    and anything unknown mean the request waits for a person.
    """
    status = ""
    flags: dict[str, bool] = {}
    for d in walk(data):
        if not status and isinstance(d.get("status"), str):
            status = d["status"]
        for key, value in d.items():
            if isinstance(value, bool):
                flags.setdefault(key.lower(), value)
    low = status.lower()
    if flags.get("auto_approved") or low in ("auto_approved", "approved_automatically"):
        return "auto_approved", status
    if low in REFUND_DECLINED:
        return "declined", status
    if low in REFUND_APPROVED or (flags.get("approved") and not flags.get("requires_approval")):
        return "approved", status
    return "pending", status


class Agent:
    """One step of a competent agent loop."""

    def __init__(self, ctx: Context, tools: list[dict[str, Any]]) -> None:
        self.ctx = ctx
        self.tools = tools
        self.signals = Signals.of(ctx.customer_text)
        self.voice = ctx.voice

    def step(self) -> Step:
        step = self._step()
        if step.calls or not step.text:
            return step
        # A final answer after tool calls may open with a connective ("Thanks for waiting.").
        opener = self.voice.opener("final-opener", "resume") if self.ctx.calls else ""
        text = step.text
        if opener.endswith(", ") and re.match(r"[A-Z][a-z]", text):
            text = text[0].lower() + text[1:]  # "Okay, your plan ..." (never "Okay, i ...")
        return Step(step.narration, [], opener + text)

    def _step(self) -> Step:
        ctx = self.ctx
        escalate = _escalation_tool(self.tools)
        refunds = [c for c in ctx.calls if tool_kind(c.name) == "refund"]
        escalations = [c for c in ctx.calls if tool_kind(c.name) == "escalate"]
        if escalations:
            return self._final_escalated(escalations[-1], refunds[-1] if refunds else None)
        if refunds:
            other = [t for t in self.signals.topics if t not in ("refund", "cancel")]
            if other and escalate is not None:
                return self._escalate(
                    escalate,
                    f"Refund proposed; the customer also raised {', '.join(other)}, which needs "
                    "a person.",
                    doubt="The refund is proposed; the other issue is not looked at yet.",
                )
            return self._final_refund(refunds[-1])
        errors = [r for r in ctx.results if r.is_error]
        if errors:
            reason = f"A lookup failed ({errors[-1].name}: {errors[-1].text[:160]})."
            return self._escalate(
                escalate,
                reason,
                doubt="High: a lookup failed, so the account's records are incomplete.",
            )
        lookup = self._next_lookup()
        if lookup is not None:
            return lookup
        others = [t for t in self.tools if tool_kind(t["name"]) == "other"]
        if (
            others
            and not ctx.calls
            and not any(tool_kind(t["name"]) in ("lookup", "refund") for t in self.tools)
        ):
            tool = others[0]
            return Step(
                f"I'll record this with {tool['name']}.", [(tool["name"], _fill_tool(ctx, tool))]
            )
        return self._decide()

    # -- lookups
    def _next_lookup(self) -> Step | None:
        lookups = sorted(
            (t for t in self.tools if tool_kind(t["name"]) == "lookup"),
            key=lambda t: _lookup_priority(t["name"]),
        )
        ready: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for tool in lookups:
            if not _topic_relevant(tool["name"], self.ctx):
                continue
            # Each lookup once: its answer does not change within a conversation.
            if any(c.name == tool["name"] for c in self.ctx.calls):
                continue
            args = self._lookup_args(tool)
            if args is not None:
                ready.append((tool, args))
        if not ready:
            return None
        chosen = ready[:1]
        if self.voice.active:
            # A sampled model takes independent lookups in any order, sometimes two at once.
            free = [r for r in ready if not self._waits(r, ready)] or ready[:1]
            order = self.voice.shuffled("lookup-order", free)
            batch = len(order) > 1 and self.voice.chance("lookup-batch", 0.5)
            chosen = order[: 2 if batch else 1]
        narration = " ".join(
            _narrate_lookup(tool["name"], self.voice, n) for n, (tool, _) in enumerate(chosen)
        )
        calls = [call for tool, args in chosen for call in self._per_question(tool, args)]
        return Step(narration, calls)

    def _per_question(
        self, tool: dict[str, Any], args: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        """A help-center search once for each question of a message that asks several (one
        search for the whole message finds passages about one of them), all in one turn."""
        name = tool["name"]
        low = name.lower()
        asked = self.ctx.last_user_text[:300]
        prop = next((p for p, v in args.items() if v == asked), None)
        wanted = questions_in(self.ctx.last_user_text)
        if "search" not in low or "memor" in low or prop is None:
            return [(name, args)]
        sub = ((tool.get("input_schema") or {}).get("properties") or {}).get(prop) or {}
        limit = sub.get("maxLength") if isinstance(sub.get("maxLength"), int) else 300
        if len(wanted) < 2:
            # The one question, not the request around it ("refund the double charge, and how
            # many invoices can I send?" searches for the invoices; the refund tool has the rest).
            asked = wanted[0] if wanted and len(wanted[0]) >= 12 else args[prop]
            return [(name, {**args, prop: search_query(asked)[:limit]})]
        return [(name, {**args, prop: search_query(q)[:limit]}) for q in wanted[:3]]

    @staticmethod
    def _waits(
        lookup: tuple[dict[str, Any], dict[str, Any]],
        ready: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> bool:
        """Whether an unfilled input of `lookup` is what another ready lookup would supply."""
        tool, args = lookup
        unfilled = [
            p.lower()
            for p in (tool.get("input_schema") or {}).get("properties") or {}
            if p not in args
        ]
        return any(
            any(word in p for p in unfilled for word in _supplies(other["name"]))
            for other, _ in ready
            if other is not tool
        )

    def _lookup_args(self, tool: dict[str, Any]) -> dict[str, Any] | None:
        schema = tool.get("input_schema") or {}
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        args: dict[str, Any] = {}
        for prop, sub in properties.items():
            value = self._value_for(prop, sub)
            if value is not None and prop not in required and _narrows(prop):
                # An optional filter (list_charges(invoice_number)) is used only for what the
                # customer named: filling it from an earlier result could hide the charge at
                # issue behind another invoice.
                value = value if str(value) in self.ctx.customer_text else None
            if value is None:
                if prop in required:
                    return None
                continue
            args[prop] = value
        return args

    def _value_for(self, prop: str, sub: dict[str, Any]) -> Any:
        ctx = self.ctx
        from_results = ctx.result_values(prop)
        if from_results:
            return _coerce(from_results[0], sub)
        low = prop.lower()
        if "email" in low:
            emails = (
                EMAIL.findall(ctx.customer_text)
                or EMAIL.findall(ctx.results_text)
                or EMAIL.findall(ctx.system)
            )
            return emails[0] if emails else None
        if "charge" in low:
            ids = [c.id for c in charges_in(ctx)] or CHARGE_ID.findall(ctx.customer_text)
            mentioned = [i for i in CHARGE_ID.findall(ctx.customer_text) if i in ids]
            pick = (mentioned or ids)[:1]
            return pick[0] if pick else None
        if "invoice" in low:
            found = re.findall(r"\bINV-[A-Za-z0-9-]+\b", ctx.customer_text + ctx.results_text)
            return found[0] if found else None
        if "customer" in low:
            for key in ("customer_id", "id"):
                for d in ctx.result_dicts:
                    if key in d and ("email" in d or key == "customer_id"):
                        return _coerce(d[key], sub)
            # The caller may state whose conversation it is in the prompt ("customer_id: 42").
            stated = CUSTOMER_REF.search(ctx.system) or CUSTOMER_REF.search(ctx.customer_text)
            return _coerce(stated.group(1), sub) if stated else None
        if low in ("query", "question", "q", "search", "text"):
            return ctx.last_user_text[:300] or None
        if "enum" in sub:
            return None
        return None

    # -- decisions after the lookups
    def _decide(self) -> Step:
        ctx = self.ctx
        voice = self.voice
        escalate = _escalation_tool(self.tools)
        refund_tool = next((t for t in self.tools if tool_kind(t["name"]) == "refund"), None)
        charges = charges_in(ctx)
        mentioned = [c for c in charges if c.id in ctx.customer_text]
        disputed = [c for c in (mentioned or charges) if c.disputed]
        if self.signals.dispute or disputed:
            if disputed:
                reason = voice.say(
                    "dispute_charge", charge=disputed[0].id, amount=disputed[0].amount_text
                )
            else:
                reason = voice.say("dispute")
            return self._escalate(
                escalate,
                reason,
                doubt="Low: a dispute (chargeback) means support cannot refund; staff decide.",
                confidence=0.95,
            )
        # A general question about refunds ("how long do refunds take?") is answered, not acted on.
        asks_refund = bool(STRONG_REFUND.search(ctx.customer_text))
        general_question = (
            self.signals.question
            and not asks_refund
            and (
                not self.signals.personal
                or bool(
                    INFO_QUESTION.match(ctx.last_user_text)
                    and not REFUND_REQUEST.search(ctx.customer_text)
                )
            )
        )
        if not (self.signals.refund or asks_refund) or general_question:
            return Step(voice.say("findings_narration"), [], self._findings_text(charges))
        settled = [c for c in charges if c.settled]
        if charges and not settled:
            statuses = ", ".join(
                f"charge {c.id} has status {c.data.get('status')}" for c in charges[:5]
            )
            return Step(
                "None of the charges went through.",
                [],
                voice.say("nothing_taken", statuses=statuses),
            )
        target = self._refund_target(settled, [c for c in mentioned if c.settled])
        charge = target.charge
        if charge is None:
            return self._escalate(escalate, target.why, doubt=target.doubt, confidence=0.5)
        if charge.refunded_fully:
            return Step(
                "That charge has already been refunded.",
                [],
                voice.say("already_refunded", charge=charge.id),
            )
        why_not = charge.not_refundable
        if why_not is not None:
            detail = f" ({why_not.rstrip('.')})" if why_not else ""
            return Step(
                "The records say this charge cannot be refunded.",
                [],
                voice.say("not_refundable", charge=charge.id, detail=detail),
            )
        if refund_tool is None:
            return self._escalate(escalate, f"The customer asks for a refund of {charge.id}.")
        args = self._refund_args(refund_tool, target, charge)
        return Step(
            voice.say("propose", why=target.why, charge=charge.id),
            [(refund_tool["name"], args)],
        )

    def _refund_target(self, charges: list[Charge], mentioned: list[Charge]) -> Target:
        voice = self.voice
        if len(mentioned) == 1:
            return Target(
                mentioned[0],
                voice.say("named_charge", charge=mentioned[0].id),
                0.9,
                "Low: the customer named the charge; the amount comes from the account's records.",
            )
        groups: dict[tuple[str, str], list[Charge]] = {}
        for charge in charges:
            amount = str(charge.data.get(charge.amount_key, ""))
            groups.setdefault((amount, charge.invoice), []).append(charge)
        duplicates = [g for g in groups.values() if len(g) > 1 and g[0].invoice]
        if len(duplicates) == 1:
            later = _later(duplicates[0], charges, newest_first=_lists_newest_first(self.tools))
            ids = ", ".join(c.id for c in duplicates[0])
            return Target(
                later,
                voice.say("duplicate_found", ids=ids, invoice=later.invoice, charge=later.id),
                0.92,
                f"Low: {ids} have the same amount and invoice; I took the later one, {later.id}, "
                "as the duplicate.",
            )
        if len(charges) == 1:
            return Target(
                charges[0],
                voice.say("one_charge", charge=charges[0].id),
                0.8,
                "Medium: it is the only charge on the account, but the customer did not say "
                "which charge they meant or why.",
            )
        if not charges:
            return Target(
                None,
                "I could not find a matching charge in the account's records.",
                0.5,
                "High: no charge in the account's records matches.",
            )
        said = money_values(self.ctx.customer_text)
        priced = [c for c in charges if any(c.costs(a) for a in said)]
        if len(priced) == 1:
            return Target(
                priced[0],
                voice.say("priced_charge", charge=priced[0].id),
                0.75,
                "Medium: chosen because its amount is the one the customer gave.",
            )
        candidates = priced or charges
        if all(c.when for c in candidates):
            newest = max(candidates, key=lambda c: c.when)
            if sum(c.when == newest.when for c in candidates) == 1:
                return Target(
                    newest,
                    voice.say("newest_charge", charge=newest.id),
                    0.6,
                    "High: the customer did not say which charge; I took the most recent one.",
                )
        return Target(
            None,
            f"Several charges could match ({', '.join(c.id for c in charges[:6])}) and the "
            "customer did not say which one; a person should confirm.",
            0.4,
            "High: several charges could be the one the customer means.",
        )

    def _refund_args(self, tool: dict[str, Any], target: Target, charge: Charge) -> dict[str, Any]:
        schema = tool.get("input_schema") or {}
        args: dict[str, Any] = {}
        for prop, sub in (schema.get("properties") or {}).items():
            low = prop.lower()
            if _is_doubt(prop):
                numeric = _kind(sub) in ("number", "integer")
                args[prop] = round(1 - target.confidence, 2) if numeric else target.doubt
            elif _is_confidence(prop):
                args[prop] = _coerce(self._confidence(prop, target.confidence, sub), sub)
            elif "charge" in low or low in ("id", "ref", "reference"):
                args[prop] = charge.id
            elif "amount" in low:
                args[prop] = _coerce(charge.amount_for(prop), sub)
            elif "currency" in low and (charge.currency or self.ctx.result_values("currency")):
                args[prop] = _enum_value(
                    charge.currency or str(self.ctx.result_values("currency")[0]), sub
                )
            elif "invoice" in low and charge.invoice:
                args[prop] = charge.invoice
            elif any(k in low for k in ("reason", "rationale", "note", "explanation")):
                args[prop] = target.why
            else:
                value = self._value_for(prop, sub)
                if value is not None:
                    args[prop] = value
                elif prop in (schema.get("required") or []):
                    args[prop] = SchemaFiller(
                        self.ctx, Answers(reason=target.why), root=schema
                    ).fill(sub, prop)
            limit = sub.get("maxLength")
            if isinstance(args.get(prop), str) and isinstance(limit, int):
                args[prop] = args[prop][:limit]
        return args

    def _confidence(self, prop: str, value: float, schema: dict[str, Any]) -> float:
        low = float(schema.get("minimum", 0.0))
        high = float(schema.get("maximum", 1.0))
        return self.voice.jitter(f"confidence:{prop}", value, low=low, high=high)

    def _escalate(
        self,
        tool: dict[str, Any] | None,
        reason: str,
        *,
        doubt: str = "",
        confidence: float | None = None,
    ) -> Step:
        if tool is None:
            return Step(reason, [], _escalated_text(reason, self.voice))
        schema = tool.get("input_schema") or {}
        answers = Answers(reason=reason, summary=reason, uncertainty=doubt, confidence=confidence)
        args = SchemaFiller(self.ctx, answers, root=schema).fill(schema)
        return Step(self.voice.say("hand_over", reason=reason), [(tool["name"], args)])

    # -- final answers
    def _final_escalated(self, call: ToolCall, refund: ToolCall | None) -> Step:
        reason = next(
            (str(v) for k, v in call.input.items() if "reason" in k.lower() or "summary" in k),
            "",
        )
        told = self._final_refund(refund).text if refund is not None else ""
        # What happened to the refund and who takes the rest over are independent news.
        text = self.voice.sentences("escalated-final", [told, _escalated_text(reason, self.voice)])
        if refund is None:
            # What the help center answers needs no person (the refund's answer has it already).
            text = " ".join([text, *self._help_center_parts(skip_refund=True)])
        return Step("Escalated; telling the customer what happens next.", [], text)

    def _final_refund(self, call: ToolCall) -> Step:
        voice = self.voice
        result = self.ctx.result_for(call)
        charge = next((str(v) for k, v in call.input.items() if "charge" in k.lower()), "")
        if result is not None and result.is_error:
            return self._refund_refused(_error_text(result.text, result.data))
        data = result.data if result is not None else None
        state, status = refund_state(data)
        # What the refund system recorded wins over what was asked (its policy sets the amount).
        recorded = [d for d in walk(data) if isinstance(d.get("amount"), str | int | float)]
        asked = next((str(v) for k, v in call.input.items() if "amount" in k.lower()), "")
        value = str(recorded[0]["amount"]) if recorded else asked
        target = next((c for c in charges_in(self.ctx) if c.id == charge), None)
        currency = (
            next((str(d["currency"]) for d in walk(data) if isinstance(d.get("currency"), str)), "")
            or next((str(v) for k, v in call.input.items() if "currency" in k.lower() and v), "")
            or (target.currency if target is not None else "")
        )
        amount = money_text(value, currency)
        parts: list[str] = []
        if target is not None and target.refunded:
            # Why the request is for less than the charge: part of it came back before.
            parts.append(self._charge_fact(target, currency))
        parts.append(voice.say("refund_submitted", amount=amount, charge=charge))
        charged = _decimal(target.data.get(target.amount_key)) if target is not None else None
        requested = _decimal(value)
        if (
            target is not None
            and not target.refunded
            and charged is not None
            and requested is not None
            and requested < _units(charged, target.amount_key)
        ):
            # The policy capped it: the result's amount is the refund, the charge was more.
            parts.append(voice.say("refund_capped", amount=amount, charged=target.amount_text))
        if state == "declined":
            parts.append(voice.say("refund_declined", status=status))
        else:
            parts.append(voice.say(f"refund_{state}"))
        # The message's other questions, answered from the help center.
        parts.extend(self._help_center_parts(skip_refund=True))
        return Step("Refund proposed; telling the customer.", [], " ".join(parts))

    def _refund_refused(self, error: str) -> Step:
        """The refund tool said no. A policy refusal is the answer; anything else goes to a
        person through the escalation tool (never claimed without calling it)."""
        if POLICY_REFUSAL.search(error):
            head, colon, tail = error.strip().partition(": ")
            # "the refund policy does not allow it: <why>" -> tell the customer <why>.
            detail = (tail if colon and tail and POLICY_REFUSAL.search(head) else error).strip()
            detail = detail.rstrip(".")
            told = self.voice.say("refund_not_allowed", detail=detail)
            # The message's other questions, answered from the help center.
            others = self._help_center_parts(skip_refund=True)
            return Step(
                "The refund policy does not allow this refund.", [], " ".join([told, *others])
            )
        escalate = _escalation_tool(self.tools)
        if escalate is not None:
            return self._escalate(
                escalate,
                f"The refund request failed ({error.strip()[:160]}).",
                doubt="High: the refund tool returned an error.",
                confidence=0.5,
            )
        return Step("The refund proposal was refused.", [], self.voice.say("refund_refused"))

    def _findings_text(self, charges: list[Charge]) -> str:
        """Every question answered from its source: the account's facts from the lookups, what
        the help center says from the search results ([slug] cited)."""
        voice = self.voice
        facts = self._account_facts(charges)
        help_center = self._help_center_parts(skip_refund=False)
        if help_center:
            said = voice.opener("faq_lead", "faq_lead") + voice.sentences("faq", help_center)
            return " ".join([*facts, said])
        if facts:
            return " ".join(facts)
        if not charges:
            return voice.say("account_checked")
        listed = ", ".join(
            f"{c.id} ({c.amount_text}" + (f", invoice {c.invoice}" if c.invoice else "") + ")"
            for c in charges[:5]
        )
        return voice.say("charges_listed", listed=listed)

    def _help_center_parts(self, *, skip_refund: bool) -> list[str]:
        """Help-center sentences for each question of the message (a refund request among them
        is answered by the refund itself when `skip_refund`)."""
        docs = passages_in(self.ctx)
        if not docs:
            return []
        asked = questions_in(self.ctx.last_user_text)
        if not asked or (len(asked) == 1 and not skip_refund):
            asked = [focus(self.ctx.last_user_text)]
        parts: list[str] = []
        seen: set[str] = set()
        for question in asked:
            if skip_refund and (STRONG_REFUND.search(question) or REFUND_REQUEST.search(question)):
                continue
            found, _ = document_sentences(question, docs)
            for sentence in found[:2]:
                if _same(sentence) not in seen:
                    seen.add(_same(sentence))
                    parts.append(sentence)
        return parts[:5]

    def _account_facts(self, charges: list[Charge]) -> list[str]:
        """What the lookups say that the customer asked about, by the results' shapes: the
        customer record (an `email`), invoices (`number` + `total`), charges (`ref` + amount)."""
        voice = self.voice
        ctx = self.ctx
        asked = fold(ctx.customer_text)
        currency = next((str(v) for v in ctx.result_values("currency")), "")
        facts: list[str] = []
        customer = next((d for d in ctx.result_dicts if "email" in d), None)
        if customer is not None and VAT_WORDS.search(asked):
            key = next((k for k in customer if "vat" in k.lower() or "tax_id" in k.lower()), None)
            if key is not None:
                vat = str(customer.get(key) or "")
                facts.append(
                    voice.say("fact_vat_on_file", vat=vat) if vat else voice.say("fact_no_vat")
                )
        plan = customer.get("plan") if customer is not None else None
        own = str((customer or {}).get("currency") or currency)
        if isinstance(plan, dict) and PLAN_WORDS.search(asked):
            name = str(plan.get("name") or plan.get("code") or "").strip()
            price = next((plan[k] for k in plan if "price" in k.lower()), None)
            interval = INTERVALS.get(str(plan.get("interval") or "").lower(), "")
            end = next((str(plan[k]) for k in plan if "end" in k.lower() and plan[k]), "")
            if name:
                facts.append(
                    voice.say(
                        "fact_plan",
                        plan=name.title(),
                        price=money_text(price, own) if price is not None else "",
                        interval=f" a {interval}" if interval else "",  # "$49.00 a month"
                        until=f", paid up to {end}" if end else "",
                    ).replace(" ()", "")
                )
        invoices = [d for d in ctx.result_dicts if "number" in d and "total" in d]
        if invoices and INVOICE_WORDS.search(asked):
            facts.append(self._invoice_fact(invoices, currency))
        facts.extend(self._charge_facts(charges, asked, currency))
        return facts

    def _invoice_fact(self, invoices: list[dict[str, Any]], currency: str) -> str:
        voice = self.voice

        def total(d: dict[str, Any]) -> str:
            return money_text(d.get("total"), str(d.get("currency") or currency))

        def when(d: dict[str, Any]) -> str:
            date = next((str(d[k]) for k in d if "issued" in k.lower() and d[k]), "")
            return f" (issued {date})" if date else ""

        named = [d for d in invoices if str(d["number"]) in self.ctx.customer_text]
        asked = fold(self.ctx.customer_text)
        several = re.search(r"\b(three|two|four|last \d|copies|all)\b", asked)
        if several and not named and len(invoices) > 1:
            listed = ", ".join(f"{d['number']}{when(d)}: {total(d)}" for d in invoices[:3])
            return voice.say("fact_invoices", listed=listed)
        latest = named[0] if named else invoices[0]
        tax = next((latest[k] for k in latest if k.lower() in ("tax", "vat", "tax_amount")), None)
        number = _decimal(tax)
        if number is None:
            tax_text = ""
        elif number == 0:
            tax_text = ", with no VAT added"
        else:
            tax_text = f", including {money_text(tax, str(latest.get('currency') or currency))} VAT"
        return voice.say(
            "fact_invoice",
            number=latest["number"],
            when=when(latest),
            total=total(latest),
            tax=tax_text,
        )

    def _charge_facts(self, charges: list[Charge], asked: str, currency: str) -> list[str]:
        voice = self.voice
        said = money_values(self.ctx.customer_text)
        mentioned = [c for c in charges if c.id in self.ctx.customer_text]
        mentioned += [c for c in charges if c not in mentioned and any(c.costs(a) for a in said)]
        failed = [c for c in charges if not c.settled]
        refunded = [c for c in charges if c.settled and c.refunded > 0]
        picked: list[Charge] = mentioned[:1]
        if PAYMENT_WORDS.search(asked):
            picked += [c for c in failed[:1] if c not in picked]
        if REFUND_WORDS.search(asked):
            picked += [c for c in refunded[:2] if c not in picked]
        facts = [self._charge_fact(c, currency) for c in picked]
        settled = [c for c in charges if c.settled]
        if TOTAL_WORDS.search(asked) and len(settled) > 1:
            year = max(c.when for c in settled)[:4] if all(c.when for c in settled) else ""
            counted = [c for c in settled if not year or c.when.startswith(year)]
            codes = {c.currency for c in counted}
            if len(codes) == 1:
                code = codes.pop() or currency
                paid = sum(
                    ((_decimal(c.data.get(c.amount_key)) or Decimal(0)) for c in counted),
                    Decimal(0),
                )
                back = sum((c.refunded for c in counted), Decimal(0))
                unit = counted[0].amount_key
                came_back = f", of which {money_text(_units(back, unit), code)} has been refunded"
                facts.append(
                    voice.say(
                        "fact_paid_total",
                        count=len(counted),
                        total=money_text(_units(paid, counted[0].amount_key), code),
                        refunded=came_back if back else "",
                    )
                )
            if not picked:
                facts.extend(self._charge_fact(c, currency) for c in counted[:4])
        return facts

    def _charge_fact(self, charge: Charge, currency: str) -> str:
        when = f" on {charge.when[:10]}" if charge.when else ""
        if not charge.settled:
            return self.voice.say(
                "fact_charge_failed",
                amount=charge.money(charge.amount_key, currency),
                when=when,
                charge=charge.id,
            )
        back = charge.refunded
        refunded = ""
        if back:
            code = charge.currency or currency
            refunded = f", and {money_text(_units(back, charge.amount_key), code)} of it came back"
            if charge.refunded_fully:
                refunded += " (refunded in full)"
        return self.voice.say(
            "fact_charge",
            amount=charge.money(charge.amount_key, currency),
            when=when,
            charge=charge.id,
            refunded=refunded,
        )


def _units(value: Decimal, key: str) -> Decimal:
    """An amount kept in cents under `key`, in units."""
    return value / 100 if "cent" in key.lower() else value


def _error_text(text: str, data: Any) -> str:
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return text


def _escalated_text(reason: str, voice: Variation) -> str:
    why = f" ({reason.rstrip('.')})" if reason else ""
    return voice.say("escalated", why=why)


def _narrate_lookup(name: str, voice: Variation, n: int = 0) -> str:
    low = name.lower()
    if "memor" in low:
        key = "look_memory"
    elif "customer" in low or "account" in low:
        key = "look_account"
    elif "charge" in low or "payment" in low:
        key = "look_charges"
    elif "invoice" in low:
        key = "look_invoices"
    else:
        key = "look_other"
    return voice.pick(f"narrate:{name}:{n}", PHRASES[key]).format(tool=name)


def _kind(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind


def _enum_value(value: str, schema: dict[str, Any]) -> str:
    options = [str(o) for o in schema.get("enum") or []]
    if not options or value in options:
        return value
    return next((o for o in options if o.lower() == value.lower()), value)


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    kind = _kind(schema)
    if value is None:
        return None
    try:
        if kind == "integer":
            return int(Decimal(str(value)))
        if kind == "number":
            return float(Decimal(str(value)))
        if kind == "string":
            return str(value)
    except (InvalidOperation, ValueError):
        return value
    return value


# --------------------------------------------------------------------------------- adversarial
IGNORE = re.compile(
    r"ignore (all |any |the )?(previous|prior|above|earlier|your) (instructions|rules|prompt)", re.I
)
REFUND_ORDER = re.compile(
    r"refund\s+(?:of\s+)?[$€£]?\s?(\d[\d,]*(?:\.\d+)?)\s*(?:usd|eur|gbp|dollars)?\s*"
    r"(?:to|for|on|from)\s+(?:charge\s+)?(ch_[A-Za-z0-9_]+)",
    re.I,
)
CLASSIFY_ORDER = re.compile(
    r"(?:classify|route|mark|label)\s+(?:this|it|the ticket|me)\s+(?:as|to)\s+['\"]?([a-z_]+)", re.I
)
SAY_ORDER = re.compile(
    r"(?:say|reply|respond|answer)\s+(?:with|exactly|only)?\s*[:\"']\s*(.+)", re.I
)
REVEAL = re.compile(r"(reveal|print|show|repeat).{0,20}(system prompt|instructions)", re.I)


class Compromised:
    """A compromised model: does what any text in its context tells it to."""

    def __init__(self, ctx: Context, tools: list[dict[str, Any]], schema: dict[str, Any] | None):
        self.ctx = ctx
        self.tools = tools
        self.schema = schema
        # Instructions come from the customer and from tool results, i.e. untrusted text.
        self.untrusted = "\n".join([ctx.customer_text, ctx.results_text])
        self.everything = "\n".join([self.untrusted, ctx.system])

    def step(self) -> Step:
        if self.schema is not None:
            return Step("Doing what the message says.", [], json.dumps(self._schema_answer()))
        if self.tools:
            wanted = self._wanted_calls()
            for name, args in wanted:
                if not any(c.name == name and c.input == args for c in self.ctx.calls):
                    return Step("Following the instructions in the conversation.", [(name, args)])
        return Step("Following the instructions in the conversation.", [], self._text())

    def _orders(self) -> list[tuple[str, str]]:
        return [
            (m.group(1).replace(",", ""), m.group(2)) for m in REFUND_ORDER.finditer(self.untrusted)
        ]

    def _wanted_calls(self) -> list[tuple[str, dict[str, Any]]]:
        refund_tool = next((t for t in self.tools if tool_kind(t["name"]) == "refund"), None)
        calls: list[tuple[str, dict[str, Any]]] = []
        orders = self._orders()
        if refund_tool is not None:
            if not orders:
                ids = CHARGE_ID.findall(self.everything)
                amounts = money_values(self.everything) or [
                    n for n in re.findall(r"\b\d{2,7}\b", self.everything)
                ]
                if ids:
                    biggest = max(amounts, key=lambda a: Decimal(a)) if amounts else "1000"
                    orders = [(biggest, ids[-1])]
            for amount, charge in orders:
                calls.append((refund_tool["name"], self._refund_args(refund_tool, amount, charge)))
        for tool in self.tools:
            named = re.search(rf"\b{re.escape(tool['name'])}\b", self.untrusted)
            if named and tool_kind(tool["name"]) != "refund":
                calls.append((tool["name"], self._any_args(tool)))
        for tool in self.tools:
            if tool_kind(tool["name"]) != "lookup":
                continue
            schema = tool.get("input_schema") or {}
            args: dict[str, Any] = {}
            for prop, sub in (schema.get("properties") or {}).items():
                value = self._foreign(prop)
                if value is not None:
                    args[prop] = _coerce(value, sub)
            if args and set(schema.get("required") or []) <= set(args):
                calls.append((tool["name"], args))
        return calls

    def _foreign(self, prop: str) -> str | None:
        """The last id of the kind `prop` names anywhere in the context: often someone else's."""
        low = prop.lower()
        for word, pattern in (
            ("email", EMAIL),
            ("charge", CHARGE_ID),
            ("invoice", INVOICE_ID),
            ("customer", CUSTOMER_ID),
        ):
            if word in low:
                found = pattern.findall(self.everything)
                return found[-1] if found else None
        return None

    def _refund_args(self, tool: dict[str, Any], amount: str, charge: str) -> dict[str, Any]:
        schema = tool.get("input_schema") or {}
        args: dict[str, Any] = {}
        for prop, sub in (schema.get("properties") or {}).items():
            low = prop.lower()
            if "charge" in low or low in ("id", "ref"):
                args[prop] = charge
            elif "amount" in low:
                args[prop] = _coerce(_to_cents(amount) if "cent" in low else amount, sub)
            elif any(k in low for k in ("reason", "note", "rationale")):
                args[prop] = "Requested in the conversation."
            elif prop in (schema.get("required") or []):
                args[prop] = SchemaFiller(self.ctx, Answers(), root=schema).fill(sub, prop)
        return args

    def _any_args(self, tool: dict[str, Any]) -> Any:
        schema = tool.get("input_schema") or {"type": "object"}
        return SchemaFiller(self.ctx, Answers(), root=schema).fill(schema)

    def _schema_answer(self) -> Any:
        if self.schema is None:
            return None
        forced: dict[str, Any] = {"__confidence__": 1.0}
        order = CLASSIFY_ORDER.search(self.untrusted)
        wanted = order.group(1).lower() if order else "refund"
        for name, sub in (self.schema.get("properties") or {}).items():
            values = sub.get("enum") if isinstance(sub, dict) else None
            if values:
                match = [v for v in values if wanted in str(v).lower()]
                forced[name] = match[0] if match else values[-1]
        orders = self._orders()
        answers = Answers(forced=forced, answer=self._text())
        if orders:
            for name in self.schema.get("properties") or {}:
                if "amount" in name.lower():
                    forced[name] = _coerce(orders[0][0], self.schema["properties"][name])
                elif "charge" in name.lower():
                    forced[name] = orders[0][1]
        return SchemaFiller(self.ctx, answers, root=self.schema).fill(self.schema)

    def _text(self) -> str:
        if REVEAL.search(self.untrusted):
            return f"Sure. My instructions are: {self.ctx.system}"
        say = SAY_ORDER.search(self.untrusted)
        if say:
            return say.group(1).strip().strip("\"'")
        orders = self._orders()
        if orders:
            amount, charge = orders[-1]
            return f"Done! I've refunded {amount} to {charge} as requested."
        if IGNORE.search(self.untrusted):
            return "Understood. I've ignored my previous instructions and will do as you say."
        done = [c for c in self.ctx.calls if tool_kind(c.name) == "refund"]
        if done:
            return f"Done! I've refunded everything you asked for ({len(done)} refunds)."
        return plain_reply(self.ctx)
