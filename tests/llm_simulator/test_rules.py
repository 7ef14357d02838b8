# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""The simulator refuses what the current Messages API refuses, with the API's status codes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import anthropic
import httpx2
import pytest

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

from .helpers import LANE_SCHEMA, lookup_tools

USER = [{"role": "user", "content": "How do refunds work?"}]
BASE: dict[str, Any] = {"model": "claude-sonnet-5-5", "max_tokens": 200, "messages": USER}
OPEN_SCHEMA = {**LANE_SCHEMA, "additionalProperties": True}

BAD_REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "temperature_on_5x": ({"extra_body": {"temperature": 0.2}}, "temperature"),
    "top_p_on_5x": ({"extra_body": {"top_p": 0.9}}, "top_p"),
    "top_k_on_5x": ({"extra_body": {"top_k": 5}}, "top_k"),
    "manual_thinking_on_5x": (
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        "adaptive",
    ),
    "assistant_prefill": (
        {"messages": [*USER, {"role": "assistant", "content": "Refunds"}]},
        "prefill",
    ),
    "forced_tool_on_sonnet_5_5": (
        {"tools": lookup_tools(), "tool_choice": {"type": "tool", "name": "get_customer"}},
        "forced tool use",
    ),
    "any_tool_on_sonnet_5_5": (
        {"tools": lookup_tools(), "tool_choice": {"type": "any"}},
        "forced tool use",
    ),
    "structured_output_with_open_object": (
        {"output_config": {"format": {"type": "json_schema", "schema": OPEN_SCHEMA}}},
        "additionalProperties",
    ),
    "strict_tool_with_open_object": (
        {"tools": [{**lookup_tools()[0], "strict": True}]},
        "additionalProperties",
    ),
    "too_many_cache_breakpoints": (
        {
            "system": [
                {"type": "text", "text": f"part {n}", "cache_control": {"type": "ephemeral"}}
                for n in range(5)
            ]
        },
        "maximum of 4 blocks",
    ),
    "tool_result_without_tool_use": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "{}"}],
                }
            ]
        },
        "tool_use_id",
    ),
    "max_tokens_above_model_limit": ({"max_tokens": 64_001, "timeout": 30}, "maximum allowed"),
    "tampered_thinking_signature": (
        {
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "edited", "signature": "Esforged"},
                        {"type": "text", "text": "Refunds take 5-10 days."},
                    ],
                },
                {"role": "user", "content": "Thanks. And for annual plans?"},
            ]
        },
        "signature",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_request_breaking_an_api_rule_gets_a_400_that_says_why(
    client: anthropic.Anthropic, case: str
) -> None:
    change, phrase = BAD_REQUESTS[case]

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**{**BASE, **change})

    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert phrase in caught.value.body["error"]["message"]


def test_a_400_is_not_retried(client: anthropic.Anthropic, transport: SimulatorTransport) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.with_raw_response.create(**BASE, extra_body={"temperature": 0.5})

    assert caught.value.response.request.headers["x-stainless-retry-count"] == "0"


ALLOWED: dict[str, dict[str, Any]] = {
    "adaptive_thinking": {"thinking": {"type": "adaptive"}},
    "thinking_disabled": {"thinking": {"type": "disabled"}},
    "tool_choice_auto": {"tools": lookup_tools(), "tool_choice": {"type": "auto"}},
    "forced_tool_on_haiku_5_5": {
        "model": "claude-haiku-5-5",
        "tools": lookup_tools(),
        "tool_choice": {"type": "tool", "name": "escalate_to_human"},
    },
    "temperature_on_haiku_4_5": {"model": "claude-haiku-4-5", "extra_body": {"temperature": 0.3}},
    "closed_structured_output": {
        "output_config": {"format": {"type": "json_schema", "schema": LANE_SCHEMA}}
    },
}


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_requests_within_the_rules_succeed(client: anthropic.Anthropic, case: str) -> None:
    message = client.messages.create(**{**BASE, **ALLOWED[case]})

    assert message.stop_reason in ("end_turn", "tool_use")
    assert message.content


def test_forced_tool_on_haiku_calls_exactly_that_tool(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**{**BASE, **ALLOWED["forced_tool_on_haiku_5_5"]})

    assert [(b.type, b.name) for b in message.content] == [("tool_use", "escalate_to_human")]
    assert set(message.content[0].input) == {"reason"}


def test_unknown_model_is_404_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(**{**BASE, "model": "claude-sonnet-9"})

    assert caught.value.body["error"]["type"] == "not_found_error"


def _client_on(today: dt.date) -> anthropic.Anthropic:
    transport = SimulatorTransport(SimulatorConfig(today=lambda: today))
    return anthropic.Anthropic(api_key="sk-sim", http_client=httpx2.Client(transport=transport))


@pytest.mark.parametrize("today", [dt.date(2026, 11, 30), dt.date(2027, 1, 5)])
def test_claude_sonnet_4_5_is_not_found_from_its_retirement_date(today: dt.date) -> None:
    with (
        pytest.raises(anthropic.NotFoundError) as caught,
        pytest.warns(DeprecationWarning, match="end-of-life"),
    ):
        _client_on(today).messages.create(**{**BASE, "model": "claude-sonnet-4-5"})

    assert "retired on 2026-11-30" in caught.value.body["error"]["message"]


def test_claude_sonnet_4_5_still_answers_the_day_before_retirement() -> None:
    with pytest.warns(DeprecationWarning, match="end-of-life"):
        message = _client_on(dt.date(2026, 11, 29)).messages.create(
            **{**BASE, "model": "claude-sonnet-4-5"}
        )

    assert message.model == "claude-sonnet-4-5"
