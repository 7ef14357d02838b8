"""An adversarial second read of the three surfaces (chat, staff pages, REST API): what a
hostile customer, a leaked or stale key, or a careless integrator would try. Each test states
the attack and asserts it gets nowhere (and never a 5xx)."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urljoin

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.db import connections
from django.test import AsyncClient, Client
from django.utils import timezone

from billing.models import Customer
from memory import services as memory_services
from support import apikeys, events, signin
from support.models import AnswerRating, Ticket
from support.views import chat as chat_views
from tests.billing import factories as billing_factories
from tests.staff import factories as staff_factories

pytestmark = pytest.mark.django_db(transaction=True)


def _browser_location(location: str) -> str:
    """Where a browser goes for a Location header: the URL spec strips tabs and newlines
    before parsing, and resolves the rest against the page."""
    cleaned = "".join(ch for ch in location if ch not in "\t\n\r")
    return urljoin("http://testserver/signin/demo/", cleaned)


def customer_with_login() -> tuple[Customer, User]:
    customer = billing_factories.customer()
    user = User.objects.create_user(customer.email, password="x-not-used-x")
    customer.user = user
    customer.save(update_fields=["user"])
    return customer, user


def signed_in(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def own_ticket(customer: Customer) -> Ticket:
    return staff_factories.ticket(
        owner=customer, messages=(("customer", "my secret question"), ("assistant", "An answer."))
    )


# --- redirects ------------------------------------------------------------------------------------
HOSTILE_NEXT = [
    "//evil.example/",
    "/\t/evil.example/",
    "/\n/evil.example/",
    "/\r\n/evil.example/",
    "/%09/evil.example/",
    "https://evil.example/",
    "/\\evil.example/",
    " //evil.example/",
]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_the_demo_sign_in_never_redirects_off_site(client, settings, monkeypatch, target):
    settings.DEMO_SIGNIN_ENABLED = True
    customer, _ = customer_with_login()
    monkeypatch.setattr(signin, "SCENARIO_EMAILS", (customer.email,))

    response = client.post("/signin/demo/", {"email": customer.email, "next": target})

    assert response.status_code == 302
    assert _browser_location(response["Location"]).startswith("http://testserver/")


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_the_staff_sign_in_never_redirects_off_site(target):
    user = staff_factories.staff_user(approver=False)
    response = Client().post(
        f"/staff/login/?next={target}",
        {"username": user.username, "password": staff_factories.PASSWORD},
    )
    assert response.status_code == 302
    assert _browser_location(response["Location"]).startswith("http://testserver/")


# --- ratings and polling -------------------------------------------------------------------
def test_a_customer_cannot_rate_another_customers_answer():
    a, _ = customer_with_login()
    _, user_b = customer_with_login()
    ticket = own_ticket(a)

    response = signed_in(user_b).post(
        f"/tickets/{ticket.pk}/ratings/", {"message_seq": "2", "helpful": "yes"}
    )

    assert response.status_code == 404
    assert not AnswerRating.objects.exists()


@pytest.mark.parametrize("seq", ["99999999999999999999999", "-1", "1e3", "\x00", "²"])
def test_a_rating_of_a_nonsense_message_number_is_a_400(seq):
    a, user_a = customer_with_login()
    ticket = own_ticket(a)

    response = signed_in(user_a).post(
        f"/tickets/{ticket.pk}/ratings/", {"message_seq": seq, "helpful": "yes"}
    )

    assert response.status_code == 400
    assert not AnswerRating.objects.exists()


@pytest.mark.parametrize("after_seq", ["99999999999999999999999", "-99999999999999999999", "x"])
def test_polling_with_a_huge_or_bad_cursor_is_not_a_5xx(after_seq):
    a, user_a = customer_with_login()
    ticket = own_ticket(a)

    response = signed_in(user_a).get(
        f"/tickets/{ticket.pk}/status/", {"after_seq": after_seq}, HTTP_ACCEPT="application/json"
    )

    assert response.status_code in (200, 400)


def test_polling_another_customers_ticket_is_a_404():
    a, _ = customer_with_login()
    _, user_b = customer_with_login()
    ticket = own_ticket(a)

    response = signed_in(user_b).get(
        f"/tickets/{ticket.pk}/status/", HTTP_ACCEPT="application/json"
    )

    assert response.status_code == 404
    assert b"my secret question" not in response.content


# --- CSRF on the pages ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/tickets/", {"text": "hello"}),
        ("/human/", {}),
        ("/tickets/{t}/messages/", {"text": "hello"}),
        ("/tickets/{t}/human/", {}),
        ("/tickets/{t}/ratings/", {"message_seq": "2", "helpful": "no"}),
        ("/signout/", {}),
    ],
)
def test_chat_posts_without_a_csrf_token_change_nothing(path, data):
    a, user_a = customer_with_login()
    ticket = own_ticket(a)
    client = signed_in(user_a, csrf=True)
    before = Ticket.objects.count()

    response = client.post(path.format(t=ticket.pk), data, HTTP_ACCEPT="application/json")

    assert response.status_code == 403
    assert Ticket.objects.count() == before
    assert not AnswerRating.objects.exists()
    assert client.get("/").status_code == 200  # still signed in


# --- API keys ----------------------------------------------------------------------------------
def _bearer(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **more}


def test_a_revoked_keys_rotation_successor_does_not_outlive_a_compromise_of_the_old_one():
    """Rotating hands out a new secret; revoking the old key afterwards (it leaked) must not
    leave the old secret working through its grace period."""
    owner = staff_factories.staff_user(approver=False)
    a, _ = customer_with_login()
    old = apikeys.api_key_create(name="int", scopes=["tickets"], owner=owner, customer=a)
    new = apikeys.api_key_rotate(api_key=old.api_key)
    apikeys.api_key_revoke(api_key=old.api_key)

    client = Client()
    assert client.get("/api/v1/tickets", headers=_bearer(old.plaintext)).status_code == 401
    assert client.get("/api/v1/tickets", headers=_bearer(new.plaintext)).status_code == 200


def test_a_key_whose_expiry_passed_during_rotation_grace_is_refused():
    owner = staff_factories.staff_user(approver=False)
    a, _ = customer_with_login()
    old = apikeys.api_key_create(name="int", scopes=["tickets"], owner=owner, customer=a)
    apikeys.api_key_rotate(
        api_key=old.api_key, now=timezone.now() - dt.timedelta(days=30), grace_seconds=60
    )
    assert Client().get("/api/v1/tickets", headers=_bearer(old.plaintext)).status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        "Bearer " + "a" * 12 + "." + "b" * 10_000,
        "Bearer " + "é" * 12 + ".x",
        "Bearer \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00.x",
        "Bearer " + "." * 50,
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ],
)
def test_hostile_authorization_headers_are_a_401(header):
    response = Client().get("/api/v1/tickets", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_an_integration_keys_idempotency_key_never_returns_a_ticket_it_did_not_open():
    owner = staff_factories.staff_user(approver=False)
    a, _ = customer_with_login()
    one = apikeys.api_key_create(name="one", scopes=["tickets"], owner=owner).plaintext
    two = apikeys.api_key_create(name="two", scopes=["tickets"], owner=owner).plaintext
    body = {"text": "Where is my invoice?", "customer": a.email}
    client = Client()

    first = client.post(
        "/api/v1/tickets",
        body,
        content_type="application/json",
        headers=_bearer(one, **{"Idempotency-Key": "same"}),
    )
    second = client.post(
        "/api/v1/tickets",
        body,
        content_type="application/json",
        headers=_bearer(two, **{"Idempotency-Key": "same"}),
    )

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    got = client.get(f"/api/v1/tickets/{first.json()['id']}", headers=_bearer(two))
    assert got.status_code == 404


def test_the_same_idempotency_key_for_another_customer_is_a_409():
    """The body names the customer: the same key with another customer is another body."""
    owner = staff_factories.staff_user(approver=False)
    a, _ = customer_with_login()
    b, _ = customer_with_login()
    key = apikeys.api_key_create(name="one", scopes=["tickets"], owner=owner).plaintext
    client = Client()

    first = client.post(
        "/api/v1/tickets",
        {"text": "Where is my invoice?", "customer": a.email},
        content_type="application/json",
        headers=_bearer(key, **{"Idempotency-Key": "k-1"}),
    )
    second = client.post(
        "/api/v1/tickets",
        {"text": "Where is my invoice?", "customer": b.email},
        content_type="application/json",
        headers=_bearer(key, **{"Idempotency-Key": "k-1"}),
    )

    assert first.status_code == 202
    assert second.status_code == 409
    assert Ticket.objects.count() == 1


# --- hostile input on the pages -----------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/help/%00/",
        "/help/caf%C3%A9/",
        "/signin/?next=%00",
        "/staff/login/?next=%00",
        "/signin/link/%00/",
        "/signin/link/" + "a" * 5000 + "/",
    ],
)
def test_hostile_page_paths_are_not_a_5xx(client, path):
    assert client.get(path).status_code < 500


def test_nul_in_a_chat_message_is_not_a_5xx():
    _, user_a = customer_with_login()
    response = signed_in(user_a).post(
        "/tickets/", {"text": "\x00\x00"}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 400
    assert not Ticket.objects.exists()


def test_an_article_body_cannot_run_script():
    memory_services.article_create(
        slug="xss-probe",
        title="<script>alert(1)</script>",
        section="<img src=x onerror=alert(1)>",
        body="[click](javascript:alert(1))\n\n<script>alert(2)</script>\n\n"
        "<a href=x onclick=y>z</a>",
        keywords="",
    )
    page = Client().get("/help/xss-probe/").content.decode()
    main = page.split("<main", 1)[1].split("</main>", 1)[0]

    assert "<script" not in main
    assert "<img" not in main
    assert "<a href=x" not in main
    assert 'href="javascript:' not in main


# --- rate limits ---------------------------------------------------------------------------------
@pytest.mark.usefixtures("redis_client")
def test_the_chat_counts_against_the_customers_rate_limit(settings):
    """The per-customer limit is the customer's, whichever door they use: the chat's own posts
    (each queues model work) may not go around the API's limit."""
    settings.API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE = 2
    _, user_a = customer_with_login()
    client = signed_in(user_a)

    statuses = [
        client.post("/tickets/", {"text": f"question {n}"}, HTTP_ACCEPT="application/json")
        for n in range(3)
    ]
    page = client.post("/human/", {})

    assert [r.status_code for r in statuses] == [202, 202, 429]
    assert 1 <= int(statuses[2]["Retry-After"]) <= 60
    assert "error" in statuses[2].json()
    assert page.status_code == 429
    assert Ticket.objects.count() == 2
    assert client.get("/api/v1/tickets").status_code == 429  # one bucket for the customer


