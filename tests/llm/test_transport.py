from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from ledgerly.llm.transport import (
    DEADLINE_HEADER,
    DEFER_HEADER,
    SPEND_LIMIT_HEADER,
    GatewayTransport,
)


class Recorder(httpx2.BaseTransport):
    """Answers every request with `status`/`headers`/`body` and keeps what it was sent."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None, body: Any = None):
        self.status, self.headers, self.body = status, headers or {}, body or {"ok": True}
        self.sent: list[httpx2.Request] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent.append(request)
        return httpx2.Response(self.status, headers=self.headers, json=self.body, request=request)


def send(transport: GatewayTransport, headers: dict[str, str] | None = None) -> httpx2.Response:
    with httpx2.Client(transport=transport, timeout=60) as client:
        return client.post(
            "https://api.anthropic.com/v1/messages",
            json={"model": "claude-haiku-5-5"},
            headers=headers or {},
        )


def test_the_deadline_header_never_leaves_the_process_and_cuts_the_timeouts():
    inner = Recorder()
    deadline = time.monotonic() + 5

    send(GatewayTransport(inner, retry_after_cap=10), {DEADLINE_HEADER: repr(deadline)})

    sent = inner.sent[0]
    assert DEADLINE_HEADER not in sent.headers
    assert all(0 < v <= 5 for v in sent.extensions["timeout"].values())


def test_an_attempt_after_the_deadline_is_not_sent_and_not_retried():
    inner = Recorder()

    response = send(
        GatewayTransport(inner, retry_after_cap=10), {DEADLINE_HEADER: repr(time.monotonic() - 1)}
    )

    assert inner.sent == []
    assert (response.status_code, response.headers["x-should-retry"]) == (504, "false")


@pytest.mark.parametrize(
    ("status", "retry_after", "should_retry", "defer"),
    [
        (429, "30", "false", "30.000"),  # over the cap: defer
        (529, "30", "false", "30.000"),
        (429, "3", None, None),  # under the cap: the SDK waits and retries
        (503, "3", None, None),
    ],
)
def test_retry_after_over_the_cap_turns_into_a_defer(status, retry_after, should_retry, defer):
    inner = Recorder(status, {"retry-after": retry_after}, {"type": "error"})

    response = send(GatewayTransport(inner, retry_after_cap=10))

    assert response.headers.get("x-should-retry") == should_retry
    assert response.headers.get(DEFER_HEADER) == defer


def test_retry_after_beyond_the_time_left_defers_too():
    inner = Recorder(429, {"retry-after": "3"}, {"type": "error"})

    response = send(
        GatewayTransport(inner, retry_after_cap=10), {DEADLINE_HEADER: repr(time.monotonic() + 1)}
    )

    assert response.headers[DEFER_HEADER] == "3.000"


def test_a_spend_limit_429_is_never_retried():
    body = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Workspace spend limit reached"},
    }
    inner = Recorder(429, {"retry-after": "1", "x-should-retry": "true"}, body)

    response = send(GatewayTransport(inner, retry_after_cap=10))

    assert response.headers["x-should-retry"] == "false"
    assert response.headers[SPEND_LIMIT_HEADER] == "1"


@pytest.mark.parametrize(
    ("remaining", "reported"),
    [("999", []), ("10", [("claude-haiku-5-5", (10, 0.0))])],
)
def test_low_provider_rate_limit_headers_are_reported(remaining, reported):
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": remaining,
    }
    seen: list[tuple[str, object]] = []
    transport = GatewayTransport(
        Recorder(200, headers),
        retry_after_cap=10,
        on_rate_headers=lambda model, left: seen.append((model, left["requests"])),
    )

    send(transport)

    assert seen == reported
