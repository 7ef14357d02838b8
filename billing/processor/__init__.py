"""The payment-processor adapter: one Protocol, domain errors, and a way to get the configured one.

Everything that talks to a payment processor goes through `PaymentProcessor`. Errors say whether
they are permanent (`ProcessorError.permanent`): a permanent error will fail the same way again,
a transient one may succeed on a retry with the same idempotency key. `ProcessorTimeout` is the
dangerous kind: the processor may or may not have applied the call, so the only safe retry is
one that carries the same idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Protocol

from django.conf import settings


@dataclass(frozen=True)
class ProcessorRefund:
    processor_ref: str
    charge_ref: str
    amount: Decimal
    currency: str
    idempotency_key: str
    replayed: bool = False  # True when the processor returned a result recorded for the key


class ProcessorError(Exception):
    permanent: bool = False
    code: str = "processor_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if code is not None:
            self.code = code


class ProcessorUnavailable(ProcessorError):
    """A 5xx or connection failure before the processor did anything. Safe to retry."""

    code = "processor_unavailable"


class ProcessorTimeout(ProcessorError):
    """No answer in time; the processor may have applied the call. Retry only with the same key."""

    code = "processor_timeout"


class ProcessorDeclined(ProcessorError):
    """The processor refused the refund (e.g. the card account is closed). Final."""

    permanent = True
    code = "declined"


class ProcessorIdempotencyMismatch(ProcessorError):
    """The key was used before with other parameters. Final: a programming error on our side."""

    permanent = True
    code = "idempotency_key_reused"


class PaymentProcessor(Protocol):
    def refund(
        self, *, charge_ref: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> ProcessorRefund:
        """Refund `amount` of the charge. The same key with the same parameters returns the
        recorded result without refunding again; with other parameters it raises
        ProcessorIdempotencyMismatch."""
        ...


@cache
def get_processor() -> PaymentProcessor:
    """The processor named by settings.PAYMENT_PROCESSOR (only the simulator exists so far)."""
    if settings.PAYMENT_PROCESSOR == "simulator":
        from billing.processor.simulator import SimulatedProcessor

        return SimulatedProcessor()
    raise NotImplementedError(settings.PAYMENT_PROCESSOR)


__all__ = [
    "PaymentProcessor",
    "ProcessorDeclined",
    "ProcessorError",
    "ProcessorIdempotencyMismatch",
    "ProcessorRefund",
    "ProcessorTimeout",
    "ProcessorUnavailable",
    "get_processor",
]
