"""Shared request builders and a fake clock for the simulator tests."""

from __future__ import annotations

import json
from typing import Any


class FakeClock:
    """A monotonic clock tests move by hand; `sleep` advances it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def documents(*docs: tuple[str, str, str]) -> str:
    """Passages in the prompt convention of CONTRACTS.md section 3."""
    parts = [
        f'<document index="{i}"><source>{slug}</source><title>{title}</title>'
        f"<document_content>{content}</document_content></document>"
        for i, (slug, title, content) in enumerate(docs, start=1)
    ]
    return "<documents>" + "".join(parts) + "</documents>"


REFUND_DOCS = documents(
    (
        "refund-policy",
        "Refund policy",
        "Monthly plans get a full refund if you ask within 14 days of the charge. "
        "Annual plans get a full refund within 30 days of the charge. "
        "Refunds go back to the original payment method and take 5-10 business days to appear.",
    ),
    (
        "invoices",
        "Invoices and tax",
        "An invoice is issued on each billing date and can be downloaded as PDF from "
        "Billing > Invoices. EU customers are charged VAT at their country's rate.",
    ),
)

LANE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "lane": {"type": "string", "enum": ["faq", "refund", "agent"]},
        "confidence": {"type": "number"},
        "reason": {"type": "string"},
    },
    "required": ["lane", "confidence", "reason"],
    "additionalProperties": False,
}


def lookup_tools() -> list[dict[str, Any]]:
    """The agent's bounded tools, shaped like the support app's."""
    return [
        {
            "name": "get_customer",
            "description": "Look up the customer by email.",
            "input_schema": {
                "type": "object",
                "properties": {"email": {"type": "string"}},
                "required": ["email"],
            },
        },
        {
            "name": "list_charges",
            "description": "List the customer's charges.",
            "input_schema": {
                "type": "object",
                "properties": {"customer_id": {"type": "integer"}},
                "required": ["customer_id"],
            },
        },
        {
            "name": "propose_refund",
            "description": "Propose a refund for staff approval.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "charge_id": {"type": "string"},
                    "amount": {"type": "string"},
                    "reason": {"type": "string"},
                },
                "required": ["charge_id", "amount", "reason"],
            },
        },
        {
            "name": "escalate_to_human",
            "description": "Hand the ticket to staff.",
            "input_schema": {
                "type": "object",
                "properties": {"reason": {"type": "string"}},
                "required": ["reason"],
            },
        },
    ]


def tool_result(tool_use_id: str, payload: Any, *, is_error: bool = False) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": json.dumps(payload),
        "is_error": is_error,
    }


def run_agent(
    client: Any,
    *,
    user: str,
    results: dict[str, Any],
    errors: frozenset[str] = frozenset(),
    thinking: bool = False,
    extra_headers: dict[str, str] | None = None,
    max_turns: int = 8,
    tools: list[dict[str, Any]] | None = None,
    turns: list[list[str]] | None = None,
    error_payloads: dict[str, Any] | None = None,
) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """Drive the simulator through a tool loop; returns (tool calls made, final message).

    `results` maps tool name -> the JSON its tool returns; tools in `errors` return is_error.
    `error_payloads` gives an erroring tool's own error body (default {"error": "lookup failed"}).
    `tools` defaults to `lookup_tools()`; `turns`, if given, collects the tool names of each turn.
    """
    messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
    calls: list[tuple[str, dict[str, Any]]] = []
    extra: dict[str, Any] = {"thinking": {"type": "adaptive"}} if thinking else {}
    message = None
    for _ in range(max_turns):
        message = client.messages.create(
            model="claude-sonnet-5-5",
            max_tokens=2000,
            tools=lookup_tools() if tools is None else tools,
            messages=messages,
            extra_headers=extra_headers or {},
            **extra,
        )
        messages.append({"role": "assistant", "content": [b.to_dict() for b in message.content]})
        uses = [b for b in message.content if b.type == "tool_use"]
        if message.stop_reason != "tool_use":
            break
        calls.extend((b.name, dict(b.input)) for b in uses)
        if turns is not None:
            turns.append([b.name for b in uses])
        messages.append(
            {
                "role": "user",
                "content": [
                    tool_result(
                        b.id,
                        (error_payloads or {}).get(b.name, {"error": "lookup failed"})
                        if b.name in errors
                        else results[b.name],
                        is_error=b.name in errors,
                    )
                    for b in uses
                ],
            }
        )
    return calls, message