@pytest.mark.parametrize("cookie", ["abcdefgh\x00ijkl", "é" * 40, "x" * 300, "a b c d e f g h"])
@pytest.mark.parametrize("path", ["/", "/signin/", "/staff/approvals/", "/help/anything/"])
def test_a_session_cookie_django_never_issued_is_signed_out_not_a_5xx(cookie, path):
    client = Client()
    client.cookies["sessionid"] = cookie

    response = client.get(path)

    assert response.status_code in (200, 302, 404)


# --- open event streams --------------------------------------------------------------------------
def _drain(response) -> bytes:
    async def go() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(go)()


@pytest.mark.usefixtures("redis_client")
def test_one_key_cannot_hold_more_than_its_share_of_event_streams(settings, monkeypatch):
    """Each open stream holds a Redis connection: a key (or a customer) opening streams without
    end would use up Redis' clients, which the broker and the budgets share."""
    settings.API_SSE_MAX_SECONDS = 0.3
    monkeypatch.setattr(events, "MAX_STREAMS_PER_READER", 2)
    owner = staff_factories.staff_user(approver=False)
    a, _ = customer_with_login()
    key = apikeys.api_key_create(name="k", scopes=["tickets"], owner=owner, customer=a).plaintext
    other = apikeys.api_key_create(name="o", scopes=["tickets"], owner=owner, customer=a).plaintext
    ticket = own_ticket(a)
    path = f"/api/v1/tickets/{ticket.pk}/events"
    client = Client()

    first = client.get(path, headers=_bearer(key))
    second = client.get(path, headers=_bearer(key))
    refused = client.get(path, headers=_bearer(key))
    another_key = client.get(path, headers=_bearer(other))

    assert [first.status_code, second.status_code, another_key.status_code] == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert int(refused["Retry-After"]) >= 1
    _drain(first)  # a stream that ends frees its place
    assert client.get(path, headers=_bearer(key)).status_code == 200


