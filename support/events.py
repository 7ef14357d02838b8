"""A ticket's live events: what the worker publishes while it works, read back as SSE.

Interface (used by the customer chat and by the REST API's `GET /api/v1/tickets/{id}/events`):

- `publish(*, ticket_id: int, kind: str, data: dict) -> str | None` — sync, for workers and
  views. Appends one event to the ticket's Redis Stream and returns its id ("1712-0"), or None
  when Redis is unreachable (logged, never raised: events are a live view; Postgres is the truth
  and the chat's polling endpoint reads Postgres).
- `async sse_stream(*, ticket_id: int, last_event_id: str | None, ...) -> AsyncIterator[bytes]`
  — the Server-Sent Events body: `retry:` first, then one frame per event
  (`id: <stream id>`, `event: <kind>`, `data: <json>`), a comment line as a heartbeat every
  `heartbeat_seconds`, and the end after `max_seconds` (the browser's EventSource reconnects
  with `Last-Event-ID`, which the view passes back as `last_event_id`). `last_event_id=None`
  replays every event still kept for the ticket; a malformed id is treated as None. The caller
  must have authorized the reader for the ticket: this module never checks ownership.
- `events_since(*, ticket_id, after, count) -> list[Event]` — the same events, sync (polling).
- `last_event_id(*, ticket_id) -> str` — the newest id ("0-0" when none): a page renders it as
  its cursor so its stream starts after what the page already shows.
- `DeltaRelay(ticket_id=...)` — a callable for `llm.complete(on_text=relay,
  on_restart=relay.reset)` that publishes the model's text deltas as `delta` events.

Kinds and their data (all JSON objects):
  status       {"text", "state", "phase"}  what is being done now ("Checking your invoices…")
  delta        {"text", "attempt"}          a piece of the draft answer as the model writes it
  draft_reset  {"attempt", "reason"}        forget the draft so far (a retry or fallback began)
  reply        {"message_seq", "text", "sources", "state", "lane"}  the final, guarded reply
  state        {"state", "status_text"}     the ticket changed state without a new reply

Storage: one stream per ticket (`<REDIS_KEY_PREFIX>:support:ticket:<id>:events`), trimmed to about
STREAM_MAXLEN entries and expiring STREAM_TTL_SECONDS after the last event, so a stream is hot
state that may vanish; readers fall back to Postgres. Stream ids are monotonic per ticket,
which is what makes them usable as SSE ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from django.conf import settings

log = structlog.get_logger(__name__)

STREAM_MAXLEN = 1000
STREAM_TTL_SECONDS = 24 * 3600
KINDS = frozenset({"status", "delta", "draft_reset", "reply", "state"})
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "data": self.data}

    def sse(self) -> bytes:
        payload = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
        # json.dumps never emits a raw newline, so one data: line always holds the payload.
        return f"id: {self.id}\nevent: {self.kind}\ndata: {payload}\n\n".encode()


def key(ticket_id: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:support:ticket:{int(ticket_id)}:events"


@functools.cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def client() -> redis.Redis:
    return _client_for(settings.REDIS_URL)


# --- how many streams one reader may hold open -------------------------------------------------
# Each open stream holds a Redis connection for up to its max_seconds: without a cap, one signed-in
# customer or one key could open thousands and use up Redis' clients (which the broker, the
# budgets and the rate limits share). A browser needs one per open conversation tab.
MAX_STREAMS_PER_READER = 10
_SLOT_TAKE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


@dataclass(frozen=True)
class StreamSlot:
    """One of a reader's open streams, held until `stream_slot_release` or its lifetime ends
    (a slot whose process died frees itself)."""

    key: str
    token: str


def stream_slot_take(*, reader: str, lifetime_seconds: float) -> StreamSlot | None:
    """Reserve a stream for `reader` ("customer:7", "key:3"); None when it has
    MAX_STREAMS_PER_READER open already. Fails open when Redis is unreachable (the stream then
    says it is unavailable by itself)."""
    name = f"{settings.REDIS_KEY_PREFIX}:support:streams:{reader}"
    slot = StreamSlot(key=name, token=secrets.token_hex(8))
    try:
        taken = client().eval(
            _SLOT_TAKE,
            1,
            name,
            time.time(),
            lifetime_seconds + 30,
            MAX_STREAMS_PER_READER,
            slot.token,
        )
    except redis.RedisError as exc:
        log.warning("support.stream_slot_unavailable", reader=reader, error=str(exc))
        return slot
    return slot if taken else None


def stream_slot_release(slot: StreamSlot | None) -> None:
    if slot is None:
        return
    with contextlib.suppress(redis.RedisError):
        client().zrem(slot.key, slot.token)


def valid_event_id(value: str | None) -> str | None:
    """`value` if it is a stream id, else None (a client may send anything as Last-Event-ID)."""
    if value is None:
        return None
    value = value.strip()
    return value if _EVENT_ID.match(value) else None


def publish(*, ticket_id: int, kind: str, data: dict[str, Any]) -> str | None:
    """Append an event to the ticket's stream; its id, or None when Redis is down."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    name = key(ticket_id)
    fields = {"kind": kind, "data": json.dumps(data, ensure_ascii=False)}
    try:
        pipe = client().pipeline(transaction=True)
        pipe.xadd(name, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        pipe.expire(name, STREAM_TTL_SECONDS)
        event_id, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("support.event_publish_failed", ticket=ticket_id, kind=kind, error=str(exc))
        return None
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


def _decode(entry_id: Any, fields: Any) -> Event:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    kind = fields.get(b"kind", b"").decode()
    try:
        data = json.loads(fields.get(b"data", b"{}"))
    except ValueError:
        data = {}
    return Event(id=eid, kind=kind, data=data if isinstance(data, dict) else {})


def events_since(*, ticket_id: int, after: str | None, count: int = 500) -> list[Event]:
    """The kept events after `after` (all kept events for None), oldest first."""
    start = valid_event_id(after)
    rows: Any
    try:
        rows = client().xrange(key(ticket_id), min=f"({start}" if start else "-", count=count)
    except redis.RedisError as exc:
        log.warning("support.event_read_failed", ticket=ticket_id, error=str(exc))
        return []
    return [_decode(eid, fields) for eid, fields in rows]


def last_event_id(*, ticket_id: int) -> str:
    """The newest event's id, "0-0" when the ticket has none (or Redis is down)."""
    try:
        rows = client().xrevrange(key(ticket_id), count=1)
    except redis.RedisError:
        return "0-0"
    if not rows:
        return "0-0"
    eid = rows[0][0]
    return eid.decode() if isinstance(eid, bytes) else str(eid)


async def sse_stream(
    *,
    ticket_id: int,
    last_event_id: str | None,
    heartbeat_seconds: float = 15.0,
    max_seconds: float = 300.0,
    retry_ms: int = 2000,
    slot: StreamSlot | None = None,
) -> AsyncIterator[bytes]:
    """SSE frames for the ticket's events after `last_event_id` (see the module docstring).

    Reads with XREAD BLOCK on its own asyncio connection, so an idle stream costs a socket and
    no thread. Ends after `max_seconds` so no response lives forever; clients reconnect. Frees
    `slot` (see stream_slot_take) when it ends."""
    cursor = valid_event_id(last_event_id) or "0-0"
    name = key(ticket_id)
    # redis-py's asyncio client gives up on a read after 5 s by default: longer than that, an
    # idle XREAD BLOCK would look like an outage. Wait for the block plus a margin instead.
    conn = aioredis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=heartbeat_seconds + 5
    )
    deadline = time.monotonic() + max_seconds
    try:
        yield f"retry: {int(retry_ms)}\n\n".encode()
        while (left := deadline - time.monotonic()) > 0:
            block_ms = max(1, int(min(heartbeat_seconds, left) * 1000))
            result: Any
            try:
                result = await conn.xread({name: cursor}, count=200, block=block_ms)
            except redis.RedisError as exc:
                log.warning(
                    "support.event_stream_failed",
                    ticket=ticket_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
                # Tell the client to come back later; it resumes from its last id.
                yield b": events unavailable\n\n"
                return
            if not result:
                yield b": keep-alive\n\n"
                continue
            for _stream, entries in result:
                for entry_id, fields in entries:
                    event = _decode(entry_id, fields)
                    cursor = event.id
                    yield event.sse()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(conn.aclose())
        stream_slot_release(slot)  # one quick ZREM; awaiting here could be cancelled


class DeltaRelay:
    """Publishes a model's text deltas for one reply as `delta` events.

    Deltas are coalesced: at most one event per `min_interval` seconds (and the rest when the
    text ends), so a fast model does not write one stream entry per token. `reset()` starts a new
    attempt (a retry or a fallback model): a `draft_reset` event tells readers to drop the draft
    so far. `flush()` publishes what is buffered. Safe to call from the gateway's thread."""

    def __init__(self, *, ticket_id: int, min_interval: float = 0.03) -> None:
        self.ticket_id = ticket_id
        self.min_interval = min_interval
        self.attempt = 0
        self.published = 0
        self._buffer: list[str] = []
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._buffer.append(text)
            if time.monotonic() - self._last >= self.min_interval:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def reset(self, reason: str = "retry") -> None:
        with self._lock:
            self._buffer.clear()
            had = self.published
            self.attempt += 1
            if had:
                publish(
                    ticket_id=self.ticket_id,
                    kind="draft_reset",
                    data={"attempt": self.attempt, "reason": reason},
                )

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        self._buffer.clear()
        self._last = time.monotonic()
        self.published += 1
        publish(
            ticket_id=self.ticket_id, kind="delta", data={"text": text, "attempt": self.attempt}
        )
