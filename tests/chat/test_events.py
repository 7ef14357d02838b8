"""support/events.py against the real Redis: published events come back from the SSE
generator in order, and a reconnect with Last-Event-ID gets only what came after."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from support import events

pytestmark = pytest.mark.usefixtures("redis_client")


def frames(chunks: list[bytes]) -> list[dict]:
    """The events in SSE chunks (comments and the retry line left out)."""
    out = []
    for chunk in chunks:
        fields = dict(
            line.split(": ", 1) for line in chunk.decode().strip().splitlines() if ": " in line
        )
        if "event" in fields:
            out.append({"id": fields["id"], "kind": fields["event"], **json.loads(fields["data"])})
    return out


def read(ticket_id: int, last_event_id: str | None, count: int, **kwargs) -> list[bytes]:
    async def go() -> list[bytes]:
        got: list[bytes] = []
        stream = events.sse_stream(ticket_id=ticket_id, last_event_id=last_event_id, **kwargs)
        async for chunk in stream:
            got.append(chunk)
            if len(frames(got)) >= count:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    return asyncio.run(asyncio.wait_for(go(), timeout=20))


def test_published_events_are_read_back_in_order_with_their_ids():
    ids = [
        events.publish(ticket_id=7, kind="status", data={"text": "Reading your message…"}),
        events.publish(ticket_id=7, kind="delta", data={"text": "Hel"}),
        events.publish(ticket_id=7, kind="delta", data={"text": "lo"}),
        events.publish(ticket_id=7, kind="reply", data={"text": "Hello", "message_seq": 2}),
    ]
    events.publish(ticket_id=8, kind="status", data={"text": "someone else's"})

    chunks = read(7, None, 4)

    assert chunks[0].startswith(b"retry: ")
    got = frames(chunks)
    assert [e["id"] for e in got] == ids
    assert [e["kind"] for e in got] == ["status", "delta", "delta", "reply"]
    assert "".join(e["text"] for e in got if e["kind"] == "delta") == "Hello"


def test_a_reconnect_with_last_event_id_gets_only_later_events():
    first = events.publish(ticket_id=9, kind="delta", data={"text": "one"})
    second = events.publish(ticket_id=9, kind="delta", data={"text": "two"})
    third = events.publish(ticket_id=9, kind="delta", data={"text": "three"})

    got = frames(read(9, first, 2))

    assert [(e["id"], e["text"]) for e in got] == [(second, "two"), (third, "three")]
    assert [e.id for e in events.events_since(ticket_id=9, after=second)] == [third]


def test_the_stream_waits_for_events_published_while_it_is_open():
    start = events.last_event_id(ticket_id=10)

    def later() -> None:
        time.sleep(0.3)
        events.publish(ticket_id=10, kind="status", data={"text": "Checking your invoices…"})

    threading.Thread(target=later).start()
    got = frames(read(10, start, 1, heartbeat_seconds=0.1))

    assert got[0]["text"] == "Checking your invoices…"


@pytest.mark.parametrize("bad", ["", "abc", "1-2-3", "$", "0-0; DROP", "9" * 30 + "-0"])
def test_a_malformed_last_event_id_replays_from_the_start(bad):
    first = events.publish(ticket_id=11, kind="status", data={"text": "x"})

    assert frames(read(11, bad, 1))[0]["id"] == first


def test_an_idle_stream_sends_heartbeats_and_ends_after_its_time():
    async def go() -> list[bytes]:
        return [
            c
            async for c in events.sse_stream(
                ticket_id=12, last_event_id=None, heartbeat_seconds=0.05, max_seconds=0.3
            )
        ]

    chunks = asyncio.run(asyncio.wait_for(go(), timeout=10))

    assert b": keep-alive\n\n" in chunks
    assert frames(chunks) == []


def test_an_idle_stream_outlives_the_redis_clients_default_read_timeout():
    # redis-py's asyncio client times reads out after 5 s unless told otherwise.
    async def go() -> list[bytes]:
        return [
            c
            async for c in events.sse_stream(
                ticket_id=15, last_event_id=None, heartbeat_seconds=6, max_seconds=6.5
            )
        ]

    chunks = asyncio.run(asyncio.wait_for(go(), timeout=30))

    assert b": events unavailable\n\n" not in chunks
    assert b": keep-alive\n\n" in chunks


def test_the_stream_is_trimmed_and_expires(redis_client):
    for i in range(events.STREAM_MAXLEN + 300):
        events.publish(ticket_id=13, kind="delta", data={"text": str(i)})

    assert redis_client.xlen(events.key(13)) < events.STREAM_MAXLEN + 300
    assert 0 < redis_client.ttl(events.key(13)) <= events.STREAM_TTL_SECONDS


def test_the_delta_relay_coalesces_and_resets():
    relay = events.DeltaRelay(ticket_id=14, min_interval=60)
    for piece in ["a", "b", "c"]:
        relay(piece)
    relay.flush()
    relay.reset("fallback")
    relay("z")
    relay.flush()

    got = [(e.kind, e.data) for e in events.events_since(ticket_id=14, after=None)]
    assert got == [
        ("delta", {"text": "a", "attempt": 0}),
        ("delta", {"text": "bc", "attempt": 0}),
        ("draft_reset", {"attempt": 1, "reason": "fallback"}),
        ("delta", {"text": "z", "attempt": 1}),
    ]


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown event kind"):
        events.publish(ticket_id=1, kind="exec", data={})