@pytest.mark.usefixtures("redis_client")
def test_one_customer_cannot_hold_more_than_their_share_of_chat_streams(monkeypatch):
    monkeypatch.setattr(events, "MAX_STREAMS_PER_READER", 2)
    monkeypatch.setattr(chat_views, "CHAT_STREAM_SECONDS", 0.3)
    a, user_a = customer_with_login()
    ticket = own_ticket(a)
    cookies = signed_in(user_a).cookies
    path = f"/tickets/{ticket.pk}/events/"

    async def go() -> tuple[list[int], int]:
        client = AsyncClient()
        client.cookies = cookies
        opened = [await client.get(path) for _ in range(3)]
        statuses = [r.status_code for r in opened]
        async for _chunk in opened[0].streaming_content:  # type: ignore[attr-defined]
            pass
        again = await client.get(path)
        await sync_to_async(connections.close_all)()
        return statuses, again.status_code

    statuses, again = async_to_sync(go)()

    assert statuses == [200, 200, 429]
    assert again == 200


# --- sign-in input ------------------------------------------------------------------------------
@pytest.mark.parametrize("email", ["a\x00@example.test", "ana@exa\x00mple.com", "é@ü.example"])
def test_a_hostile_sign_in_address_gets_the_same_answer_not_a_5xx(client, email):
    response = client.post("/signin/", {"email": email})

    assert response.status_code in (200, 400)


