"""Budgets that cannot overshoot under concurrency.

Before a call the gateway reserves its worst case (estimated prompt + max output at the model's
price) against every budget that applies — run tokens and dollars, customer per day, global per
day and per month — in one Lua script, so check-and-add is atomic across all workers. After the
call it settles the reservation to the real cost. Amounts are integer micro-dollars.

The script is offered candidates in order (the requested model, then cheaper ones) and takes the
first that fits everywhere; a "large" candidate is skipped once global spend reaches the
downgrade fraction. If none fits, nothing is reserved and the first blocking scope is named.

Every reservation is also written down as open, with an expiry (`hold_seconds`, longer than
any call can take: LLM_RESERVATION_HOLD_SECONDS). Settling or keeping it (`keep`, for a call the
provider may have charged) closes it. A worker killed between reserve and settle leaves its
reservation open; `sweep()` (run by beat: ledgerly.llm.tasks.sweep_reservations) gives back each
one past its expiry, so a dead worker's worst case stops blocking the budget. A settle that
arrives after its reservation was swept adds the real cost instead of correcting the reservation.
Within the hold a dead worker's reservation stays counted: budgets err on refusing.

Keys start with the environment's prefix (REDIS_KEY_PREFIX), so environments sharing a Redis
never count each other's spend. The open-reservation records are read by the sweep from inside
its script (keys not named in KEYS, all in the `{budget}` slot): one Redis, or a Cluster slot.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

PPM = 1_000_000
# Under the environment's prefix; `{budget}` is one hash slot, so the multi-key scripts also run
# on Redis Cluster.
_SUFFIX = "llm:{budget}"

RESERVE_FN = (
    "local function budget_reserve(KEYS, ARGV)\n"
    + """
-- KEYS: the scopes' counters, then the open-reservation hash and its expiry index (sorted set).
-- ARGV: per scope kind, limit, ttl, name; downgrade ppm; candidates (usd, tokens, large) each;
-- the reservation id ('' = not written down) and how long it is held (ms).
local n = #KEYS - 2
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
    local rkeys, rkinds = {}, {}
    for i = 1, n do
      local amount = usd
      if kinds[i] == 't' then amount = tok end
      used[i] = redis.call('INCRBY', KEYS[i], amount)
      if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttls[i]) end
      rkeys[i] = KEYS[i]; rkinds[i] = kinds[i]
    end
    local rid = ARGV[a + 3 * (ncand - c)]
    if rid ~= '' then
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      local hold = tonumber(ARGV[a + 3 * (ncand - c) + 1])
      redis.call('HSET', KEYS[n + 1], rid,
        cjson.encode({usd = usd, tok = tok, keys = rkeys, kinds = rkinds}))
      redis.call('ZADD', KEYS[n + 2], now + hold, rid)
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
-- KEYS: the reservation's counters, the open-reservation hash, its expiry index.
-- ARGV: real usd, real tokens, reserved usd, reserved tokens, reservation id, kinds..., the
-- day and month limits.
local n = #KEYS - 2
local usd = tonumber(ARGV[1]); local tok = tonumber(ARGV[2])
local rusd = tonumber(ARGV[3]); local rtok = tonumber(ARGV[4]); local rid = ARGV[5]
local open = 1
if rid ~= '' then
  open = redis.call('HDEL', KEYS[n + 1], rid)
  redis.call('ZREM', KEYS[n + 2], rid)
end
for i = 1, n do
  local amount = usd; local held = rusd
  if ARGV[5 + i] == 't' then amount = tok; held = rtok end
  if open == 1 then
    amount = amount - held
  elseif redis.call('EXISTS', KEYS[i]) == 0 then
    amount = 0  -- swept, and the period's counter is gone with its period
  end
  if amount ~= 0 then redis.call('INCRBY', KEYS[i], amount) end
end
local f = 0
for i = 1, 2 do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  local g = math.floor(used * 1000000 / tonumber(ARGV[5 + n + i]))
  if g > f then f = g end
end
return f
"""
    + "end\n"
)
_SETTLE = SETTLE_FN + "return budget_settle(KEYS, ARGV)\n"

# KEYS: the open-reservation hash, its expiry index. ARGV: now in ms ('' = Redis' clock), at most
# how many to release. Gives back every open reservation past its expiry; returns {how many,
# their micro-dollars}.
_SWEEP = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local released, usd = 0, 0
for _, rid in ipairs(ids) do
  redis.call('ZREM', KEYS[2], rid)
  local raw = redis.call('HGET', KEYS[1], rid)
  if raw then
    redis.call('HDEL', KEYS[1], rid)
    local r = cjson.decode(raw)
    for i, key in ipairs(r.keys) do
      local amount = r.usd
      if r.kinds[i] == 't' then amount = r.tok end
      if redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, amount) end
    end
    released = released + 1; usd = usd + r.usd
  end
end
return {released, usd}
"""


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
    rid: str = ""  # its open record ('' for one made before reservations expired)

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
            "rid": self.rid,
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
            rid=str(d.get("rid", "")),
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str  # run_usd, run_tokens, customer_day, global_day, global_month, global_downgrade
    global_fraction: float


@dataclass(frozen=True, slots=True)
class Swept:
    released: int  # open reservations past their expiry given back
    micro_usd: int  # what they held


