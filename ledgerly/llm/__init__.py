"""The model gateway: every model call in Ledgerly goes through `ledgerly.llm.complete`.

    from ledgerly import llm
    ctx = llm.CallContext.starting_now(
        run_id="run_42", ticket_id="1001", customer_ref="cus_ana", seconds=60
    )
    completion = llm.complete(ctx=ctx, tier="small", purpose="summarise",
                              prompt="summarise_conversation", fallback="none",
                              messages=[{"role": "user", "content": "..."}], max_tokens=512)

Errors: `llm.Defer(seconds)` (retry later), `llm.BudgetExhausted`, `llm.ModelUnavailable` (no
step of the chosen fallback answered), `llm.ModelCallFailed` (the request is wrong). Calling
inside a database transaction raises `llm.CalledInsideTransaction` (a RuntimeError).
The gateway and its models load lazily: this package is imported while Django populates its
app registry, before models may be imported. `CallContext`, `Fallback`, `Tier` and the errors
import nothing from Django.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledgerly.llm.context import CallContext, Fallback, Pins, Tier
from ledgerly.llm.errors import (
    BudgetExhausted,
    CalledInsideTransaction,
    Defer,
    LLMError,
    ModelCallFailed,
    ModelUnavailable,
)

if TYPE_CHECKING:
    from ledgerly.llm.batches import BatchRequest, BatchResult, batch_poll, batch_submit
    from ledgerly.llm.gateway import Completion, ToolCall, backend_description, complete

__all__ = [
    "BatchRequest",
    "BatchResult",
    "BudgetExhausted",
    "CallContext",
    "CalledInsideTransaction",
    "Completion",
    "Defer",
    "Fallback",
    "LLMError",
    "ModelCallFailed",
    "ModelUnavailable",
    "Pins",
    "Tier",
    "ToolCall",
    "backend_description",
    "batch_poll",
    "batch_submit",
    "complete",
]

_LAZY = {
    "Completion": "ledgerly.llm.gateway",
    "ToolCall": "ledgerly.llm.gateway",
    "complete": "ledgerly.llm.gateway",
    "backend_description": "ledgerly.llm.gateway",
    "BatchRequest": "ledgerly.llm.batches",
    "BatchResult": "ledgerly.llm.batches",
    "batch_submit": "ledgerly.llm.batches",
    "batch_poll": "ledgerly.llm.batches",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ledgerly.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
