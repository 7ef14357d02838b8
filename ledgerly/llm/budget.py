"""Budgets that cannot overshoot under concurrency.

Before a call the gateway reserves its worst case (estimated prompt + max output at the model's
price) against every budget that applies — run tokens and dollars, customer per day, global per
day and per month — in one Lua script, so check-and-add is atomic across all workers. After the
call it settles the reservation to the real cost. Amounts are integer micro-dollars.

The script is offered candidates in order (the requested model, then cheaper ones) and takes the
first that fits everywhere; a "large" candidate is skipped once global spend reaches the
downgrade fraction. If none fits, nothing is reserved and the first blocking scope is named.

A worker killed between reserve and settle leaves its reservation counted (spend looks higher
than it was): budgets err on the side of refusing, never of overspending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

PPM = 1_000_000
_PREFIX = "llm:{budget}"  # one hash slot, so the multi-key script also runs on Redis Cluster

RESERVE_FN = (
    "local function budget_reserve(KEYS, ARGV)\n"
    + """
local n = #KEYS
local kinds, limits, ttls, names = {}, {}, {}, {}
local a = 1
for i = 1, n do
  kinds[i] = ARGV[a]; limits[i] = tonumber(ARGV[a + 1]); ttls[i] = tonumber(ARGV[a + 2])
  names[i] = ARGV[a + 3]; a = a + 4
end
local downgrade_ppm = tonumber(ARGV[a]); local ncand = tonumber(ARGV[a + 1]); a = a + 2
local used = {}
for i = 1, n do used[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
local function global_ppm()
  local f = 0
  for i = 1, 2 do
    local g = math.floor(used[i] * 1000000 / limits[i])
    if g > f then f = g end
  end
  return f
end
local before = global_ppm()
local blocked = ''
for c = 1, ncand do
  local usd = tonumber(ARGV[a]); local tok = tonumber(ARGV[a + 1]); local large = ARGV[a + 2]
  a = a + 3
  local fits = true
  if large == '1' and before >= downgrade_ppm then
    fits = false
    if blocked == '' then blocked = 'global_downgrade' end
  else
    for i = 1, n do
      local amount = usd
      if kinds[i] == 't' then amount = tok end
      if used[i] + amount > limits[i] then
        fits = false
        if blocked == '' then blocked = names[i] end
        break
      end
    end
  end
  if fits then
    for i = 1, n do
      local amount = usd
      if kinds[i] == 't' then amount = tok end
      used[i] = redis.call('INCRBY', KEYS[i], amount)
      if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttls[i]) end
    end
    return {c, global_ppm(), ''}
  end
end
return {0, before, blocked}
"""
    + "end\n"
)
_RESERVE = RESERVE_FN + "return budget_reserve(KEYS, ARGV)\n"

SETTLE_FN = (
    "local function budget_settle(KEYS, ARGV)\n"
    + """
local usd = tonumber(ARGV[1]); local tok = tonumber(ARGV[2])
for i = 1, #KEYS do
  local amount = usd
  if ARGV[2 + i] == 't' then amount = tok end
  if amount ~= 0 then redis.call('INCRBY', KEYS[i], amount) end
