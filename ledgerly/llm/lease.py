"""What one step of a model call holds in Redis, released in one place.

A step may hold a budget reservation (worst case, ledgerly/llm/budget.py), a rate-limiter permit
(token estimates, limiter.py) and the breaker's single probe lease (breaker.py). A `StepLease`
holds them from the moment they are acquired; every exit path then goes through one of:

- `settle(...)`: the provider answered: the reservation and the permit become the real usage (one
  round trip on the common path), and a probe's success closes the breaker;
- `keep_spent()`: the provider may have charged and we cannot tell how much: the worst case stays
  counted for good (the reservation is closed, so the expiry sweep never gives it back) and the
  permit stays taken (budgets err on refusing);
- `record_failure()`: an outage of the model: counted by the breaker (a probe's failure reopens it
  and gives the probe up);
- `release()`, also what leaving the `with` block does: whatever is still held is given back unused
  (reservation and token estimates to zero, the probe to the next caller).

Each is idempotent: what was handed over is forgotten first, so a second call (or the `with` exit
after one of them) does nothing, and a Redis error in the middle can never hand back money a call
spent. A Redis error while giving back is logged, not raised: the reservation then stays counted
until the sweep gives it back after its hold, and a probe lease expires by itself. The probe
lease is handed over with the owner token its admission got, so only this step can end it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType

import redis
import structlog

from ledgerly.llm import metrics
from ledgerly.llm.budget import Reservation
from ledgerly.llm.conf import RateLimits
from ledgerly.llm.guards import Guards
from ledgerly.llm.limiter import Permit

log = structlog.get_logger(__name__)


class StepLease:
    def __init__(self, guards: Guards, *, model: str, limits: RateLimits) -> None:
        self.guards = guards
        self.model = model
        self.limits = limits
        self.reservation: Reservation | None = None
        self.permit: Permit | None = None
        self.probe_model: str | None = None  # the model whose probe lease this step holds
        self.probe_token = ""  # the lease's owner token (from the breaker's admission)

    # ---------------------------------------------------------------------------- acquiring
    def hold_reservation(self, reservation: Reservation) -> None:
        self.reservation = reservation

    def hold_permit(self, permit: Permit) -> None:
        self.permit = permit

    def hold_probe(self, token: str) -> None:
        self.probe_model, self.probe_token = self.model, token

    @property
    def probe(self) -> bool:
        return self.probe_model is not None

    def move_to(self, model: str, limits: RateLimits) -> None:
        """The step is served by another model (a budget downgrade): the probe of the first is
        given back; the reservation (made for the new model) stays held."""
        self.release_probe()
        self.model, self.limits = model, limits

    # ---------------------------------------------------------------------------- handing over
    def settle(
        self, *, micro_usd: int, tokens: int, input_tokens: int, output_tokens: int
    ) -> float | None:
        """The call was answered: settle to its real usage, and close the breaker if this step
        was its probe. Returns the global budget fraction now committed (None if Redis was lost:
        the reservation then stays counted at its worst case)."""
        reservation, permit = self.reservation, self.permit
        self.reservation = self.permit = None
        fraction = None
        if reservation is not None:
            with _redis_lost("settle", self.model):
                if permit is not None:
                    fraction = self.guards.settle(
                        reservation,
                        permit,
                        self.limits,
                        micro_usd=micro_usd,
                        tokens=tokens,
                        input_tokens=input_tokens,
                        output_tokens=output_tokens,
                    )
                else:
                    fraction = self.guards.budgets.settle(
                        reservation, micro_usd=micro_usd, tokens=tokens
                    )
        probe = self.probe_model
        self.probe_model = None
        with _redis_lost("breaker_success", self.model):
            self.guards.breaker.record_success(
                self.model, probe=probe is not None, token=self.probe_token
            )
        return fraction

    def keep_spent(self) -> None:
        """The provider may have charged an unknown amount: keep the worst case counted for good
        and the permit taken (never given back)."""
        reservation = self.reservation
        self.reservation = self.permit = None
        if reservation is not None:
            with _redis_lost("keep_spent", self.model):
                self.guards.budgets.keep(reservation)

    def release_budget(self) -> None:
        """Nothing was charged: give the reservation and the token estimates back."""
        reservation, permit = self.reservation, self.permit
        self.reservation = self.permit = None
        if reservation is None:
            return
        with _redis_lost("release", self.model):
            if permit is not None:
                self.guards.settle(
                    reservation,
                    permit,
                    self.limits,
                    micro_usd=0,
                    tokens=0,
                    input_tokens=0,
                    output_tokens=0,
                )
            else:
                self.guards.budgets.settle(reservation, micro_usd=0, tokens=0)

    def release_probe(self) -> None:
        probe, self.probe_model = self.probe_model, None
        if probe is not None:
            with _redis_lost("release_probe", probe):
                self.guards.breaker.release_probe(probe, self.probe_token)

    def record_failure(self) -> str:
        """An outage of this step's model: count it for the breaker (a probe's failure reopens
        the breaker, which also ends the probe lease). Returns what the breaker did."""
        probe, self.probe_model = self.probe_model, None
        result = "unknown"
        with _redis_lost("breaker_failure", self.model):
            result = self.guards.breaker.record_failure(
                self.model, probe=probe is not None, token=self.probe_token
            )
        if result in ("opened", "reopened"):
            metrics.BREAKER_OPENED.labels(self.model).inc()
            log.error("llm.breaker_opened", model=self.model, how=result)
        return result

    def release(self) -> None:
        """Give back whatever is still held, unused."""
        self.release_budget()
        self.release_probe()

    def __enter__(self) -> StepLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def _redis_lost(what: str, model: str) -> Iterator[None]:
    """Bookkeeping that must not fail the call: a lost Redis leaves reservations counted and
    probe leases to expire, which errs on refusing, never on overspending."""
    try:
        yield
    except redis.RedisError as exc:
        log.error("llm.redis_lost_after_call", what=what, model=model, error=str(exc))
