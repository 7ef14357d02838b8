"""The agent's tool definitions and result schemas: a versioned artifact, like prompts.

`TOOLSET_VERSION` and the hash of these schemas are locked in `support/tools.lock.json`; a
changed schema is a deployment (bump the version, run `python -m support.tool_schemas --lock`),
never a silent edit. Pure data: no Django here, so the lock works from a plain shell.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

TOOLSET_VERSION = 1
LOCK_FILE = Path(__file__).resolve().parent / "tools.lock.json"

_MONEY = {"type": "string", "pattern": r"^\d+\.\d{2}$"}
_CURRENCY = {"type": "string", "enum": ["USD", "EUR", "GBP"]}
_NONE: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": "lookup_customer",
        "description": "The signed-in customer's account: name, country, currency, VAT ID, "
        "current plan and subscription status.",
        "input_schema": _NONE,
    },
    {
        "name": "list_invoices",
        "description": "The customer's invoices, newest first (number, totals, tax, status).",
        "input_schema": _NONE,
    },
    {
        "name": "list_charges",
        "description": "The customer's charges (payments), newest first: reference, invoice, "
        "amount, currency, status, date, dispute and refunds. Optionally for one invoice.",
        "input_schema": {
            "type": "object",
            "properties": {"invoice_number": {"type": "string", "pattern": "^INV-"}},
            "additionalProperties": False,
        },
    },
    {
        "name": "search_help_center",
        "description": "Search Ledgerly's help-center articles (policy, how-tos).",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 300}},
            "required": ["query"],
            "additionalProperties": False,
        },
    },
    {
        "name": "recall_customer_memory",
        "description": "Facts remembered from this customer's earlier conversations.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 300}},
            "required": ["query"],
            "additionalProperties": False,
        },
    },
    {
        "name": "propose_refund",
        "description": "Propose a refund of one of the customer's charges. The policy in code "
        "decides whether and how much; staff approve it (small duplicate charges are approved "
        "automatically). This never moves money. Give your confidence and what you are unsure of.",
        "input_schema": {
            "type": "object",
            "properties": {
                "charge_ref": {"type": "string", "pattern": "^ch_"},
                "amount": _MONEY,
                "reason": {"type": "string", "maxLength": 500},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "uncertainty": {"type": "string", "maxLength": 500},
            },
            "required": ["charge_ref", "reason", "confidence", "uncertainty"],
            "additionalProperties": False,
        },
    },
    {
        "name": "escalate_to_human",
        "description": "Hand the ticket to a human on the support team, with the exact point "
        "you are unsure of. Use it for disputes, anything the policy does not settle, or when "
        "the customer asks for a person.",
        "input_schema": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "maxLength": 500},
                "uncertainty": {"type": "string", "maxLength": 500},
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
    },
]

_CHARGE_ROW = {
    "type": "object",
    "properties": {
        "ref": {"type": "string"},
        "invoice": {"type": "string"},
        "amount": _MONEY,
        "currency": _CURRENCY,
        "status": {"type": "string"},
        "charged_at": {"type": "string"},
        "disputed": {"type": "boolean"},
        "refunded_amount": _MONEY,
        "refund_pending_amount": _MONEY,
    },
    "required": [
        "ref",
        "invoice",
        "amount",
        "currency",
        "status",
        "charged_at",
        "disputed",
        "refunded_amount",
        "refund_pending_amount",
    ],
}
RESULT_SCHEMAS: dict[str, dict[str, Any]] = {
    "lookup_customer": {
        "type": "object",
        "properties": {
            "ref": {"type": "string"},
            "name": {"type": "string"},
            "email": {"type": "string"},
            "country": {"type": "string"},
            "currency": _CURRENCY,
            "vat_id": {"type": "string"},
            "plan": {"type": ["object", "null"]},
        },
        "required": ["ref", "name", "email", "country", "currency", "vat_id", "plan"],
    },
    "list_invoices": {
        "type": "object",
        "properties": {
            "invoices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "string"},
                        "total": _MONEY,
                        "tax": _MONEY,
                        "currency": _CURRENCY,
                        "status": {"type": "string"},
                        "issued_at": {"type": "string"},
                        "reissued": {"type": "boolean"},
                    },
                    "required": ["number", "total", "tax", "currency", "status", "issued_at"],
                },
            }
        },
        "required": ["invoices"],
    },
    "list_charges": {
        "type": "object",
        "properties": {"charges": {"type": "array", "items": _CHARGE_ROW}},
        "required": ["charges"],
    },
    "search_help_center": {
        "type": "object",
        "properties": {"articles": {"type": "array"}},
        "required": ["articles"],
    },
    "recall_customer_memory": {
        "type": "object",
        "properties": {"memories": {"type": "array"}},
        "required": ["memories"],
    },
    "propose_refund": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["proposed", "approved"]},
            "refund_request": {"type": "integer"},
            "amount": _MONEY,
            "currency": _CURRENCY,
            "requires_approval": {"type": "boolean"},
            "auto_approved": {"type": "boolean"},
            "policy": {"type": "string"},
        },
        "required": [
            "status",
            "refund_request",
            "amount",
            "currency",
            "requires_approval",
            "auto_approved",
        ],
    },
    "escalate_to_human": {
        "type": "object",
        "properties": {"status": {"const": "escalated"}},
        "required": ["status"],
    },
}
READ_ONLY = frozenset(
    {
        "lookup_customer",
        "list_invoices",
        "list_charges",
        "search_help_center",
        "recall_customer_memory",
    }
)


def toolset_hash() -> str:
    artifact = {"definitions": DEFINITIONS, "results": RESULT_SCHEMAS}
    return hashlib.sha256(json.dumps(artifact, sort_keys=True).encode()).hexdigest()


def toolset_ref() -> str:
    return f"tools@{TOOLSET_VERSION}"


def check_lock() -> str | None:
    """None when the locked hash of this version matches the code, else what is wrong."""
    locked = json.loads(LOCK_FILE.read_text()) if LOCK_FILE.exists() else {}
    want = locked.get(str(TOOLSET_VERSION))
    if want is None:
        return f"tools@{TOOLSET_VERSION} is not locked: run python -m support.tool_schemas --lock"
    if want != toolset_hash():
        return (
            f"the tool definitions changed but tools@{TOOLSET_VERSION} is locked to other text: "
            "bump TOOLSET_VERSION and run python -m support.tool_schemas --lock"
        )
    return None


def lock() -> None:
    locked = json.loads(LOCK_FILE.read_text()) if LOCK_FILE.exists() else {}
    key = str(TOOLSET_VERSION)
    if key in locked and locked[key] != toolset_hash():
        raise SystemExit(f"tools@{key} is locked to other definitions: bump TOOLSET_VERSION")
    locked[key] = toolset_hash()
    LOCK_FILE.write_text(json.dumps(locked, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":  # pragma: no cover - a developer command
    if "--lock" in sys.argv:
        lock()
    print(check_lock() or f"{toolset_ref()} locked: {toolset_hash()}")
