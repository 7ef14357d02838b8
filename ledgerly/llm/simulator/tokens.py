"""Deterministic token estimates: about four characters per token, as a rule of thumb."""

from __future__ import annotations

import json
from typing import Any


def count_text(text: str) -> int:
    """Tokens in a piece of text (at least one for any non-empty text)."""
    if not text:
        return 0
    return max(1, (len(text) + 3) // 4)


def canonical(value: Any) -> str:
    """Stable JSON for hashing and counting (cache_control is not part of the content)."""
    return json.dumps(_strip_cache_control(value), sort_keys=True, separators=(",", ":"))


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def count_block(block: Any) -> int:
    """Tokens for one request block: its text, or its JSON for structured blocks."""
    if isinstance(block, str):
        return count_text(block)
    if isinstance(block, dict):
        kind = block.get("type")
        if kind == "text":
            return count_text(str(block.get("text", ""))) + 1
        if kind == "thinking":
            return count_text(str(block.get("thinking", ""))) + 1
        if kind == "tool_result":
            return count_block_content(block.get("content", "")) + 4
        if kind == "tool_use":
            return (
                count_text(str(block.get("name", "")))
                + count_text(json.dumps(block.get("input", {}), sort_keys=True))
                + 4
            )
        if kind == "image":
            return 1600  # roughly what a ~1000x1000 image costs
    return count_text(canonical(block))


def count_block_content(content: Any) -> int:
    if isinstance(content, str):
        return count_text(content)
    if isinstance(content, list):
        return sum(count_block(b) for b in content)
    return count_text(canonical(content))
