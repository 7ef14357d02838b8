"""A circuit breaker per model whose state every worker shares, in Redis.

Why not pybreaker (installed, and it ships a CircuitRedisStorage): its `CircuitBreaker.call`
holds one process-wide lock for the whole guarded call, so a threaded worker would make its model
calls one at a time; it counts consecutive failures, not failures within a window; in half-open
it lets every caller in every process through instead of one probe; and its Redis storage moves
state with separate GET/INCR/SET round trips that two workers can interleave. The whole policy
is three short Lua scripts, each atomic:

- closed: calls pass; a failure is added to a sliding window (sorted set); `failures` of them
  within `window` seconds open the breaker for `cooldown` seconds.
- open: calls fail fast (CircuitOpen) until the cool-down ends.
- then exactly one caller, across all workers, gets the probe (a lease holding a random owner
  token); its success closes the breaker, its failure re-opens it for another cool-down. Other
  callers keep failing fast. Only the token's holder can release or settle the lease: a caller
  whose lease expired (the call outlived it, and another caller now probes) cannot end the new
  holder's probe.

A success in the closed state costs no Redis round trip.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import redis
from django.conf import settings

_SUFFIX = "llm:cb"  # under the environment's prefix (REDIS_KEY_PREFIX)

# KEYS: state hash, probe lease. ARGV: probe lease ms, the owner token a probe lease would get.
# Returns {verdict, ms until retry}.
ALLOW_FN = (
    "local function breaker_allow(KEYS, ARGV)\n"
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return {'closed', 0} end
if now < open_until then return {'open', open_until - now} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', tonumber(ARGV[1])) then return {'probe', 0} end
return {'open', redis.call('PTTL', KEYS[2])}
"""
    + "end\n"
)
_ALLOW = ALLOW_FN + "return breaker_allow(KEYS, ARGV)\n"

# KEYS: state hash, probe lease, failure window. ARGV: is_probe, failures, window ms, cooldown ms,
# the probe's owner token. A probe whose lease is no longer its own counts as any failure.
_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cooldown = tonumber(ARGV[4])
if ARGV[1] == '1' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('HSET', KEYS[1], 'open_until', now + cooldown, 'opened_at', now)
  redis.call('DEL', KEYS[2])
  return 'reopened'
end
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > 0 then return 'open' end
local window = tonumber(ARGV[3])
redis.call('ZADD', KEYS[3], now, t[1] .. t[2] .. ':' .. redis.call('INCR', KEYS[3] .. ':seq'))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
redis.call('PEXPIRE', KEYS[3], window)
redis.call('PEXPIRE', KEYS[3] .. ':seq', window)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'open_until', now + cooldown, 'opened_at', now)
  redis.call('DEL', KEYS[3])
  return 'opened'
end
return 'counted'
"""

# KEYS: state hash, probe lease, failure window. ARGV: the probe's owner token. Only the lease
# holder's success changes anything.
_PROBE_SUCCESS = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'not_holder' end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 'closed'
"""

# KEYS: probe lease. ARGV: owner token. Deletes the lease only if it is still the token's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Verdict(StrEnum):
    CLOSED = "closed"  # call normally
    PROBE = "probe"  # this caller is the single probe after the cool-down
    OPEN = "open"  # fail fast


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    retry_in: float  # seconds until the breaker may let a call through (when open)
    token: str = ""  # the probe lease's owner token (PROBE only): report and release with it


class CircuitBreaker:
    def __init__(
        self,
        client: redis.Redis,
        *,
        failures: int,
        window_seconds: float,
        cooldown_seconds: float,
        probe_lease_seconds: float,
        prefix: str | None = None,
    ) -> None:
        self.prefix = f"{settings.REDIS_KEY_PREFIX if prefix is None else prefix}:{_SUFFIX}"
        self.failures = failures
        self.window_ms = int(window_seconds * 1000)
        self.cooldown_ms = int(cooldown_seconds * 1000)
        self.probe_lease_ms = max(1, int(probe_lease_seconds * 1000))
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_FAILURE)
        self._probe_success = client.register_script(_PROBE_SUCCESS)
        self._release = client.register_script(_RELEASE)

    def keys(self, model: str) -> list[str]:
        base = f"{self.prefix}:{{{model}}}"  # hash tag: one slot per model
        return [f"{base}:state", f"{base}:probe", f"{base}:failures"]

    @staticmethod
    def new_token() -> str:
        return uuid.uuid4().hex

    def admit(self, model: str) -> Admission:
        token = self.new_token()
        verdict, wait_ms = self._allow(keys=self.keys(model)[:2], args=[self.probe_lease_ms, token])
        return self.admission(verdict, wait_ms, token)

    @staticmethod
    def admission(verdict: bytes, wait_ms: int, token: str) -> Admission:
        """The allow script's answer; `token` is what it was offered as the lease's owner."""
        kind = Verdict(verdict.decode())
        return Admission(kind, max(0, int(wait_ms)) / 1000, token if kind is Verdict.PROBE else "")

    def record_failure(self, model: str, *, probe: bool, token: str = "") -> str:
        """Count a failed call (after the SDK's retries); returns what happened to the breaker.
        A probe's failure (`token`: its admission's) reopens the breaker only while the lease is
        still its own; otherwise it counts like any failure."""
        result = self._failure(
            keys=self.keys(model),
            args=["1" if probe else "0", self.failures, self.window_ms, self.cooldown_ms, token],
        )
        return result.decode()

    def record_success(self, model: str, *, probe: bool, token: str = "") -> str:
        """A call succeeded; a probe's success (`token`: its admission's) closes the breaker if
        the lease is still its own. Returns 'closed', 'not_holder' or 'counted' (not a probe:
        nothing to do)."""
        if not probe:
            return "counted"
        return self._probe_success(keys=self.keys(model), args=[token]).decode()

    def release_probe(self, model: str, token: str) -> bool:
        """Give the probe lease back unused (the call was not made, or failed for reasons that
        say nothing about the model's health), so another caller can probe at once. Only the
        holder's token releases it; returns whether it did."""
        return bool(self._release(keys=[self.keys(model)[1]], args=[token]))

    def state(self, model: str) -> str:
        """'closed' or 'open' as the shared state says now (for dashboards and tests)."""
        client = self._allow.registered_client
        return "open" if client.hget(self.keys(model)[0], "open_until") else "closed"
