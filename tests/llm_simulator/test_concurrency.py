# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""One simulator shared by many threads keeps exact counts (faults, rate limits, cache)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx2

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

from .helpers import FakeClock

PARAMS: dict[str, Any] = {
    "model": "claude-haiku-5-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "How do I download an invoice?"}],
}


def _client(transport: SimulatorTransport) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-sim", http_client=httpx2.Client(transport=transport), max_retries=0
    )


def _status(client: anthropic.Anthropic, headers: dict[str, str]) -> int:
    try:
        return client.messages.with_raw_response.create(**PARAMS, extra_headers=headers).status_code
    except anthropic.APIStatusError as exc:
        return exc.status_code


def test_fault_times_counts_attempts_exactly_across_16_threads() -> None:
    transport = SimulatorTransport(SimulatorConfig(latency_median_ms=2, seed=4))
    client = _client(transport)
    headers = {"x-sim-fault": "overloaded", "x-sim-fault-times": "37", "x-sim-fault-key": "race"}

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: _status(client, headers), range(200)))

    assert statuses.count(529) == 37
    assert statuses.count(200) == 163


def test_rate_limit_admits_exactly_the_bucket_under_a_race() -> None:
    clock = FakeClock()  # frozen: no refill while the threads race
    transport = SimulatorTransport(SimulatorConfig(requests_per_minute=50, clock=clock))
    client = _client(transport)

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: _status(client, {}), range(120)))

    assert statuses.count(200) == 50
    assert statuses.count(429) == 70


def test_concurrent_calls_write_the_cache_once_and_all_others_read_it() -> None:
    transport = SimulatorTransport(SimulatorConfig())
    client = _client(transport)
    system = [
        {
            "type": "text",
            "text": "Long static instructions. " * 700,
            "cache_control": {"type": "ephemeral"},
        }
    ]

    def usage(_: int) -> tuple[int, int]:
        message = client.messages.create(**PARAMS, system=system)
        created = message.usage.cache_creation_input_tokens
        read = message.usage.cache_read_input_tokens
        return int(created or 0), int(read or 0)

    with ThreadPoolExecutor(8) as pool:
        usages = list(pool.map(usage, range(40)))
    after = usage(0)

    writes = [u for u in usages if u[0] > 0]
    assert len(writes) == 1  # the lookup-and-write is atomic: one request creates the entry
    assert all(read == writes[0][0] for created, read in usages if created == 0)
    assert after == (0, writes[0][0])
