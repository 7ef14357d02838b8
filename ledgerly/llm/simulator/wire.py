"""Message bodies and the SSE event sequence, shaped exactly as the Messages API sends them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any


def usage_dict(
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation: int,
    cache_read: int,
    creation_by_ttl: dict[str, int],
    service_tier: str = "standard",
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": creation_by_ttl.get("5m", 0),
            "ephemeral_1h_input_tokens": creation_by_ttl.get("1h", 0),
        },
        "output_tokens": output_tokens,
        "service_tier": service_tier,
    }


def message_dict(
    *,
    message_id: str,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str,
    usage: dict[str, Any],
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


_WORDS = re.compile(r"\S+\s*|\s+")


def text_chunks(text: str, words: int = 4) -> list[str]:
    """Split text into small runs of words, as the model streams it."""
    pieces = _WORDS.findall(text)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)] or [""]


def json_chunks(payload: str, size: int = 24) -> list[str]:
    return [payload[i : i + size] for i in range(0, len(payload), size)] or [""]


def stream_events(message: dict[str, Any]) -> Iterator[bytes]:
    """The full SSE sequence for a finished message (message_start ... message_stop)."""
    usage = dict(message["usage"])
    start_usage = {**usage, "output_tokens": 1}
    yield sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                **message,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        else:
            start = block
        yield sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": start,
            },
        )
        if index == 0:
            yield sse("ping", {"type": "ping"})
        for delta in _deltas(block):
            yield sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": delta,
                },
            )
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
            },
            "usage": {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": usage["output_tokens"],
            },
        },
    )
    yield sse("message_stop", {"type": "message_stop"})


def _deltas(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        for piece in text_chunks(block["text"]):
            yield {"type": "text_delta", "text": piece}
    elif kind == "thinking":
        for piece in text_chunks(block["thinking"], words=8):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}
    elif kind == "tool_use":
        payload = json.dumps(block["input"], separators=(",", ":"))
        yield {"type": "input_json_delta", "partial_json": ""}
        for piece in json_chunks(payload):
            yield {"type": "input_json_delta", "partial_json": piece}
