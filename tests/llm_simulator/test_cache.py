# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""Prompt caching follows Anthropic's rules: breakpoints, minimum length, 5-minute TTL."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from .helpers import FakeClock

# ~1,500 tokens of static instructions: above Sonnet's 1,024 minimum, below Haiku's 2,048.
LONG_PROMPT = "You are Ledgerly's support assistant. Be precise about billing facts. " * 85


def _params(model: str, question: str, prompt: str = LONG_PROMPT) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 200,
        "system": [{"type": "text", "text": prompt, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": question}],
    }


def test_first_call_writes_the_cache_and_the_next_reads_it(client: anthropic.Anthropic) -> None:
    first = client.messages.create(**_params("claude-sonnet-5-5", "How do refunds work?"))
    second = client.messages.create(**_params("claude-sonnet-5-5", "When is VAT charged?"))

    assert first.usage.cache_creation_input_tokens > 1024
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == (
        first.usage.cache_creation_input_tokens
    )


def test_input_tokens_exclude_cache_reads_and_writes(client: anthropic.Anthropic) -> None:
    params = _params("claude-sonnet-5-5", "How do refunds work?")
    total = client.messages.count_tokens(
        model=params["model"], system=params["system"], messages=params["messages"]
    ).input_tokens

    first = client.messages.create(**params)
    second = client.messages.create(**params)

    assert first.usage.input_tokens + first.usage.cache_creation_input_tokens == total
    assert second.usage.input_tokens + second.usage.cache_read_input_tokens == total
    assert 0 < second.usage.input_tokens < 40


def test_prefix_below_the_model_minimum_is_not_cached(client: anthropic.Anthropic) -> None:
    first = client.messages.create(**_params("claude-haiku-5-5", "How do refunds work?"))
    second = client.messages.create(**_params("claude-haiku-5-5", "How do refunds work?"))

    assert (first.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, 0)


@pytest.mark.parametrize(("wait", "read"), [(299.0, True), (301.0, False)])
def test_cache_entry_lives_five_minutes(
    client: anthropic.Anthropic, clock: FakeClock, wait: float, read: bool
) -> None:
    client.messages.create(**_params("claude-sonnet-5-5", "How do refunds work?"))
    clock.advance(wait)

    later = client.messages.create(**_params("claude-sonnet-5-5", "How do refunds work?"))

    assert (later.usage.cache_read_input_tokens > 0) is read


def test_a_cache_hit_refreshes_the_ttl(client: anthropic.Anthropic, clock: FakeClock) -> None:
    params = _params("claude-sonnet-5-5", "How do refunds work?")
    client.messages.create(**params)
    clock.advance(240)
    client.messages.create(**params)
    clock.advance(240)  # 480 s after the write, 240 s after the hit

    third = client.messages.create(**params)

    assert third.usage.cache_read_input_tokens > 0


def test_changing_the_cached_prefix_misses(client: anthropic.Anthropic) -> None:
    client.messages.create(**_params("claude-sonnet-5-5", "How do refunds work?"))

    changed = client.messages.create(
        **_params("claude-sonnet-5-5", "How do refunds work?", prompt=LONG_PROMPT + " v2")
    )

    assert changed.usage.cache_read_input_tokens == 0
    assert changed.usage.cache_creation_input_tokens > 1024


def test_cache_is_per_model(client: anthropic.Anthropic) -> None:
    long_enough_for_both = LONG_PROMPT * 2
    client.messages.create(
        **_params("claude-sonnet-5-5", "How do refunds work?", prompt=long_enough_for_both)
    )

    other = client.messages.create(
        **_params("claude-haiku-5-5", "How do refunds work?", prompt=long_enough_for_both)
    )

    assert other.usage.cache_read_input_tokens == 0
    assert other.usage.cache_creation_input_tokens > 2048


def test_tools_breakpoint_caches_tools_and_later_system_breakpoint_extends_it(
    client: anthropic.Anthropic,
) -> None:
    tools = [
        {
            "name": f"lookup_{n}",
            "description": "Look something up in the billing records. " * 20,
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
        for n in range(8)
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    params = {**_params("claude-sonnet-5-5", "Hi"), "tools": tools}
    client.messages.create(**{**params, "system": "Short prompt."})

    both = client.messages.create(**params)

    assert both.usage.cache_read_input_tokens > 1024  # the tools prefix
    assert both.usage.cache_creation_input_tokens > 1024  # tools + long system, minus the read
