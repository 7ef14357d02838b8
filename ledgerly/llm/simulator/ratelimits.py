"""Per-model-family rate limits as continuously refilled token buckets, like the API's.

Each family (haiku, sonnet) has three buckets: requests, input tokens and output tokens per
minute. A request that does not fit gets a 429 `rate_limit_error` with `retry-after`; every
response reports what is left in `anthropic-ratelimit-*` headers.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import SimulatedAPIError


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def seconds_until(self, amount: float) -> float:
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / (self.capacity / 60.0))


KINDS = ("requests", "input-tokens", "output-tokens")


class RateLimiter:
    def __init__(self, limits: dict[str, int], clock: Callable[[], float]) -> None:
        self._limits = limits  # kind -> per-minute capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, family: str, kind: str, now: float) -> _Bucket:
        bucket = self._buckets.get((family, kind))
        if bucket is None:
            capacity = float(self._limits[kind])
            bucket = self._buckets[(family, kind)] = _Bucket(capacity, capacity, now)
        bucket.refill(now)
        return bucket

    def admit(self, family: str, *, input_tokens: int) -> None:
        """Take one request and its input tokens, or raise a 429 saying which limit was hit."""
        now = self._clock()
        with self._lock:
            requests = self._bucket(family, "requests", now)
            tokens_in = self._bucket(family, "input-tokens", now)
            tokens_out = self._bucket(family, "output-tokens", now)
            if requests.level < 1:
                self._refuse("requests", requests.seconds_until(1), family, now)
            if tokens_in.level < min(input_tokens, tokens_in.capacity):
                wait = tokens_in.seconds_until(input_tokens)
                self._refuse("input tokens", wait, family, now)
            if tokens_out.level < 1:
                self._refuse("output tokens", tokens_out.seconds_until(1), family, now)
            requests.level -= 1
            tokens_in.level -= min(input_tokens, tokens_in.level)

    def settle(self, family: str, *, output_tokens: int) -> None:
        now = self._clock()
        with self._lock:
            bucket = self._bucket(family, "output-tokens", now)
            bucket.level = max(0.0, bucket.level - output_tokens)

    def _refuse(self, what: str, wait: float, family: str, now: float) -> None:
        retry_after = max(1, math.ceil(wait))
        headers = self._headers_locked(family, now)
        headers["retry-after"] = str(retry_after)
        raise SimulatedAPIError(
            "rate_limit_error",
            f"This request would exceed the rate limit for your organization of "
            f"{self._limits[what.replace(' ', '-')]:,} {what} per minute "
            f"(model family: {family}). Please reduce the prompt length or the maximum tokens "
            "requested, or try again later.",
            headers=headers,
        )

    def headers(self, family: str) -> dict[str, str]:
        with self._lock:
            return self._headers_locked(family, self._clock())

    def _headers_locked(self, family: str, now: float) -> dict[str, str]:
        wall = dt.datetime.now(dt.UTC)
        headers: dict[str, str] = {}
        for kind in KINDS:
            bucket = self._bucket(family, kind, now)
            full_in = bucket.seconds_until(bucket.capacity)
            reset = (wall + dt.timedelta(seconds=math.ceil(full_in))).replace(microsecond=0)
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(int(bucket.capacity))
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(max(0, math.floor(bucket.level)))
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset.isoformat().replace("+00:00", "Z")
        tokens_in = self._buckets[(family, "input-tokens")]
        tokens_out = self._buckets[(family, "output-tokens")]
        headers["anthropic-ratelimit-tokens-limit"] = str(
            int(tokens_in.capacity + tokens_out.capacity)
        )
        headers["anthropic-ratelimit-tokens-remaining"] = str(
            max(0, math.floor(tokens_in.level + tokens_out.level))
        )
        headers["anthropic-ratelimit-tokens-reset"] = min(
            headers["anthropic-ratelimit-input-tokens-reset"],
            headers["anthropic-ratelimit-output-tokens-reset"],
        )
        return headers
