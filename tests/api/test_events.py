"""GET /api/v1/tickets/{id}/events: the ticket's live events as Server-Sent Events (the relay of
support/events.py), resumed after Last-Event-ID, only for whoever may read the ticket."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from support import events
from tests.api.conftest import bearer, post_json

pytestmark = pytest.mark.django_db(transaction=True)


def _read(response) -> str:
    async def drain() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(drain)().decode()


def test_events_stream_as_sse_and_resume_after_last_event_id(
    api_client, make_key, customer_a, settings, redis_client
):
    settings.API_SSE_MAX_SECONDS = 0.5
    key = make_key("tickets", customer=customer_a)
    ticket_id = post_json(api_client, "/api/v1/tickets", {"text": "hello"}, key).json()["id"]
    first = events.publish(ticket_id=ticket_id, kind="status", data={"text": "Reading…"})
    events.publish(ticket_id=ticket_id, kind="delta", data={"text": "Refunds ", "attempt": 1})
    events.publish(ticket_id=ticket_id, kind="reply", data={"text": "Refunds take 5-10 days."})

    everything = api_client.get(f"/api/v1/tickets/{ticket_id}/events", headers=bearer(key))
    resumed = api_client.get(
        f"/api/v1/tickets/{ticket_id}/events", headers={**bearer(key), "Last-Event-ID": first}
    )

    assert everything.status_code == 200
    assert everything["Content-Type"].startswith("text/event-stream")
    assert everything["Cache-Control"] == "no-cache"
    body = _read(everything)
    assert body.index("event: status") < body.index("event: delta") < body.index("event: reply")
    later = _read(resumed)
    assert "event: status" not in later
    assert "event: delta" in later
    assert "Refunds take 5-10 days." in later


def test_events_need_the_tickets_scope_and_the_ticket(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    staff = make_key("staff")

    assert api_client.get("/api/v1/tickets/1/events").status_code == 401
    assert api_client.get("/api/v1/tickets/1/events", headers=bearer(staff)).status_code == 403
    assert api_client.get("/api/v1/tickets/424242/events", headers=bearer(key)).status_code == 404
