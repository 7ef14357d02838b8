"""The simulated model's behaviour (placeholder; being built out)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    content: list[dict[str, Any]]
    stop_reason: str


def _tool_id(body: dict[str, Any], n: int) -> str:
    digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode() + bytes([n]))
    return "toolu_sim_" + digest.hexdigest()[:24]


def respond(body: dict[str, Any], *, adversarial: bool, malformed_tool_input: bool) -> Reply:
    tools = body.get("tools") or []
    last = body["messages"][-1]["content"]
    has_results = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    if tools and not has_results:
        tool = tools[0]
        return Reply(
            [{"type": "tool_use", "id": _tool_id(body, 0), "name": tool["name"], "input": {}}],
            "tool_use",
        )
    return Reply(
        [{"type": "text", "text": "Thanks for reaching out. I am the simulator."}], "end_turn"
    )
