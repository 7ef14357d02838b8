# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""Message Batches through the SDK: create, retrieve, list, cancel, JSONL results."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

from .helpers import LANE_SCHEMA, FakeClock


def _request(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-haiku-5-5",
            "max_tokens": 200,
            "messages": [{"role": "user", "content": text}],
            "output_config": {"format": {"type": "json_schema", "schema": LANE_SCHEMA}},
            **extra,
        },
    }


def test_batch_create_then_results_gives_one_result_per_request(
    client: anthropic.Anthropic,
) -> None:
    batch = client.messages.batches.create(
        requests=[
            _request("refund-1", "I was charged twice, please refund me"),
            _request("faq-1", "How long do refunds take?"),
            _request("bad-1", "hello", temperature=0.5),
        ]
    )

    done = client.messages.batches.retrieve(batch.id)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}

    assert done.processing_status == "ended"
    assert (done.request_counts.succeeded, done.request_counts.errored) == (2, 1)
    assert results["refund-1"].message.content[0].text.startswith('{"lane": "refund"')
    assert results["faq-1"].message.usage.service_tier == "batch"
    assert results["bad-1"].type == "errored"
    assert results["bad-1"].error.error.type == "invalid_request_error"


def test_batch_with_a_delay_is_in_progress_until_the_delay_passes() -> None:
    clock = FakeClock()
    transport = SimulatorTransport(
        SimulatorConfig(batch_delay_s=30, clock=clock, sleep=clock.sleep)
    )
    client = anthropic.Anthropic(api_key="sk-sim", http_client=httpx2.Client(transport=transport))
    batch = client.messages.batches.create(requests=[_request("a", "How do I cancel?")])

    early = client.messages.batches.retrieve(batch.id)
    clock.advance(31)
    late = client.messages.batches.retrieve(batch.id)

    assert (early.processing_status, early.request_counts.processing, early.results_url) == (
        "in_progress",
        1,
        None,
    )
    assert (late.processing_status, late.request_counts.succeeded) == ("ended", 1)
    assert late.results_url.endswith(f"/v1/messages/batches/{batch.id}/results")


def test_canceling_an_unfinished_batch_ends_it_with_canceled_results() -> None:
    clock = FakeClock()
    transport = SimulatorTransport(
        SimulatorConfig(batch_delay_s=30, clock=clock, sleep=clock.sleep)
    )
    client = anthropic.Anthropic(api_key="sk-sim", http_client=httpx2.Client(transport=transport))
    batch = client.messages.batches.create(
        requests=[_request("a", "How do I cancel?"), _request("b", "Refund me")]
    )

    canceling = client.messages.batches.cancel(batch.id)
    ended = client.messages.batches.retrieve(batch.id)

    assert canceling.cancel_initiated_at is not None
    assert (ended.processing_status, ended.request_counts.canceled) == ("ended", 2)
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}


def test_batches_are_listed_newest_first(client: anthropic.Anthropic) -> None:
    ids = [
        client.messages.batches.create(requests=[_request("x", f"question {n}?")]).id
        for n in range(3)
    ]

    listed = [b.id for b in client.messages.batches.list(limit=10)]

    assert listed == ids[::-1]


def test_unknown_batch_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.batches.retrieve("msgbatch_nope")

    assert caught.value.body["error"]["type"] == "not_found_error"