def test_the_sign_in_answer_is_the_same_for_a_customer_and_a_stranger(client):
    customer, _ = customer_with_login()

    known = client.post("/signin/", {"email": customer.email}).content.decode()
    stranger = client.post("/signin/", {"email": "nobody@example.test"}).content.decode()

    def normalised(page: str) -> str:
        page = page.replace(customer.email, "EMAIL").replace("nobody@example.test", "EMAIL")
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page)

    assert normalised(known) == normalised(stranger)


# --- refund decisions by API keys ------------------------------------------------------------
def test_a_staff_key_whose_owner_cannot_decide_is_a_403_and_decides_nothing():
    owner = staff_factories.staff_user(approver=False)
    key = apikeys.api_key_create(name="s", scopes=["staff"], owner=owner).plaintext
    request = staff_factories.proposed_request()

    response = Client().post(
        f"/api/v1/refund-requests/{request.pk}/approve",
        {},
        content_type="application/json",
        headers=_bearer(key),
    )

    assert response.status_code == 403
    request.refresh_from_db()
    assert request.state == "proposed"


def test_a_staff_key_loses_the_decision_with_its_owners_permission():
    owner = staff_factories.staff_user(approver=True)
    key = apikeys.api_key_create(name="s", scopes=["staff"], owner=owner).plaintext
    owner.user_permissions.clear()
    request = staff_factories.proposed_request()

    response = Client().post(
        f"/api/v1/refund-requests/{request.pk}/approve",
        {},
        content_type="application/json",
        headers=_bearer(key),
    )

    assert response.status_code == 403
    request.refresh_from_db()
    assert request.state == "proposed"


