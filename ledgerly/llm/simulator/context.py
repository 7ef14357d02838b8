"""What the simulated model can see in a request: conversation, documents, tool calls, results.

Everything the simulator decides is derived from this, never from outside knowledge; with a
non-zero seed, `Context.voice` holds the seeded choices of wording and order (variation.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .variation import Variation

DOCUMENTS = re.compile(r"<documents>.*?</documents>", re.S)
DOCUMENT = re.compile(r"<document\b[^>]*>(.*?)</document>", re.S)
SOURCE = re.compile(r"<source>(.*?)</source>", re.S)
TITLE = re.compile(r"<title>(.*?)</title>", re.S)
DOC_CONTENT = re.compile(r"<document_content>(.*?)</document_content>", re.S)

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
CHARGE_ID = re.compile(r"\bch_[A-Za-z0-9_]+\b")
INVOICE_ID = re.compile(r"\bINV-[A-Za-z0-9-]+\b", re.I)
CUSTOMER_ID = re.compile(r"\bcus_[A-Za-z0-9_]+\b")
MONEY = re.compile(
    r"(?:[$€£]\s?(\d[\d,]*(?:\.\d{1,2})?))|(?:(\d[\d,]*(?:\.\d{1,2})?)\s?(?:usd|eur|gbp|dollars|euros|pounds)\b)",
    re.I,
)


@dataclass(frozen=True)
class Document:
    source: str
    title: str
    content: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    name: str
    text: str
    is_error: bool
    data: Any  # parsed JSON when the result is JSON, else None


def block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def walk(value: Any) -> list[dict[str, Any]]:
    """Every dict inside a JSON value, outermost first."""
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


@dataclass
class Context:
    body: dict[str, Any]
    system: str = ""
    user_texts: list[str] = field(default_factory=list)  # customer-side text, documents removed
    raw_user_texts: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    # The seeded choices of this sample (Variation.none(): always the seed-0 wording and order).
    voice: Variation = field(default_factory=Variation.none)

    @classmethod
    def of(cls, body: dict[str, Any], *, voice: Variation | None = None) -> Context:
        system = body.get("system")
        ctx = cls(
            body=body,
            system=system if isinstance(system, str) else block_text(system),
            voice=voice or Variation.none(),
        )
        names: dict[str, str] = {}
        for message in body.get("messages") or []:
            content = message.get("content")
            blocks = (
                [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            )
            for block in blocks:
                kind = block.get("type")
                if message.get("role") == "assistant" and kind == "tool_use":
                    call = ToolCall(
                        str(block.get("id")), str(block.get("name")), _as_dict(block.get("input"))
                    )
                    ctx.calls.append(call)
                    names[call.id] = call.name
                elif message.get("role") == "user" and kind == "text":
                    text = str(block.get("text", ""))
                    ctx.raw_user_texts.append(text)
                    stripped = DOCUMENTS.sub(" ", text).strip()
                    if stripped:
                        ctx.user_texts.append(stripped)
                elif kind == "tool_result":
                    text = block_text(block.get("content"))
                    tool_use_id = str(block.get("tool_use_id"))
                    ctx.results.append(
                        ToolResult(
                            tool_use_id,
                            names.get(tool_use_id, ""),
                            text,
                            bool(block.get("is_error")),
                            _parse_json(text),
                        )
                    )
        for text in [ctx.system, *ctx.raw_user_texts]:
            ctx.documents.extend(_documents(text))
        return ctx

    @property
    def customer_text(self) -> str:
        return "\n".join(self.user_texts)

    @property
    def last_user_text(self) -> str:
        return self.user_texts[-1] if self.user_texts else ""

    @property
    def results_text(self) -> str:
        return "\n".join(r.text for r in self.results)

    @cached_property
    def result_dicts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for result in self.results:
            if not result.is_error and result.data is not None:
                found.extend(walk(result.data))
        return found

    def result_values(self, key: str) -> list[Any]:
        """Scalar values stored under `key` anywhere in the (JSON) tool results."""
        return [
            d[key] for d in self.result_dicts if key in d and isinstance(d[key], str | int | float)
        ]

    def called(self, name: str) -> list[ToolCall]:
        return [c for c in self.calls if c.name == name]

    def result_for(self, call: ToolCall) -> ToolResult | None:
        return next((r for r in self.results if r.tool_use_id == call.id), None)


def _documents(text: str) -> list[Document]:
    docs = []
    for match in DOCUMENT.finditer(text):
        inner = match.group(1)
        source = SOURCE.search(inner)
        title = TITLE.search(inner)
        content = DOC_CONTENT.search(inner)
        docs.append(
            Document(
                source.group(1).strip() if source else "",
                title.group(1).strip() if title else "",
                (content.group(1) if content else inner).strip(),
            )
        )
    return docs


def money_values(text: str) -> list[str]:
    """Money amounts as written ("49.00", "5000"), in order of appearance."""
    return [(m.group(1) or m.group(2)).replace(",", "") for m in MONEY.finditer(text)]