class Budgets:
    """Atomic reservations against run, customer/day and global day/month budgets.

    `prefix` defaults to REDIS_KEY_PREFIX and `hold_seconds` (how long a reservation may stay
    open before the sweep gives it back) to LLM_RESERVATION_HOLD_SECONDS."""

    def __init__(
        self,
        client: redis.Redis,
        limits: Limits,
        *,
        prefix: str | None = None,
        hold_seconds: float | None = None,
    ) -> None:
        self.limits = limits
        self.prefix = f"{settings.REDIS_KEY_PREFIX if prefix is None else prefix}:{_SUFFIX}"
        self.hold_seconds = (
            settings.LLM_RESERVATION_HOLD_SECONDS if hold_seconds is None else hold_seconds
        )
        self.open_keys = (f"{self.prefix}:open", f"{self.prefix}:open:expiry")
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._sweep = client.register_script(_SWEEP)

    def _scopes(
        self, *, run_id: object, customer_id: object, now: dt.datetime
    ) -> list[tuple[str, str, int, int, str]]:
        day, month = now.strftime("%Y%m%d"), now.strftime("%Y%m")
        lim = self.limits
        base = self.prefix
        scopes = [
            (f"{base}:day:{day}", "u", lim.daily_micro_usd, 3 * 86400, "global_day"),
            (f"{base}:month:{month}", "u", lim.monthly_micro_usd, 40 * 86400, "global_month"),
        ]
        if customer_id is not None:
            key = f"{self.prefix}:customer:{customer_id}:{day}"
            scopes.append((key, "u", lim.customer_daily_micro_usd, 2 * 86400, "customer_day"))
        if run_id is not None:
            scopes.append(
                (f"{self.prefix}:run:{run_id}:usd", "u", lim.run_micro_usd, 7 * 86400, "run_usd")
            )
            scopes.append(
                (f"{self.prefix}:run:{run_id}:tokens", "t", lim.run_tokens, 7 * 86400, "run_tokens")
            )
        return scopes

    def reserve(
        self,
        candidates: Sequence[Candidate],
        *,
        run_id: object = None,
        customer_id: object = None,
        now: dt.datetime | None = None,
        hold_seconds: float | None = None,
    ) -> Reservation | Refusal:
        """Reserve the first candidate that fits every applicable budget, or refuse. The
        reservation stays open until settled or kept, at most `hold_seconds` (default: the
        budgets') before the sweep gives it back."""
        keys, args, scopes = self.reserve_args(
            candidates, run_id=run_id, customer_id=customer_id, now=now, hold_seconds=hold_seconds
        )
        return self.reserve_result(self._reserve(keys=keys, args=args), candidates, scopes, args)

    def reserve_args(
        self,
        candidates: Sequence[Candidate],
        *,
        run_id: object,
        customer_id: object,
        now: dt.datetime | None = None,
        hold_seconds: float | None = None,
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
        hold = self.hold_seconds if hold_seconds is None else hold_seconds
        args += [uuid.uuid4().hex, max(1, int(hold * 1000))]
        return [s[0] for s in scopes] + list(self.open_keys), args, scopes

    @staticmethod
    def reserve_result(
        result: list[object],
        candidates: Sequence[Candidate],
        scopes: list[tuple[str, str, int, int, str]],
        args: Sequence[str | int | float],
    ) -> Reservation | Refusal:
        """The reserve script's answer as a Reservation or Refusal (`args`: its ARGV)."""
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
            rid=str(args[-2]),
        )

    def settle(self, reservation: Reservation, *, micro_usd: int, tokens: int) -> float:
        """Replace the reservation by what the call really cost (0 for a call that failed before
        the provider charged). Returns the global fraction now committed."""
        ppm = self._settle(
            keys=self.settle_keys(reservation),
            args=self.settle_args(reservation, micro_usd=micro_usd, tokens=tokens),
        )
        return int(ppm) / PPM

    def settle_keys(self, reservation: Reservation) -> list[str]:
        """KEYS of the settle script (also run inside ledgerly.llm.guards' script)."""
        return [*reservation.keys, *self.open_keys]

    @staticmethod
    def settle_args(
        reservation: Reservation, *, micro_usd: int, tokens: int
    ) -> list[str | int | float]:
        return [
            micro_usd,
            tokens,
            reservation.micro_usd,
            reservation.tokens,
            reservation.rid,
            *reservation.kinds,
            *reservation.global_limits,
        ]

    def keep(self, reservation: Reservation) -> None:
        """The provider may have charged an unknown amount: the worst case stays counted for
        good (the reservation is closed, so the sweep never gives it back)."""
        if reservation.rid:
            pipe = self._client.pipeline(transaction=True)
            pipe.hdel(self.open_keys[0], reservation.rid)
            pipe.zrem(self.open_keys[1], reservation.rid)
            pipe.execute()

    def sweep(self, *, now: float | None = None, limit: int = 1000) -> Swept:
        """Give back every open reservation past its expiry (its worker died between reserve
        and settle), at most `limit` per call. `now` is a Unix time (default: Redis' clock)."""
        released, micro_usd = self._sweep(
            keys=list(self.open_keys), args=["" if now is None else int(now * 1000), limit]
        )
        return Swept(released=int(released), micro_usd=int(micro_usd))

    def open_reservations(self) -> int:
        """How many reservations are open now (for dashboards and tests)."""
        return int(self._client.hlen(self.open_keys[0]))  # type: ignore[arg-type]

    def spent(self, *, run_id: object = None, customer_id: object = None) -> dict[str, int]:
        """Committed amounts per scope now (reserved + settled), for dashboards and tests."""
        scopes = self._scopes(run_id=run_id, customer_id=customer_id, now=dt.datetime.now(dt.UTC))
        client = self._reserve.registered_client
        values = client.mget([s[0] for s in scopes])
        return {s[4]: int(v or 0) for s, v in zip(scopes, values, strict=True)}
