from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from ledgerly.llm.client import build_client
from ledgerly.llm.conf import config
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from tests.llm.conftest import LOOKUP_TOOL, ROUTE_SCHEMA, user

REQUESTS: dict[str, dict[str, Any]] = {
    "text": {"messages": user("How do I download an invoice as a PDF?")},
    "tool_use": {
        "messages": user("Please look up charge ch_3PqR on my card."),
        "tools": [LOOKUP_TOOL],
    },
    "structured": {
        "messages": user("I was charged twice for my subscription this month."),
        "output_config": {"format": {"type": "json_schema", "schema": ROUTE_SCHEMA}},
    },
}


def fresh_client() -> anthropic.Anthropic:
    # A fresh simulator per call: the same prompt-cache state, so usage is comparable.
    client, _ = build_client(config(), inner=SimulatorTransport(SimulatorConfig()))
    return client


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_streaming_through_the_gateway_transport_assembles_the_same_message(kind):
    params: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "You are Ledgerly's support assistant."}],
        **REQUESTS[kind],
    }

    plain = fresh_client().messages.create(**params)
    with fresh_client().messages.stream(**params) as stream:
        streamed = stream.get_final_message()

    def comparable(message: anthropic.types.Message) -> dict:
        # Message ids are unique per response; everything else must match.
        return {
            k: v for k, v in message.to_dict(mode="json", exclude_none=True).items() if k != "id"
        }

    assert comparable(streamed) == comparable(plain)
    assert streamed.content  # not two empty messages


def test_a_stream_cut_before_message_stop_raises_instead_of_returning_a_partial_message():
    client = fresh_client()
    with (
        pytest.raises((httpx2.RemoteProtocolError, anthropic.APIError)),
        client.messages.stream(
            model="claude-haiku-5-5",
            max_tokens=300,
            messages=user("How do I download an invoice as a PDF?"),
            extra_headers={"x-sim-fault": "truncated_stream"},
        ) as stream,
    ):
        stream.get_final_message()
