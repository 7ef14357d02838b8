# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""The real anthropic SDK works unmodified over the simulator: shapes, streams, headers."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx2
import pytest

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

from .helpers import LANE_SCHEMA, REFUND_DOCS, lookup_tools, tool_result

REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {
        "model": "claude-haiku-5-5",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Hello, I have a question about billing."}],
    },
    "faq_with_documents": {
        "model": "claude-haiku-5-5",
        "max_tokens": 400,
        "system": [
            {"type": "text", "text": "Answer from the passages."},
            {"type": "text", "text": REFUND_DOCS},
        ],
        "messages": [{"role": "user", "content": "How long do refunds take to appear?"}],
    },
    "structured_output": {
        "model": "claude-haiku-5-5",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "I was charged twice, refund me please"}],
        "output_config": {"format": {"type": "json_schema", "schema": LANE_SCHEMA}},
    },
    "tool_use_with_thinking": {
        "model": "claude-sonnet-5-5",
        "max_tokens": 1000,
        "tools": lookup_tools(),
        "thinking": {"type": "adaptive"},
        "messages": [{"role": "user", "content": "I'm ann@example.com, I was charged twice."}],
    },
}


def _blocks(message: Any) -> list[dict[str, Any]]:
    # Streamed text blocks are ParsedTextBlock (with parsed_output); compare the wire shape.
    return [
        {k: v for k, v in block.to_dict().items() if k != "parsed_output"}
        for block in message.content
    ]


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_streamed_message_assembles_the_same_content_as_the_json_call(
    client: anthropic.Anthropic, name: str
) -> None:
    params = REQUESTS[name]
    plain = client.messages.create(**params)
    with client.messages.stream(**params) as stream:
        streamed = stream.get_final_message()

    assert _blocks(streamed) == _blocks(plain)
    assert streamed.stop_reason == plain.stop_reason
    assert streamed.usage.output_tokens == plain.usage.output_tokens
    assert streamed.usage.input_tokens == plain.usage.input_tokens
    assert streamed.model == plain.model == params["model"]


def test_stream_events_come_in_the_api_order(client: anthropic.Anthropic) -> None:
    params = REQUESTS["tool_use_with_thinking"]
    with client.messages.create(**params, stream=True) as events:
        kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) for e in events]

    assert kinds[0] == ("message_start", None)
    assert kinds[-2:] == [("message_delta", None), ("message_stop", None)]
    deltas = {delta for _, delta in kinds if delta}
    assert {"thinking_delta", "signature_delta", "input_json_delta"} <= deltas
    assert kinds.count(("content_block_start", None)) == kinds.count(("content_block_stop", None))


def test_thinking_block_comes_first_and_carries_a_signature(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**REQUESTS["tool_use_with_thinking"])

    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[0].signature.startswith("Es")
    assert message.stop_reason == "tool_use"


def test_every_response_says_it_is_the_simulator_with_a_request_id_and_rate_limits(
    client: anthropic.Anthropic,
) -> None:
    raw = client.messages.with_raw_response.create(**REQUESTS["plain"])

    assert raw.headers["x-ledgerly-simulator"] == "1"
    assert raw.headers["request-id"].startswith("req_sim_")
    for kind in ("requests", "input-tokens", "output-tokens"):
        limit = int(raw.headers[f"anthropic-ratelimit-{kind}-limit"])
        remaining = int(raw.headers[f"anthropic-ratelimit-{kind}-remaining"])
        assert 0 <= remaining < limit
        assert raw.headers[f"anthropic-ratelimit-{kind}-reset"].endswith("Z")


def test_error_body_and_headers_match_the_api(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(**{**REQUESTS["plain"], "model": "claude-nonexistent-9"})

    body = caught.value.body
    assert body["type"] == "error"
    assert body["error"] == {"type": "not_found_error", "message": "model: claude-nonexistent-9"}
    assert caught.value.request_id is not None
    assert caught.value.response.headers["x-ledgerly-simulator"] == "1"


def test_usage_counts_the_whole_request_including_tools(client: anthropic.Anthropic) -> None:
    bare = client.messages.create(**{**REQUESTS["plain"], "model": "claude-sonnet-5-5"})
    with_tools = client.messages.create(
        **{**REQUESTS["plain"], "model": "claude-sonnet-5-5", "tools": lookup_tools()}
    )

    assert with_tools.usage.input_tokens > bare.usage.input_tokens + 100
    assert bare.usage.output_tokens > 0


def test_count_tokens_matches_the_input_tokens_of_the_call(client: anthropic.Anthropic) -> None:
    params = REQUESTS["faq_with_documents"]
    counted = client.messages.count_tokens(
        model=params["model"], system=params["system"], messages=params["messages"]
    )
    message = client.messages.create(**params)

    assert counted.input_tokens == message.usage.input_tokens > 50


def test_tool_use_round_trip_uses_the_id_from_the_earlier_result(
    client: anthropic.Anthropic,
) -> None:
    params = {**REQUESTS["tool_use_with_thinking"]}
    first = client.messages.create(**params)
    call = next(b for b in first.content if b.type == "tool_use")
    messages = [
        *params["messages"],
        {"role": "assistant", "content": [b.to_dict() for b in first.content]},
        {
            "role": "user",
            "content": [tool_result(call.id, {"id": 4417, "email": "ann@example.com"})],
        },
    ]

    second = client.messages.create(**{**params, "messages": messages})

    follow_up = next(b for b in second.content if b.type == "tool_use")
    assert (call.name, call.input) == ("get_customer", {"email": "ann@example.com"})
    assert (follow_up.name, follow_up.input) == ("list_charges", {"customer_id": 4417})
    assert follow_up.id != call.id


def test_max_tokens_cuts_the_answer_with_stop_reason_max_tokens(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(**{**REQUESTS["faq_with_documents"], "max_tokens": 5})

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens <= 5


def test_async_client_gets_the_same_answer_concurrently() -> None:
    async def ask_five() -> list[Any]:
        transport = SimulatorTransport(SimulatorConfig(latency_median_ms=50))
        client = anthropic.AsyncAnthropic(
            api_key="sk-sim", http_client=httpx2.AsyncClient(transport=transport)
        )
        params = REQUESTS["faq_with_documents"]
        async with client.messages.stream(**params) as stream:
            streamed = await stream.get_final_message()
        answers = await asyncio.gather(*[client.messages.create(**params) for _ in range(4)])
        return [streamed, *answers]

    messages = asyncio.run(ask_five())

    assert len({m.content[-1].text for m in messages}) == 1
    assert "[refund-policy]" in messages[0].content[-1].text


def test_stop_sequence_ends_the_text_where_it_appears(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        **REQUESTS["faq_with_documents"], stop_sequences=["business days"]
    )

    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "business days"
    assert message.content[-1].text.endswith("5-10 ")
