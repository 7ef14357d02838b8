"""Filling a JSON schema from the conversation: every required property, enums by heuristics.

Used for structured outputs (`output_config.format`) and for the input of tools that are not
lookups (a `classify_ticket` tool with a schema gets the same treatment).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from .context import CHARGE_ID, CUSTOMER_ID, EMAIL, INVOICE_ID, Context, money_values
from .language import Signals, covers, terms

LANE_WORDS: dict[str, tuple[str, ...]] = {
    "refund": ("refund", "money_back", "reimburse"),
    "faq": ("faq", "question", "info", "knowledge", "help_center", "answer", "policy"),
    "agent": ("agent", "complex", "investigat", "account", "multi"),
    "human": ("human", "escalat", "staff", "person", "manual"),
}
SENTIMENT_NEGATIVE = re.compile(
    r"unacceptable|angry|furious|ridiculous|terrible|worst|frustrat|annoy|scam|disappoint|!!", re.I
)
SENTIMENT_POSITIVE = re.compile(r"\b(thanks|thank you|great|love|awesome|appreciate)\b", re.I)
URGENT = re.compile(r"\b(urgent|asap|immediately|right now|today|lawyer|legal)\b", re.I)


@dataclass
class Answers:
    """Texts the model has already worked out, offered to matching properties."""

    answer: str = ""
    summary: str = ""
    reason: str = ""
    sources: list[str] = field(default_factory=list)
    found: bool = True
    # What the model is unsure about, and how sure it is (None: judged from the ticket's text).
    uncertainty: str = ""
    confidence: float | None = None
    # Adversarial mode: property values dictated by injected instructions.
    forced: dict[str, Any] = field(default_factory=dict)


class SchemaFiller:
    def __init__(self, ctx: Context, answers: Answers, *, root: dict[str, Any]) -> None:
        self.ctx = ctx
        self.answers = answers
        self.root = root
        self.text = ctx.customer_text
        self.everything = "\n".join([ctx.customer_text, ctx.results_text])
        self.signals = Signals.of(self.text)

    def fill(self, schema: dict[str, Any], name: str = "") -> Any:
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._enum(name, list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self._resolve(o) for o in schema[key]]
                usable = [o for o in options if o.get("type") != "null"] or options
                return self.fill(usable[0], name)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self._resolve(part))
            return self.fill(merged, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema)
        if kind == "array":
            return self._array(schema, name)
        if kind == "string":
            return self._string(schema, name)
        if kind in ("number", "integer"):
            return self._number(schema, name, integer=kind == "integer")
        if kind == "boolean":
            return self._boolean(name)
        if kind == "null":
            return None
        return self._string(schema, name)

    def _resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 20:
            seen += 1
            ref = str(schema["$ref"])
            target: Any = self.root
            for part in ref.lstrip("#/").split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema if isinstance(schema, dict) else {}

    def _object(self, schema: dict[str, Any]) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        out: dict[str, Any] = {}
        for prop in [*required, *[p for p in properties if p not in required]]:
            sub = properties.get(prop, {})
            if prop in self.answers.forced:
                out[prop] = self.answers.forced[prop]
            else:
                out[prop] = self.fill(sub, prop)
        return out

    def _array(self, schema: dict[str, Any], name: str) -> list[Any]:
        items = self._resolve(schema.get("items") or {"type": "string"})
        low = name.lower()
        values: list[Any]
        if "enum" in items:
            values = [v for v in items["enum"] if self._enum_score(name, v) > 0][:3]
            values = values or [self._enum(name, list(items["enum"]))]
        elif any(k in low for k in ("source", "citation", "slug", "document")):
            values = list(self.answers.sources)
        elif "charge" in low:
            values = list(dict.fromkeys(CHARGE_ID.findall(self.everything)))
        elif "invoice" in low:
            values = list(dict.fromkeys(INVOICE_ID.findall(self.everything)))
        elif "email" in low:
            values = list(dict.fromkeys(EMAIL.findall(self.everything)))
        elif "topic" in low or "issue" in low or "categor" in low or "tag" in low:
            values = list(self.signals.topics)
        else:
            values = [self.fill(items, name.rstrip("s"))]
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        while len(values) < lo:
            values.append(self.fill(items, name.rstrip("s")))
        if hi is not None:
            values = values[: int(hi)]
        return values

    def _string(self, schema: dict[str, Any], name: str) -> str:
        low = name.lower()
        fmt = schema.get("format")
        value = self._string_for(low, fmt)
        max_len = schema.get("maxLength")
        if max_len is not None:
            value = value[: int(max_len)]
        min_len = int(schema.get("minLength", 0))
        return value.ljust(min_len, ".") if len(value) < min_len else value

    def _string_for(self, low: str, fmt: Any) -> str:
        def pick(rx: re.Pattern[str]) -> str:
            return next(iter(rx.findall(self.everything)), "")

        if fmt == "email" or "email" in low:
            return pick(EMAIL)
        if fmt == "date":
            return dt.date.today().isoformat()  # noqa: DTZ011 - only a placeholder date
        if fmt == "date-time":
            return dt.datetime.now(dt.UTC).isoformat()
        if "charge" in low:
            return pick(CHARGE_ID)
        if "invoice" in low:
            return pick(INVOICE_ID)
        if "customer" in low and "id" in low:
            return pick(CUSTOMER_ID)
        if any(k in low for k in ("uncertain", "doubt", "caveat", "assumption", "unsure")):
            return self.answers.uncertainty or _uncertainty(self.signals)
        if "summar" in low:
            return self.answers.summary or self.answers.answer or self.ctx.last_user_text[:300]
        if any(k in low for k in ("reason", "rationale", "explanation", "justification", "why")):
            return self.answers.reason or _reason(self.signals)
        if any(k in low for k in ("answer", "reply", "response", "message", "text", "body")):
            return self.answers.answer or self.answers.summary or self.ctx.last_user_text
        if "question" in low or "query" in low:
            return self.ctx.last_user_text[:500]
        if "language" in low or low == "lang":
            return "en"
        if "title" in low or "subject" in low:
            return self.ctx.last_user_text.split("\n")[0][:80]
        if "amount" in low:
            amounts = money_values(self.everything)
            return amounts[0] if amounts else ""
        if "lane" in low or "category" in low or "intent" in low:
            return self.signals.lane
        return self.ctx.last_user_text[:200]

    def _number(self, schema: dict[str, Any], name: str, *, integer: bool) -> float | int:
        low = name.lower()
        value: float
        if any(k in low for k in ("uncertain", "doubt")):
            value = round(1 - self._confidence(name, schema), 2)
        elif "confidence" in low or "score" in low or "probab" in low:
            value = self.answers.forced.get("__confidence__") or self._confidence(name, schema)
        elif "amount" in low or "total" in low or "price" in low:
            amounts = money_values(self.everything)
            value = float(amounts[0]) if amounts else 0.0
            if "cent" in low:
                value = round(value * 100)
        else:
            numbers = [int(n) for n in re.findall(r"\b\d{1,9}\b", self.text)]
            value = float(numbers[0]) if numbers and "id" in low else 0.0
        minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
        maximum = schema.get("maximum", schema.get("exclusiveMaximum"))
        if minimum is not None:
            value = max(value, float(minimum))
        if maximum is not None:
            value = min(value, float(maximum))
        return round(value) if integer else value

    def _confidence(self, name: str, schema: dict[str, Any]) -> float:
        """How sure the model is, jittered within ±0.1 by the seed (the label never changes)."""
        value = self.answers.confidence
        if value is None:
            value = self.signals.confidence
        low = max(0.0, float(schema.get("minimum", 0.0)))
        high = min(1.0, float(schema.get("maximum", 1.0)))
        return self.ctx.voice.jitter(f"confidence:{name}", value, low=low, high=high)

    def _boolean(self, name: str) -> bool:
        low = name.lower()
        if any(k in low for k in ("human", "escalat", "staff", "manual", "review")):
            return self.signals.dispute or self.signals.several_issues
        if any(k in low for k in ("found", "answerable", "grounded", "in_doc", "supported")):
            return self.answers.found
        if "refund" in low:
            return self.signals.refund
        if "dispute" in low:
            return self.signals.dispute
        if "question" in low:
            return self.signals.question
        if "urgent" in low:
            return bool(URGENT.search(self.text))
        return False

    def _enum(self, name: str, values: list[Any]) -> Any:
        if name in self.answers.forced:
            return self.answers.forced[name]
        scored = [(self._enum_score(name, v), -i, v) for i, v in enumerate(values)]
        best = max(scored)
        return best[2] if best[0] > 0 else values[0]

    def _enum_score(self, name: str, value: Any) -> float:
        label = str(value).lower()
        low = name.lower()
        if "lane" in low or "route" in low or "intent" in low or "categor" in low:
            lane = self.signals.lane
            if any(w in label for w in LANE_WORDS.get(lane, ())):
                return 10.0
        if "sentiment" in low or "tone" in low or "mood" in low:
            if SENTIMENT_NEGATIVE.search(self.text):
                return 5.0 if label in ("negative", "angry", "frustrated") else 0.0
            if SENTIMENT_POSITIVE.search(self.text):
                return 5.0 if label == "positive" else 0.0
            return 5.0 if label == "neutral" else 0.0
        if "urgen" in low or "priority" in low or "severity" in low:
            urgent = bool(URGENT.search(self.text)) or self.signals.dispute
            wanted = ("high", "urgent") if urgent else ("normal", "medium", "low")
            return 5.0 if label in wanted else 0.0
        if label in ("refund", "dispute") and getattr(self.signals, label):
            return 4.0
        if label in self.signals.topics:
            return 3.0
        label_terms = terms(label.replace("_", " "))
        text_terms = terms(self.text)
        lower = self.text.lower()
        return float(sum(covers(t, text_terms, lower) for t in label_terms))


def _uncertainty(signals: Signals) -> str:
    if signals.dispute:
        return "Low: the customer says the charge is disputed."
    if signals.several_issues:
        return "Medium: several issues are raised; each may need its own answer."
    if signals.personal and not signals.topics:
        return "Medium: the message does not say clearly what is wrong."
    return f"The {signals.lane} lane is judged from the wording of the message alone."


def _reason(signals: Signals) -> str:
    parts = []
    if signals.dispute:
        parts.append("the customer mentions a dispute or chargeback")
    if signals.refund and signals.personal:
        parts.append("the customer asks for a refund")
    if signals.several_issues:
        parts.append(f"several issues are raised ({', '.join(signals.topics)})")
    if signals.question and not signals.personal:
        parts.append("it is a general policy question")
    if signals.personal and not parts:
        parts.append("it needs a look at the customer's own account")
    if not parts:
        parts.append("no clear billing intent")
    return f"Routed to {signals.lane}: " + "; ".join(parts) + "."
