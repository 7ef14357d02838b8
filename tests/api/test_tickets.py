"""Tickets through the API: who opens and reads which tickets, the detail, the list, follow-ups,
idempotent creation (with a real race), and the session with CSRF."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

from support.models import ApiKey, Ticket
from tests.api.conftest import bearer, error_code, post_json

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = {"text": "How long does a refund take to show up on my card?"}


def _key_row(key: str) -> ApiKey:
    return ApiKey.objects.get(prefix=key.split(".")[0])


def test_a_bound_key_opens_a_ticket_for_its_customer_with_202(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)

    response = post_json(api_client, "/api/v1/tickets", QUESTION, key)

    assert response.status_code == 202
    ticket = Ticket.objects.get(pk=response.json()["id"])
    assert ticket.customer_id == customer_a.pk
    assert ticket.api_key == _key_row(key)
    assert ticket.channel == "api"
    assert response.json()["state"] == "received"


def test_a_bound_key_cannot_open_a_ticket_for_another_customer(
    api_client, make_key, customer_a, customer_b
):
    key = make_key("tickets", customer=customer_a)

    response = post_json(
        api_client, "/api/v1/tickets", {**QUESTION, "customer": customer_b.email}, key
    )

    assert response.status_code == 422
    assert error_code(response) == "customer_not_allowed"
    assert Ticket.objects.count() == 0


def test_an_integration_key_must_name_an_existing_customer(api_client, make_key, customer_b):
    key = make_key("tickets")

    missing = post_json(api_client, "/api/v1/tickets", QUESTION, key)
    unknown = post_json(api_client, "/api/v1/tickets", {**QUESTION, "customer": "x@y.test"}, key)
    by_ref = post_json(api_client, "/api/v1/tickets", {**QUESTION, "customer": customer_b.ref}, key)

    assert (missing.status_code, error_code(missing)) == (422, "customer_required")
    assert (unknown.status_code, error_code(unknown)) == (422, "unknown_customer")
    assert by_ref.status_code == 202
    assert Ticket.objects.get().customer_id == customer_b.pk


def test_a_key_bound_to_b_never_reads_a_s_ticket_404_not_403(
    api_client, make_key, customer_a, customer_b
):
    key_a = make_key("tickets", customer=customer_a)
    key_b = make_key("tickets", customer=customer_b)
    ticket_id = post_json(api_client, "/api/v1/tickets", QUESTION, key_a).json()["id"]

    read = api_client.get(f"/api/v1/tickets/{ticket_id}", headers=bearer(key_b))
    follow_up = post_json(api_client, f"/api/v1/tickets/{ticket_id}/messages", QUESTION, key_b)
    events = api_client.get(f"/api/v1/tickets/{ticket_id}/events", headers=bearer(key_b))
    listing = api_client.get("/api/v1/tickets", headers=bearer(key_b))

    assert (read.status_code, error_code(read)) == (404, "not_found")
    assert follow_up.status_code == 404
    assert events.status_code == 404
    assert listing.json()["count"] == 0
    assert api_client.get(f"/api/v1/tickets/{ticket_id}", headers=bearer(key_a)).status_code == 200
    assert Ticket.objects.get(pk=ticket_id).conversation.messages.count() == 1


def test_an_integration_key_reads_only_the_tickets_it_opened(
    api_client, make_key, customer_a, settings
):
    settings.API_KEY_ROTATION_GRACE_SECONDS = 3600
    mine, theirs = make_key("tickets"), make_key("tickets")
    bound = make_key("tickets", customer=customer_a)
    body = {**QUESTION, "customer": customer_a.email}
    my_ticket = post_json(api_client, "/api/v1/tickets", body, mine).json()["id"]
    their_ticket = post_json(api_client, "/api/v1/tickets", body, theirs).json()["id"]

    assert api_client.get(f"/api/v1/tickets/{my_ticket}", headers=bearer(mine)).status_code == 200
    assert (
        api_client.get(f"/api/v1/tickets/{their_ticket}", headers=bearer(mine)).status_code == 404
    )
    assert [
        t["id"] for t in api_client.get("/api/v1/tickets", headers=bearer(mine)).json()["items"]
    ] == [my_ticket]
    # The customer's own bound key sees both; the rotated integration key still sees its own.
    assert api_client.get("/api/v1/tickets", headers=bearer(bound)).json()["count"] == 2
    from support.apikeys import api_key_rotate

    rotated = api_key_rotate(api_key=_key_row(mine)).plaintext
    assert (
        api_client.get(f"/api/v1/tickets/{my_ticket}", headers=bearer(rotated)).status_code == 200
    )


def test_ticket_detail_has_state_lane_route_messages_reply_sources_refund_and_cost(
    api_client, make_key, customer_a
):
    key = make_key("tickets", customer=customer_a)
    ticket_id = post_json(api_client, "/api/v1/tickets", QUESTION, key).json()["id"]
    Ticket.objects.filter(pk=ticket_id).update(
        state="answered",
        lane="faq",
        first_lane="faq",
        route={"lane": "faq", "confidence": 0.9, "tier": "rules"},
        reply="Refunds take 5-10 business days.",
        sources=[{"slug": "refund-timing", "title": "Refund timing"}],
    )

    body = api_client.get(f"/api/v1/tickets/{ticket_id}", headers=bearer(key)).json()

    assert body["state"] == "answered"
    assert body["lane"] == "faq"
    assert body["route"]["tier"] == "rules"
    assert body["reply"].startswith("Refunds take")
    assert body["sources"] == [{"slug": "refund-timing", "title": "Refund timing"}]
    assert [m["text"] for m in body["messages"]] == [QUESTION["text"]]
    assert body["refund_request"] is None
    assert set(body["cost"]) == {"usd", "tokens", "turns"}


def test_a_follow_up_is_added_to_the_ticket(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    ticket_id = post_json(api_client, "/api/v1/tickets", QUESTION, key).json()["id"]

    response = post_json(
        api_client, f"/api/v1/tickets/{ticket_id}/messages", {"text": "And for SEPA?"}, key
    )

    assert response.status_code == 202
    texts = api_client.get(f"/api/v1/tickets/{ticket_id}", headers=bearer(key)).json()["messages"]
    assert [m["text"] for m in texts] == [QUESTION["text"], "And for SEPA?"]


def test_listing_pages_and_filters(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    ids = [
        post_json(api_client, "/api/v1/tickets", {"text": f"question {n}"}, key).json()["id"]
        for n in range(5)
    ]
    Ticket.objects.filter(pk__in=ids[:2]).update(state="answered", lane="faq")

    first = api_client.get("/api/v1/tickets", {"limit": 2}, headers=bearer(key)).json()
    second = api_client.get("/api/v1/tickets", {"limit": 2, "offset": 2}, headers=bearer(key))
    answered = api_client.get(
        "/api/v1/tickets", {"state": "answered", "lane": "faq"}, headers=bearer(key)
    ).json()
    future = api_client.get(
        "/api/v1/tickets", {"created_since": "2999-01-01T00:00:00Z"}, headers=bearer(key)
    ).json()
    bad = api_client.get("/api/v1/tickets", {"state": "nonsense"}, headers=bearer(key))

    assert first["count"] == 5
    assert [t["id"] for t in first["items"]] == ids[::-1][:2]
    assert [t["id"] for t in second.json()["items"]] == ids[::-1][2:4]
    assert sorted(t["id"] for t in answered["items"]) == ids[:2]
    assert future["count"] == 0
    assert bad.status_code == 422


# --- idempotency --------------------------------------------------------------------------------
def test_a_retried_post_with_the_same_idempotency_key_returns_the_same_ticket(
    api_client, make_key, customer_a
):
    key = make_key("tickets", customer=customer_a)

    first = post_json(api_client, "/api/v1/tickets", QUESTION, key, **{"Idempotency-Key": "k-1"})
    again = post_json(api_client, "/api/v1/tickets", QUESTION, key, **{"Idempotency-Key": "k-1"})

    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Ticket.objects.count() == 1
    assert Ticket.objects.get().conversation.messages.count() == 1


def test_the_same_idempotency_key_with_another_body_is_a_409(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    post_json(api_client, "/api/v1/tickets", QUESTION, key, **{"Idempotency-Key": "k-1"})

    other = post_json(
        api_client, "/api/v1/tickets", {"text": "something else"}, key, **{"Idempotency-Key": "k-1"}
    )

    assert other.status_code == 409
    assert error_code(other) == "idempotency_conflict"
    assert Ticket.objects.count() == 1


def test_two_integrations_using_the_same_idempotency_key_do_not_collide(
    api_client, make_key, customer_a
):
    one, two = make_key("tickets"), make_key("tickets")
    body = {**QUESTION, "customer": customer_a.email}

    a = post_json(api_client, "/api/v1/tickets", body, one, **{"Idempotency-Key": "order-7"})
    b = post_json(api_client, "/api/v1/tickets", body, two, **{"Idempotency-Key": "order-7"})

    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_a_malformed_idempotency_key_is_a_422(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    response = post_json(
        api_client, "/api/v1/tickets", QUESTION, key, **{"Idempotency-Key": "x" * 201}
    )
    assert response.status_code == 422
    assert Ticket.objects.count() == 0


@pytest.mark.slow
def test_concurrent_retries_with_one_idempotency_key_make_one_ticket(
    make_key, customer_a, redis_client
):
    key = make_key("tickets", customer=customer_a)
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list[Any] = [None] * threads_n

    def post(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            response = post_json(
                Client(), "/api/v1/tickets", QUESTION, key, **{"Idempotency-Key": "race-1"}
            )
            results[i] = (response.status_code, response.json().get("id"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert {status for status, _ in results} == {202}
    assert len({ticket_id for _, ticket_id in results}) == 1
    assert Ticket.objects.count() == 1


# --- the session (the pages' own calls) ----------------------------------------------------------
@pytest.fixture
def customer_session(customer_a) -> Client:
    user = User.objects.create_user("ana-api", email=customer_a.email, password="x-not-used-x")
    customer_a.user = user
    customer_a.save(update_fields=["user"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _csrf_token(client: Client) -> str:
    client.get("/admin/login/")  # any page that sets the CSRF cookie
    return client.cookies["csrftoken"].value


def test_a_signed_in_customer_uses_the_tickets_routes_with_csrf(customer_session, customer_a):
    without = customer_session.post("/api/v1/tickets", QUESTION, content_type="application/json")
    token = _csrf_token(customer_session)
    with_token = customer_session.post(
        "/api/v1/tickets", QUESTION, content_type="application/json", headers={"X-CSRFToken": token}
    )

    assert (without.status_code, error_code(without)) == (403, "csrf_failed")
    assert with_token.status_code == 202
    ticket = Ticket.objects.get()
    assert ticket.customer_id == customer_a.pk
    assert customer_session.get(f"/api/v1/tickets/{ticket.pk}").status_code == 200


def test_a_signed_in_customer_does_not_see_another_customer_s_ticket(
    customer_session, make_key, customer_b
):
    other = post_json(
        Client(), "/api/v1/tickets", QUESTION, make_key("tickets", customer=customer_b)
    ).json()["id"]
    assert customer_session.get(f"/api/v1/tickets/{other}").status_code == 404


def test_a_staff_session_is_not_a_customer_on_the_tickets_routes(plain_staff):
    client = Client()
    client.force_login(plain_staff)
    response = client.get("/api/v1/tickets")
    assert response.status_code == 403
