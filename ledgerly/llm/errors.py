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
