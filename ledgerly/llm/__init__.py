"""The model gateway: every model call in Ledgerly goes through `ledgerly.llm.complete`.

    from ledgerly import llm
    completion = llm.complete(tier="small", purpose="summarise", prompt="summarise_conversation",
                              messages=[{"role": "user", "content": "..."}], max_tokens=512)

Errors: `llm.Defer(seconds)` (retry later), `llm.BudgetExhausted`, `llm.ModelCallFailed`.
The gateway and its models load lazily: this package is imported while Django populates its
app registry, before models may be imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledgerly.llm.errors import BudgetExhausted, Defer, LLMError, ModelCallFailed

if TYPE_CHECKING:
    from ledgerly.llm.batches import BatchRequest, BatchResult, run_batch
    from ledgerly.llm.gateway import Completion, ToolCall, backend_description, complete

__all__ = [
    "BatchRequest",
    "BatchResult",
    "BudgetExhausted",
    "Completion",
    "Defer",
    "LLMError",
    "ModelCallFailed",
    "ToolCall",
    "backend_description",
    "complete",
    "run_batch",
]

_LAZY = {
    "Completion": "ledgerly.llm.gateway",
    "ToolCall": "ledgerly.llm.gateway",
    "complete": "ledgerly.llm.gateway",
    "backend_description": "ledgerly.llm.gateway",
    "BatchRequest": "ledgerly.llm.batches",
    "BatchResult": "ledgerly.llm.batches",
    "run_batch": "ledgerly.llm.batches",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ledgerly.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
