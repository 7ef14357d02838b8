"""Prompt caching under Anthropic's rules, for realistic `usage` counts.

The request is read as one sequence of blocks in the API's order: tools, then system, then
messages. A block carrying `cache_control` is a breakpoint; the prefix up to and including it
can be cached only when it is at least the model's minimum length (1024 tokens for Sonnet,
2048 for Haiku). A request reads the longest cached prefix that ends at a breakpoint or at one
of the 20 blocks before a breakpoint (the API's look-back window), and writes every longer
cacheable breakpoint prefix. Entries live 5 minutes (or 1 hour with `"ttl": "1h"`) and a read
refreshes them. `input_tokens` excludes both cache reads and cache writes.

The cache lives in the memory of one simulator instance: one `SimulatorTransport` object, or one
`python -m ledgerly.llm.simulator` server process. Two transports never share entries.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .tokens import canonical, count_block

LOOKBACK_BLOCKS = 20
TOOL_USE_SYSTEM_TOKENS = 346
MAX_ENTRIES = 50_000
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True)
class Segment:
    material: str
    tokens: int
    ttl: str | None  # set when this block is a cache breakpoint


@dataclass
class CacheUsage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    creation_by_ttl: dict[str, int] = field(default_factory=lambda: {"5m": 0, "1h": 0})

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def _ttl_of(block: Any) -> str | None:
    if not isinstance(block, dict):
        return None
    control = block.get("cache_control")
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        return None
    return "1h" if control.get("ttl") == "1h" else "5m"


def segments_of(body: dict[str, Any]) -> list[Segment]:
    """The request as cacheable blocks, in the order the API caches them."""
    out: list[Segment] = []
    for n, tool in enumerate(body.get("tools") or []):
        # With tools the API adds its own tool-use system prompt (~346 tokens), counted once.
        overhead = TOOL_USE_SYSTEM_TOKENS if n == 0 else 0
        out.append(
            Segment("tool:" + canonical(tool), count_block(tool) + 8 + overhead, _ttl_of(tool))
        )
    system = body.get("system")
    if isinstance(system, str) and system:
        out.append(Segment("system:" + system, count_block(system), None))
    elif isinstance(system, list):
        for block in system:
            out.append(Segment("system:" + canonical(block), count_block(block), _ttl_of(block)))
    for message in body.get("messages") or []:
        role = message.get("role", "")
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else list(content or [])
        for n, block in enumerate(blocks):
            # Each message costs a few tokens of framing, charged on its first block.
            framing = 3 if n == 0 else 0
            out.append(
                Segment(f"{role}:" + canonical(block), count_block(block) + framing, _ttl_of(block))
            )
    automatic = _ttl_of(body)
    if automatic and out and out[-1].ttl is None:
        # Top-level cache_control: the breakpoint goes on the last block of the request.
        out[-1] = Segment(out[-1].material, out[-1].tokens, automatic)
    return out


class PromptCache:
    """Thread-safe prompt cache for one simulator instance."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def account(
        self,
        *,
        model: str,
        min_tokens: int,
        body: dict[str, Any],
        write: bool = True,
        segments: list[Segment] | None = None,
    ) -> CacheUsage:
        """Usage for a request; records writes and refreshes read entries unless write=False."""
        segments = segments if segments is not None else segments_of(body)
        cumulative: list[int] = []
        hashes: list[str] = []
        running = hashlib.sha256(model.encode())
        total = 0
        for segment in segments:
            total += segment.tokens
            running.update(b"\x00" + segment.material.encode())
            cumulative.append(total)
            hashes.append(running.copy().hexdigest())
        breakpoints = [i for i, s in enumerate(segments) if s.ttl]
        if not breakpoints:
            return CacheUsage(total, 0, 0)
        now = self._clock()
        with self._lock:
            candidates = {
                j for b in breakpoints for j in range(b, max(-1, b - LOOKBACK_BLOCKS), -1)
            }
            hit = max((j for j in candidates if self._live(hashes[j], now)), default=None)
            read = cumulative[hit] if hit is not None else 0
            if hit is not None and write:
                _, ttl = self._entries[hashes[hit]]
                self._entries[hashes[hit]] = (now + TTL_SECONDS[ttl], ttl)
                self._entries.move_to_end(hashes[hit])
            usage = CacheUsage(0, 0, read)
            covered = read
            for b in breakpoints:
                if cumulative[b] < min_tokens or (hit is not None and b <= hit):
                    continue
                ttl = segments[b].ttl or "5m"
                portion = cumulative[b] - covered
                if portion > 0:
                    usage.creation_by_ttl[ttl] += portion
                    usage.cache_creation_input_tokens += portion
                    covered = cumulative[b]
                if write:
                    self._entries[hashes[b]] = (now + TTL_SECONDS[ttl], ttl)
                    self._entries.move_to_end(hashes[b])
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
        usage.input_tokens = (
            total - usage.cache_read_input_tokens - usage.cache_creation_input_tokens
        )
        return usage

    def _live(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry[0] <= now:
            del self._entries[key]
            return False
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
