"""The gateway's wrapper transport, between the SDK and the real (or simulator) transport.

The SDK does the retrying (exponential backoff with jitter on 408/409/429/5xx and connection
errors; see anthropic/_base_client.py `_should_retry` and `_calculate_retry_timeout`), but it
sleeps whatever `retry-after` says and retries a 429 that says the spend limit is reached. It
obeys an `x-should-retry` response header before anything else, so this transport edits that
header on the way back:

- a 429/529/5xx whose retry-after exceeds the cap (or the time left before the call's deadline)
  becomes `x-should-retry: false` plus `x-ledgerly-defer: <seconds>`: the SDK gives up at once
  and the gateway raises Defer(seconds);
- a 429 whose message says the spend limit is reached becomes `x-should-retry: false` plus
  `x-ledgerly-spend-limit: 1`;
- an attempt that would start after the call's deadline is not sent: a synthetic 504 with
  `x-should-retry: false` and `x-ledgerly-deadline: exceeded` comes back instead; one that
  starts in time has its timeouts cut to the time left;
- an attempt's body ends by its read timeout after the attempt began (and by the deadline): the
  SDK's timeouts are per read, so a body whose chunks kept coming, each within the timeout (a
  model streaming slowly), ran on as long as the model wrote, past the budget reservation's
  hold (LLM_RESERVATION_HOLD_SECONDS), and the sweep gave its room back while it ran.

It also reads `anthropic-ratelimit-*` headers and, when the provider reports less than a fifth
of a limit remaining, lowers the shared limiter's bucket (one Redis call, only then).

The deadline travels as a request header (`x-ledgerly-deadline`) that is removed here, before the
request leaves the process. Its value is a time.monotonic() value of this process, derived by the
gateway at call time from the call's wall-clock deadline (CallContext.deadline_at, which may come
from a checkpoint another worker wrote): the monotonic clock is immune to clock steps during the
call, the wall clock is what survives between processes.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from collections.abc import Callable, Iterator

import httpx2

DEADLINE_HEADER = "x-ledgerly-deadline"
DEFER_HEADER = "x-ledgerly-defer"
SPEND_LIMIT_HEADER = "x-ledgerly-spend-limit"
DEADLINE_EXCEEDED_HEADER = "x-ledgerly-deadline"
LOW_REMAINING = 0.2

# (model, {kind: (remaining, seconds until full) or None})
RateObserver = Callable[[str, dict[str, tuple[int, float] | None]], None]


def retry_after_seconds(headers: httpx2.Headers) -> float | None:
    """The wait a response asks for, read the way the SDK reads it (retry-after-ms first)."""
    try:
        return float(headers["retry-after-ms"]) / 1000
    except (KeyError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else float(email.utils.mktime_tz(parsed) - time.time())


def _seconds_until(stamp: str | None) -> float:
    """Seconds from now until an RFC 3339 time (0 if absent, unparseable or past)."""
    if not stamp:
        return 0.0
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class GatewayTransport(httpx2.BaseTransport):
    def __init__(
        self,
        inner: httpx2.BaseTransport,
        *,
        retry_after_cap: float,
        on_rate_headers: RateObserver | None = None,
    ) -> None:
        self.inner = inner
        self.retry_after_cap = retry_after_cap
        self.on_rate_headers = on_rate_headers

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        began = time.monotonic()
        deadline = None
        if DEADLINE_HEADER in request.headers:
            deadline = float(request.headers[DEADLINE_HEADER])
            del request.headers[DEADLINE_HEADER]
            left = deadline - time.monotonic()
            if left <= 0:
                return httpx2.Response(
                    504,
                    headers={
                        "x-should-retry": "false",
                        DEADLINE_EXCEEDED_HEADER: "exceeded",
                        "content-type": "application/json",
                    },
                    json={
                        "type": "error",
                        "error": {"type": "deadline_exceeded", "message": "deadline passed"},
                    },
                    request=request,
                )
            timeouts = request.extensions.get("timeout")
            if isinstance(timeouts, dict):
                request.extensions["timeout"] = {
                    k: left if v is None else min(v, left) for k, v in timeouts.items()
                }

        response = self.inner.handle_request(request)
        timeouts = request.extensions.get("timeout")
        read = timeouts.get("read") if isinstance(timeouts, dict) else None
        if read is not None:
            end = began + float(read)
            response.stream = _EndsBy(
                response.stream,  # type: ignore[arg-type]
                request=request,
                end=end if deadline is None else min(end, deadline),
            )
        status = response.status_code
        if self.on_rate_headers is not None and status < 500:
            self._observe(request, response)
        if status != 429 and status < 500:
            return response

        if status == 429:
            body = response.read()
            if b"spend limit" in body.lower():
                response.headers["x-should-retry"] = "false"
                response.headers[SPEND_LIMIT_HEADER] = "1"
                return response
        wait = retry_after_seconds(response.headers)
        if wait is None:
            return response
        time_left = None if deadline is None else deadline - time.monotonic()
        if wait > self.retry_after_cap or (time_left is not None and wait > time_left):
            response.headers["x-should-retry"] = "false"
            response.headers[DEFER_HEADER] = f"{wait:.3f}"
        return response

    def _observe(self, request: httpx2.Request, response: httpx2.Response) -> None:
        headers = response.headers
        remaining: dict[str, tuple[int, float] | None] = {}
        low = False
        for kind in ("requests", "input-tokens", "output-tokens"):
            try:
                left = int(headers[f"anthropic-ratelimit-{kind}-remaining"])
                limit = int(headers[f"anthropic-ratelimit-{kind}-limit"])
            except (KeyError, ValueError):
                remaining[kind] = None
                continue
            if left >= limit * LOW_REMAINING:
                remaining[kind] = None
                continue
            low = True
            remaining[kind] = (
                left,
                _seconds_until(headers.get(f"anthropic-ratelimit-{kind}-reset")),
            )
        if not low:
            return
        try:
            model = str(json.loads(request.content)["model"])
        except (ValueError, KeyError, TypeError):
            return
        self.on_rate_headers(model, remaining)  # type: ignore[misc]

    def close(self) -> None:
        self.inner.close()


class _EndsBy(httpx2.SyncByteStream):
    """A response body that raises ReadTimeout once a chunk arrives past `end` (monotonic)."""

    def __init__(self, inner: httpx2.SyncByteStream, *, request: httpx2.Request, end: float):
        self.inner, self.request, self.end = inner, request, end

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            if time.monotonic() > self.end:
                raise httpx2.ReadTimeout(
                    "the response ran past its time limit", request=self.request
                )
            yield chunk

    def close(self) -> None:
        self.inner.close()