@pytest.mark.parametrize("via", ["api", "page"])
def test_a_withdrawn_request_cannot_be_approved(via):
    from billing import services as billing_services
    from billing.models import Refund

    approver = staff_factories.staff_user(approver=True)
    request = staff_factories.proposed_request()
    assert billing_services.refund_request_withdraw(refund_request=request)
    key = apikeys.api_key_create(name="s", scopes=["staff"], owner=approver).plaintext
    responses = {
        "api": lambda: Client().post(
            f"/api/v1/refund-requests/{request.pk}/approve",
            {},
            content_type="application/json",
            headers=_bearer(key),
        ),
        "page": lambda: signed_in(approver).post(f"/staff/approvals/{request.pk}/approve"),
    }

    response = responses[via]()

    assert response.status_code == 409
    request.refresh_from_db()
    assert request.state == "withdrawn"
    assert not Refund.objects.filter(refund_request=request).exists()


def test_revoking_a_rotated_key_also_ends_its_predecessors_grace():
    """An operator cutting an integration off revokes the key it uses now; the key it replaced
    (still in its rotation grace) must not keep the integration in."""
    owner = staff_factories.staff_user(approver=False)
    a, _ = customer_with_login()
    old = apikeys.api_key_create(name="int", scopes=["tickets"], owner=owner, customer=a)
    new = apikeys.api_key_rotate(api_key=old.api_key)

    assert apikeys.api_key_revoke(api_key=new.api_key)

    client = Client()
    assert client.get("/api/v1/tickets", headers=_bearer(new.plaintext)).status_code == 401
    assert client.get("/api/v1/tickets", headers=_bearer(old.plaintext)).status_code == 401


# --- CSRF on the API's session calls -------------------------------------------------------
def test_a_customer_sessions_api_writes_need_the_csrf_token():
    a, user_a = customer_with_login()
    ticket = own_ticket(a)
    client = signed_in(user_a, csrf=True)
    before = (Ticket.objects.count(), ticket.conversation.messages.count())

    opened = client.post("/api/v1/tickets", {"text": "hi"}, content_type="application/json")
    added = client.post(
        f"/api/v1/tickets/{ticket.pk}/messages", {"text": "hi"}, content_type="application/json"
    )

    assert [opened.status_code, added.status_code] == [403, 403]
    assert (Ticket.objects.count(), ticket.conversation.messages.count()) == before


def test_a_staff_sessions_refund_decision_needs_the_csrf_token():
    approver = staff_factories.staff_user(approver=True)
    request = staff_factories.proposed_request()
    client = signed_in(approver, csrf=True)

    api = client.post(
        f"/api/v1/refund-requests/{request.pk}/approve", {}, content_type="application/json"
    )
    page = client.post(f"/staff/approvals/{request.pk}/approve", {})

    assert [api.status_code, page.status_code] == [403, 403]
    request.refresh_from_db()
    assert request.state == "proposed"


def test_only_the_assistants_answers_offer_a_rating_form():
    """A staff reply cannot be rated (ratings are of the assistant's answers, by lane and
    release): offering the form there only ends in an error."""
    a, user_a = customer_with_login()
    ticket = staff_factories.ticket(
        owner=a,
        messages=(("customer", "help"), ("assistant", "An answer."), ("staff", "A person here.")),
    )

    page = signed_in(user_a).get(f"/tickets/{ticket.pk}/").content.decode()

    forms = re.findall(r'name="message_seq" value="(\d+)"', page)
    assert forms == ["2"]
