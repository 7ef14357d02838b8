"""The gateway's domain errors: each says whether retrying can help."""

from __future__ import annotations


class LLMError(Exception):
    """Base of every error the gateway raises."""


class Defer(LLMError):
    """Transient: try again after `seconds` (a Celery retry with countdown); don't block."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        self.seconds = max(0.0, float(seconds))
        self.reason = reason
        super().__init__(f"defer {self.seconds:.1f}s: {reason}" if reason else f"defer {seconds}s")


class BudgetExhausted(LLMError):
    """A budget (run, customer/day, global day/month, or the provider's spend limit) has no room
    for this call. Model calls stop; the ticket waits or is escalated."""

    def __init__(self, scope: str, message: str = "") -> None:
        self.scope = scope
        super().__init__(message or f"LLM budget exhausted: {scope}")


class ModelCallFailed(LLMError):
    """Permanent: the request itself is wrong (400/401/403/404...) or cannot be made; retrying the
    same request will not help."""


class CircuitOpen(LLMError):
    """The model's breaker is open: failing fast without calling it (internal: the gateway falls
    back to the next tier)."""


class ModelUnavailable(LLMError):
    """Every step the call's fallback allowed failed or was skipped (breaker open, deadline,
    outages, invalid answers), and it did not ask for the static answer. Transient as far as the
    model goes; `outcomes` are the recorded steps' outcomes, in order."""

    def __init__(self, outcomes: list[str], detail: str = "", call_ids: list[int] | None = None):
        self.outcomes = list(outcomes)
        self.call_ids = list(call_ids or [])
        super().__init__(f"no model answered: {detail or ', '.join(outcomes) or 'no step ran'}")


class CalledInsideTransaction(RuntimeError):
    """A model call (or batch) was made inside a database transaction. Its LLMCall record would
    be written in the caller's transaction, and a rollback would erase the record of money spent;
    it would also hold the transaction open for the length of a model call. A programming error,
    deliberately not an LLMError (which callers handle as a model outcome)."""
