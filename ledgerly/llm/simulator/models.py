"""The models the simulator answers as, with the rules that differ between generations."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str  # "haiku" | "sonnet": rate limits and the prompt-cache minimum are per family
    generation: int  # 4 or 5; 5.x rejects sampling parameters, manual thinking and prefill
    max_output_tokens: int
    context_window: int
    cache_min_tokens: int  # shortest cacheable prefix
    retired_on: dt.date | None = None
    forced_tool_choice: bool = True  # False: tool_choice any/tool is rejected


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec("claude-haiku-5-5", "haiku", 5, 64_000, 200_000, 2048),
        ModelSpec(
            "claude-sonnet-5-5", "sonnet", 5, 64_000, 1_000_000, 1024, forced_tool_choice=False
        ),
        ModelSpec("claude-haiku-4-5", "haiku", 4, 64_000, 200_000, 2048),
        ModelSpec(
            "claude-sonnet-4-5",
            "sonnet",
            4,
            64_000,
            200_000,
            1024,
            retired_on=dt.date(2026, 11, 30),
        ),
    )
}
