"""The faults the simulator can inject, and the per-request/programmatic bookkeeping for them."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

FAULTS = (
    "overloaded",  # 529 overloaded_error
    "rate_limited",  # 429 rate_limit_error with retry-after
    "spend_limit",  # 429 whose message says the workspace spend limit is reached (not retryable)
    "server_error",  # 500 api_error
    "timeout",  # the transport raises httpx2.ReadTimeout (the server stalls past the read timeout)
    "truncated_stream",  # SSE stream cut before message_stop (JSON: body cut mid-document)
    "malformed_tool_input",  # a tool_use whose input violates its tool's input_schema
    "bad_request",  # 400 invalid_request_error
)


MAX_REMEMBERED_REQUESTS = 100_000


class FaultBook:
    """Thread-safe state behind `x-sim-fault-times` and `transport.inject()`.

    `x-sim-fault-times: N` counts attempts per `x-sim-fault-key` (the SDK resends the same
    headers on each retry, so the first N attempts fail and the next one succeeds).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._queued: deque[str] = deque()
        self._seen: OrderedDict[str, int] = OrderedDict()

    def hits(self, key: str, times: int) -> bool:
        """Count one attempt under `key`; True while the attempt number is within `times`."""
        with self._lock:
            seen = self._attempts.get(key, 0) + 1
            self._attempts[key] = seen
            return seen <= times

    def attempt(self, key: str) -> int:
        """Count one attempt at the request `key` (random faults); returns 1, 2, ...

        Bounded: a long load test sends millions of distinct requests, and only retries (which
        come within seconds) need their count, so the least recently seen keys are forgotten.
        """
        with self._lock:
            seen = self._seen.pop(key, 0) + 1
            self._seen[key] = seen
            if len(self._seen) > MAX_REMEMBERED_REQUESTS:
                self._seen.popitem(last=False)
            return seen

    def inject(self, fault: str, times: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown simulator fault {fault!r}; known: {FAULTS}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._queued.extend([fault] * times)

    def take_queued(self) -> str | None:
        with self._lock:
            return self._queued.popleft() if self._queued else None

    def clear(self) -> None:
        with self._lock:
            self._attempts.clear()
            self._queued.clear()
            self._seen.clear()
