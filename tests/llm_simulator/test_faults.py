# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""Injected faults reach the SDK as the real API's failures, so its retry code really runs."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import jsonschema
import pytest

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

from .helpers import FakeClock, lookup_tools

PARAMS: dict[str, Any] = {
    "model": "claude-haiku-5-5",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "What payment methods can I use?"}],
}


def test_529_twice_then_success_is_retried_by_the_sdk(client: anthropic.Anthropic) -> None:
    headers = {
        "x-sim-fault": "overloaded",
        "x-sim-fault-times": "2",
        "x-sim-fault-key": "529-then-ok",
        "x-sim-retry-after": "0.01",
    }
    raw = client.messages.with_raw_response.create(**PARAMS, extra_headers=headers)

    assert raw.retries_taken == 2
    assert raw.parse().stop_reason == "end_turn"


def test_sdk_gives_up_on_persistent_529_with_overloaded_error(
    client: anthropic.Anthropic,
) -> None:
    headers = {"x-sim-fault": "overloaded", "x-sim-retry-after": "0.01"}

    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(**PARAMS, extra_headers=headers)

    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert caught.value.response.request.headers["x-stainless-retry-count"] == "3"


def test_rate_limited_429_carries_retry_after_defaulting_to_2_seconds(
    client: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.with_options(max_retries=0).messages.create(
            **PARAMS, extra_headers={"x-sim-fault": "rate_limited"}
        )

    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_retry_after_header_is_what_the_request_asked_for(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.with_options(max_retries=0).messages.create(
            **PARAMS, extra_headers={"x-sim-fault": "rate_limited", "x-sim-retry-after": "90"}
        )

    assert caught.value.response.headers["retry-after"] == "90"


def test_spend_limit_429_says_so_and_is_not_retried(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**PARAMS, extra_headers={"x-sim-fault": "spend_limit"})

    assert "spend limit" in caught.value.body["error"]["message"]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.response.request.headers["x-stainless-retry-count"] == "0"


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("server_error", anthropic.InternalServerError, 500),
        ("bad_request", anthropic.BadRequestError, 400),
    ],
)
def test_status_faults_raise_the_sdk_error_for_that_status(
    client: anthropic.Anthropic, fault: str, error: type[anthropic.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as caught:
        client.with_options(max_retries=0).messages.create(
            **PARAMS, extra_headers={"x-sim-fault": fault}
        )

    assert caught.value.status_code == status


def test_timeout_fault_becomes_the_sdk_timeout_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APITimeoutError):
        client.with_options(max_retries=1).messages.create(
            **PARAMS, extra_headers={"x-sim-fault": "timeout"}
        )


def test_truncated_stream_raises_in_the_sdk(client: anthropic.Anthropic) -> None:
    stream = client.messages.stream(**PARAMS, extra_headers={"x-sim-fault": "truncated_stream"})

    with pytest.raises(httpx2.RemoteProtocolError), stream as events:
        events.get_final_message()


def test_malformed_tool_input_violates_the_tool_schema(client: anthropic.Anthropic) -> None:
    tools = lookup_tools()
    message = client.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=500,
        tools=tools,
        messages=[{"role": "user", "content": "I'm ann@example.com and I was charged twice."}],
        extra_headers={"x-sim-fault": "malformed_tool_input"},
    )
    call = next(b for b in message.content if b.type == "tool_use")
    schema = next(t["input_schema"] for t in tools if t["name"] == call.name)

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(call.input, schema)


def test_injected_faults_hit_the_next_calls_then_stop(
    client: anthropic.Anthropic, transport: SimulatorTransport
) -> None:
    transport.inject("server_error", times=2)

    raw = client.messages.with_raw_response.create(**PARAMS)

    assert raw.retries_taken == 2


def test_fault_rate_setting_injects_faults_at_random_but_reproducibly() -> None:
    def outcomes(seed: int) -> list[int]:
        clock = FakeClock()
        transport = SimulatorTransport(
            SimulatorConfig(fault_rate=0.3, seed=seed, clock=clock, sleep=clock.sleep)
        )
        client = anthropic.Anthropic(
            api_key="sk-sim", http_client=httpx2.Client(transport=transport), max_retries=0
        )
        return [_status(client) for _ in range(60)]

    first, again = outcomes(7), outcomes(7)

    assert first == again
    assert 5 <= sum(status != 200 for status in first) <= 35
    assert {s for s in first if s != 200} <= {429, 500, 529}


def _status(client: anthropic.Anthropic) -> int:
    try:
        return client.messages.with_raw_response.create(**PARAMS).status_code
    except anthropic.APIStatusError as exc:
        return exc.status_code


def test_latency_header_and_lognormal_setting_delay_the_answer() -> None:
    clock = FakeClock()
    transport = SimulatorTransport(
        SimulatorConfig(
            latency_median_ms=1500, latency_sigma=0.5, seed=1, clock=clock, sleep=clock.sleep
        )
    )
    client = anthropic.Anthropic(api_key="sk-sim", http_client=httpx2.Client(transport=transport))
    waits = []
    for _ in range(200):
        before = clock.now
        client.messages.create(**PARAMS)
        waits.append(clock.now - before)
    before = clock.now
    client.messages.create(**PARAMS, extra_headers={"x-sim-latency-ms": "250"})

    waits.sort()
    assert 1.2 < waits[100] < 1.8
    assert waits[190] > 2.5  # the long tail
    assert clock.now - before == pytest.approx(0.25)


def test_unknown_fault_name_is_a_400_naming_the_known_faults(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**PARAMS, extra_headers={"x-sim-fault": "gremlins"})

    assert "overloaded" in caught.value.body["error"]["message"]


def test_requests_beyond_the_per_minute_limit_get_a_real_429_until_the_bucket_refills() -> None:
    clock = FakeClock()
    transport = SimulatorTransport(
        SimulatorConfig(requests_per_minute=3, clock=clock, sleep=clock.sleep)
    )
    client = anthropic.Anthropic(
        api_key="sk-sim", http_client=httpx2.Client(transport=transport), max_retries=0
    )
    remaining = [
        client.messages.with_raw_response.create(**PARAMS).headers[
            "anthropic-ratelimit-requests-remaining"
        ]
        for _ in range(3)
    ]

    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**PARAMS)
    clock.advance(20)  # 3 per minute refills one request every 20 s
    after_refill = client.messages.with_raw_response.create(**PARAMS)

    assert remaining == ["2", "1", "0"]
    assert caught.value.response.headers["retry-after"] == "20"
    assert caught.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert after_refill.status_code == 200
