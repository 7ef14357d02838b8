"""The common path's Redis work in two round trips instead of five.

Before a call: breaker admission, budget reservation and rate-limiter take, in one Lua script
(the three scripts' own functions, composed). After it: budget settlement and limiter
correction, in one. Anything off the common path — breaker open or probing, a downgrade or a
refusal, a limiter wait — is handed back to the gateway, which handles it with the separate
scripts (ledgerly/llm/budget.py, limiter.py, breaker.py; their own tests cover them).

The combined scripts touch keys of several hash slots: they need a single Redis (or a Cluster
with all gateway keys in one slot), which is what Ledgerly runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from ledgerly.llm.breaker import ALLOW_FN, Admission, CircuitBreaker
from ledgerly.llm.budget import RESERVE_FN, SETTLE_FN, Budgets, Candidate, Refusal, Reservation
from ledgerly.llm.conf import RateLimits
from ledgerly.llm.limiter import ACQUIRE_FN, ADJUST_FN, Permit, RateLimiter

# KEYS: breaker state, breaker probe, limiter bucket, budget keys...
# ARGV: n budget keys, probe lease ms, probe owner token, 7 limiter args, budget args...
_ADMIT = (
    ALLOW_FN
    + RESERVE_FN
    + ACQUIRE_FN
    + """
local cb = breaker_allow({KEYS[1], KEYS[2]}, {ARGV[2], ARGV[3]})
if cb[1] ~= 'closed' then return {'breaker', cb[1], cb[2]} end
local bkeys, bargs, largs = {}, {}, {}
for i = 1, tonumber(ARGV[1]) do bkeys[i] = KEYS[3 + i] end
for i = 1, 7 do largs[i] = ARGV[3 + i] end
for i = 11, #ARGV do bargs[#bargs + 1] = ARGV[i] end
local res = budget_reserve(bkeys, bargs)
if res[1] ~= 1 then return {'budget', res[1], res[2], res[3]} end
local wait = limiter_acquire({KEYS[3]}, largs)
return {'ok', res[1], res[2], res[3], wait}
"""
)

# KEYS: limiter bucket, budget keys... ARGV: 4 limiter args, budget settle args...
_SETTLE = (
    SETTLE_FN
    + ADJUST_FN
    + """
local bkeys, bargs = {}, {}
for i = 2, #KEYS do bkeys[#bkeys + 1] = KEYS[i] end
for i = 5, #ARGV do bargs[#bargs + 1] = ARGV[i] end
limiter_adjust({KEYS[1]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
return budget_settle(bkeys, bargs)
"""
)


@dataclass(frozen=True, slots=True)
class Admitted:
    """What the combined admission did. Exactly one of the three outcomes:
    - breaker is set: the breaker was not closed (open, or this caller holds the probe lease);
      nothing else was done;
    - budget is a Refusal, or a Reservation of a later candidate (downgrade): no limiter take;
    - budget is a Reservation of the first candidate, and permit is set (or wait > 0)."""

    breaker: Admission | None
    budget: Reservation | Refusal | None
    permit: Permit | None
    wait: float


class Guards:
    def __init__(
        self,
        client: redis.Redis,
        *,
        breaker: CircuitBreaker,
        budgets: Budgets,
        limiter: RateLimiter,
    ) -> None:
        self.breaker, self.budgets, self.limiter = breaker, budgets, limiter
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    def admit(
        self,
        *,
        model: str,
        family: str,
        limits: RateLimits,
        candidates: Sequence[Candidate],
        run_id: object,
        customer_id: object,
        input_tokens: int,
        output_tokens: int,
    ) -> Admitted:
        bkeys, bargs, scopes = self.budgets.reserve_args(
            candidates, run_id=run_id, customer_id=customer_id
        )
        largs = self.limiter.acquire_args(
            limits, input_tokens=input_tokens, output_tokens=output_tokens
        )
        state, probe, _failures = self.breaker.keys(model)
        token = self.breaker.new_token()
        result = self._admit(
            keys=[state, probe, self.limiter.key(family), *bkeys],
            args=[len(bkeys), self.breaker.probe_lease_ms, token, *largs, *bargs],
        )
        kind = result[0]
        if kind == b"breaker":
            return Admitted(self.breaker.admission(result[1], result[2], token), None, None, 0.0)
        budget = self.budgets.reserve_result(result[1:4], candidates, scopes, bargs)
        if kind == b"budget":
            return Admitted(None, budget, None, 0.0)
        permit, wait = self.limiter.acquire_result(
            family, int(result[4]), input_tokens, output_tokens
        )
        return Admitted(None, budget, permit, wait)

    def settle(
        self,
        reservation: Reservation,
        permit: Permit,
        limits: RateLimits,
        *,
        micro_usd: int,
        tokens: int,
        input_tokens: int,
        output_tokens: int,
    ) -> float:
        """Settle the budget reservation and correct the limiter's estimates in one round trip;
        returns the global budget fraction now committed."""
        ppm = self._settle(
            keys=[self.limiter.key(permit.family), *self.budgets.settle_keys(reservation)],
            args=[
                *self.limiter.settle_args(
                    permit, limits, input_tokens=input_tokens, output_tokens=output_tokens
                ),
                *self.budgets.settle_args(reservation, micro_usd=micro_usd, tokens=tokens),
            ],
        )
        return int(ppm) / 1_000_000
