"""A rate limiter shared by every worker: one token bucket per model family in Redis.

Three buckets per family — requests, input tokens and output tokens per minute — refilled
continuously at limit/60 per second (the provider's own algorithm) and holding at most
`burst_seconds` worth, so traffic is smoothed rather than spent in one burst at the top of a
minute. One Lua script checks and takes from all three atomically, on Redis' clock, so workers on
different machines agree. A request that does not fit is told how long to wait.

The provider's `anthropic-ratelimit-*-remaining` headers lower a bucket when the provider sees
less room than we do (other clients of the same organisation, or limits lower than configured),
so we slow down before a 429 rather than after.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.conf import settings

from ledgerly.llm.conf import RateLimits

_SUFFIX = "llm:rl"  # under the environment's prefix (REDIS_KEY_PREFIX)

# KEYS[1] = bucket hash. ARGV: burst_seconds, then per dimension (r, i, o): limit, amount.
# Returns 0 when taken, else the milliseconds to wait before the same request would fit.
ACQUIRE_FN = (
    "local function limiter_acquire(KEYS, ARGV)\n"
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'ts', 'r', 'i', 'o')
local dims = {'r', 'i', 'o'}
local levels, caps, rates, amounts = {}, {}, {}, {}
local last = tonumber(state[1]) or now
local elapsed = math.max(0, now - last)
local wait = 0
for d = 1, 3 do
  local limit = tonumber(ARGV[2 * d])
  amounts[d] = tonumber(ARGV[2 * d + 1])
  rates[d] = limit / 60000.0
  caps[d] = math.max(1, limit * burst / 60.0)
  local level = tonumber(state[d + 1]) or caps[d]
  level = math.min(caps[d], level + elapsed * rates[d])
  levels[d] = level
  -- a request larger than the whole bucket waits for a full bucket, then overdraws it
  local need = math.min(amounts[d], caps[d])
  if level < need then
    local w = math.ceil((need - level) / rates[d])
    if w > wait then wait = w end
  end
end
if wait == 0 then
  for d = 1, 3 do levels[d] = levels[d] - amounts[d] end
end
redis.call('HSET', KEYS[1], 'ts', now, 'r', levels[1], 'i', levels[2], 'o', levels[3])
redis.call('PEXPIRE', KEYS[1], 120000)
return wait
"""
    + "end\n"
)
_ACQUIRE = ACQUIRE_FN + "return limiter_acquire(KEYS, ARGV)\n"

# Give back (or take more of) token estimates once the real usage is known. ARGV: i, o deltas
# (positive = give back) and their caps.
ADJUST_FN = (
    "local function limiter_adjust(KEYS, ARGV)\n"
    + """
local state = redis.call('HMGET', KEYS[1], 'i', 'o')
for d = 1, 2 do
  local field = (d == 1) and 'i' or 'o'
  local level = tonumber(state[d])
  if level then
    level = math.min(tonumber(ARGV[d + 2]), level + tonumber(ARGV[d]))
    redis.call('HSET', KEYS[1], field, level)
  end
end
return 1
"""
    + "end\n"
)
_ADJUST = ADJUST_FN + "return limiter_adjust(KEYS, ARGV)\n"

# Lower buckets to what the provider says remains. ARGV per dimension (r, i, o): remaining
# ('' = unknown), ms until the provider's bucket is full again, our refill rate per ms. At zero
# remaining the bucket goes into debt until the provider's reset, so nothing is sent before it.
_OBSERVE = """
local state = redis.call('HMGET', KEYS[1], 'r', 'i', 'o')
local dims = {'r', 'i', 'o'}
for d = 1, 3 do
  local remaining = tonumber(ARGV[3 * d - 2])
  local level = tonumber(state[d])
  if remaining and level then
    local target = remaining
    if remaining <= 0 then target = -tonumber(ARGV[3 * d]) * tonumber(ARGV[3 * d - 1]) end
    if target < level then redis.call('HSET', KEYS[1], dims[d], target) end
  end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Permit:
    family: str
    input_tokens: int
    output_tokens: int


class RateLimiter:
    def __init__(
        self, client: redis.Redis, *, burst_seconds: float, prefix: str | None = None
    ) -> None:
        self.prefix = f"{settings.REDIS_KEY_PREFIX if prefix is None else prefix}:{_SUFFIX}"
        self.burst_seconds = burst_seconds
        self._acquire = client.register_script(_ACQUIRE)
        self._adjust = client.register_script(_ADJUST)
        self._observe = client.register_script(_OBSERVE)

    def key(self, family: str) -> str:
        return f"{self.prefix}:{family}"

    def try_acquire(
        self, family: str, limits: RateLimits, *, input_tokens: int, output_tokens: int
    ) -> tuple[Permit | None, float]:
        """Take one request and the token estimates now, or say how many seconds to wait."""
        wait_ms = self._acquire(
            keys=[self.key(family)],
            args=self.acquire_args(limits, input_tokens=input_tokens, output_tokens=output_tokens),
        )
        return self.acquire_result(family, int(wait_ms), input_tokens, output_tokens)

    def acquire_args(
        self, limits: RateLimits, *, input_tokens: int, output_tokens: int
    ) -> list[str | int | float]:
        """ARGV of the acquire script (also run inside ledgerly.llm.guards' script)."""
        return [
            self.burst_seconds,
            limits.rpm,
            1,
            limits.itpm,
            input_tokens,
            limits.otpm,
            output_tokens,
        ]

    @staticmethod
    def acquire_result(
        family: str, wait_ms: int, input_tokens: int, output_tokens: int
    ) -> tuple[Permit | None, float]:
        if wait_ms:
            return None, wait_ms / 1000
        return Permit(family, input_tokens, output_tokens), 0.0

    def settle(
        self, permit: Permit, limits: RateLimits, *, input_tokens: int, output_tokens: int
    ) -> None:
        """Correct the estimates taken by `permit` to the tokens really used."""
        self._adjust(
            keys=[self.key(permit.family)],
            args=self.settle_args(
                permit, limits, input_tokens=input_tokens, output_tokens=output_tokens
            ),
        )

    def settle_args(
        self, permit: Permit, limits: RateLimits, *, input_tokens: int, output_tokens: int
    ) -> list[str | int | float]:
        return [
            permit.input_tokens - input_tokens,
            permit.output_tokens - output_tokens,
            max(1, limits.itpm * self.burst_seconds / 60),
            max(1, limits.otpm * self.burst_seconds / 60),
        ]

    def observe(
        self,
        family: str,
        limits: RateLimits,
        remaining: dict[str, tuple[int, float] | None],
    ) -> None:
        """Lower this family's buckets to the provider's reported remaining capacity.

        `remaining` maps "requests", "input-tokens", "output-tokens" to (remaining, seconds
        until the provider's bucket is full again), or None when not reported."""
        args: list[str | int | float] = []
        for kind, limit in (
            ("requests", limits.rpm),
            ("input-tokens", limits.itpm),
            ("output-tokens", limits.otpm),
        ):
            seen = remaining.get(kind)
            args += ["", 0, 0] if seen is None else [seen[0], seen[1] * 1000, limit / 60000]
        self._observe(keys=[self.key(family)], args=args)