end
local f = 0
for i = 1, 2 do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  local g = math.floor(used * 1000000 / tonumber(ARGV[2 + #KEYS + i]))
  if g > f then f = g end
end
return f
"""
    + "end\n"
)
_SETTLE = SETTLE_FN + "return budget_settle(KEYS, ARGV)\n"


@dataclass(frozen=True, slots=True)
class Limits:
    run_tokens: int
    run_micro_usd: int
    customer_daily_micro_usd: int
    daily_micro_usd: int
    monthly_micro_usd: int
    downgrade_fraction: float


@dataclass(frozen=True, slots=True)
class Candidate:
    micro_usd: int
    tokens: int
    large: bool  # skipped once global spend passes the downgrade fraction


@dataclass(frozen=True, slots=True)
class Reservation:
    index: int  # which candidate fitted (0-based)
    micro_usd: int
    tokens: int
    keys: tuple[str, ...]
    kinds: tuple[str, ...]
    global_limits: tuple[int, int]
    global_fraction: float  # of the day/month budget now committed (incl. this reservation)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, to settle from another process later (a batch's reservation)."""
        return {
            "index": self.index,
            "micro_usd": self.micro_usd,
            "tokens": self.tokens,
            "keys": list(self.keys),
            "kinds": list(self.kinds),
            "global_limits": list(self.global_limits),
            "global_fraction": self.global_fraction,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reservation:
        day, month = d["global_limits"]
        return cls(
            index=int(d["index"]),
            micro_usd=int(d["micro_usd"]),
            tokens=int(d["tokens"]),
            keys=tuple(d["keys"]),
            kinds=tuple(d["kinds"]),
            global_limits=(int(day), int(month)),
            global_fraction=float(d["global_fraction"]),
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str  # run_usd, run_tokens, customer_day, global_day, global_month, global_downgrade
    global_fraction: float


class Budgets:
    """Atomic reservations against run, customer/day and global day/month budgets."""

    def __init__(self, client: redis.Redis, limits: Limits) -> None:
        self.limits = limits
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def _scopes(
        self, *, run_id: object, customer_id: object, now: dt.datetime
    ) -> list[tuple[str, str, int, int, str]]:
        day, month = now.strftime("%Y%m%d"), now.strftime("%Y%m")
        lim = self.limits
        scopes = [
            (f"{_PREFIX}:day:{day}", "u", lim.daily_micro_usd, 3 * 86400, "global_day"),
            (f"{_PREFIX}:month:{month}", "u", lim.monthly_micro_usd, 40 * 86400, "global_month"),
        ]
        if customer_id is not None:
            key = f"{_PREFIX}:customer:{customer_id}:{day}"
            scopes.append((key, "u", lim.customer_daily_micro_usd, 2 * 86400, "customer_day"))
        if run_id is not None:
            scopes.append(
                (f"{_PREFIX}:run:{run_id}:usd", "u", lim.run_micro_usd, 7 * 86400, "run_usd")
            )
            scopes.append(
                (f"{_PREFIX}:run:{run_id}:tokens", "t", lim.run_tokens, 7 * 86400, "run_tokens")
            )
        return scopes

    def reserve(
        self,
        candidates: Sequence[Candidate],
        *,
        run_id: object = None,
        customer_id: object = None,
        now: dt.datetime | None = None,
    ) -> Reservation | Refusal:
        """Reserve the first candidate that fits every applicable budget, or refuse."""
        keys, args, scopes = self.reserve_args(
            candidates, run_id=run_id, customer_id=customer_id, now=now
        )
        return self.reserve_result(self._reserve(keys=keys, args=args), candidates, scopes)

    def reserve_args(
        self,
        candidates: Sequence[Candidate],
        *,
        run_id: object,
        customer_id: object,
        now: dt.datetime | None = None,
    ) -> tuple[list[str], list[str | int | float], list[tuple[str, str, int, int, str]]]:
        """KEYS and ARGV of the reserve script (also run inside ledgerly.llm.guards' script)."""
        scopes = self._scopes(
            run_id=run_id, customer_id=customer_id, now=now or dt.datetime.now(dt.UTC)
        )
        args: list[str | int | float] = []
        for _key, kind, limit, ttl, name in scopes:
            args += [kind, limit, ttl, name]
        args += [int(self.limits.downgrade_fraction * PPM), len(candidates)]
        for cand in candidates:
            args += [cand.micro_usd, cand.tokens, "1" if cand.large else "0"]
        return [s[0] for s in scopes], args, scopes

    @staticmethod
    def reserve_result(
        result: list[object],
        candidates: Sequence[Candidate],
        scopes: list[tuple[str, str, int, int, str]],
    ) -> Reservation | Refusal:
        index, ppm, blocked = int(result[0]), int(result[1]), result[2]  # type: ignore[call-overload]
        if index == 0:
            scope = blocked.decode() if isinstance(blocked, bytes) else str(blocked)
            return Refusal(scope=scope, global_fraction=ppm / PPM)
        chosen = candidates[index - 1]
        return Reservation(
            index=index - 1,
            micro_usd=chosen.micro_usd,
            tokens=chosen.tokens,
            keys=tuple(s[0] for s in scopes),
            kinds=tuple(s[1] for s in scopes),
            global_limits=(scopes[0][2], scopes[1][2]),
            global_fraction=ppm / PPM,
        )

    def settle(self, reservation: Reservation, *, micro_usd: int, tokens: int) -> float:
        """Replace the reservation by what the call really cost (0 for a call that failed before
        the provider charged). Returns the global fraction now committed."""
        ppm = self._settle(
            keys=list(reservation.keys),
            args=self.settle_args(reservation, micro_usd=micro_usd, tokens=tokens),
        )
        return int(ppm) / PPM

    @staticmethod
    def settle_args(
        reservation: Reservation, *, micro_usd: int, tokens: int
    ) -> list[str | int | float]:
        return [
            micro_usd - reservation.micro_usd,
            tokens - reservation.tokens,
            *reservation.kinds,
            *reservation.global_limits,
        ]

    def spent(self, *, run_id: object = None, customer_id: object = None) -> dict[str, int]:
        """Committed amounts per scope now (reserved + settled), for dashboards and tests."""
        scopes = self._scopes(run_id=run_id, customer_id=customer_id, now=dt.datetime.now(dt.UTC))
        client = self._reserve.registered_client
        values = client.mget([s[0] for s in scopes])
        return {s[4]: int(v or 0) for s, v in zip(scopes, values, strict=True)}
