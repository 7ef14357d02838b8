"""Bad input gets a clear 4xx with the uniform body and changes nothing; the API is safe by
default (every operation declares its scope); rate limits answer 429 with Retry-After."""

from __future__ import annotations

import pytest
from django.test import Client

from ledgerly.api import api
from memory.models import Article
from support.api_auth import DenyAll
from support.models import AuditEntry, Ticket
from tests.api.conftest import bearer, error_code, post_json

pytestmark = pytest.mark.django_db(transaction=True)

ARTICLE = {
    "slug": "gift-cards",
    "title": "Gift cards",
    "section": "Payments",
    "body": "Ledgerly does not sell gift cards.",
}


def test_the_api_denies_by_default_and_every_operation_declares_one_scope():
    schema = api.get_openapi_schema()
    operations = [
        (method, path, op) for path, ops in schema["paths"].items() for method, op in ops.items()
    ]

    assert isinstance(api.auth, list)
    assert isinstance(api.auth[0], DenyAll)
    assert len(operations) >= 15
    for method, path, op in operations:
        assert op["x-required-scope"] in ("tickets", "staff"), (method, path)
        assert op["security"] == [
            {"ApiKey": [op["x-required-scope"]]},
            {"Session": [op["x-required-scope"]]},
        ], (method, path)
        assert "429" in {str(code) for code in op["responses"]}, (method, path)


def test_openapi_and_docs_are_served_offline(api_client):
    schema = api_client.get("/api/v1/openapi.json")
    docs = api_client.get("/api/docs")

    assert schema.status_code == 200
    assert schema.json()["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert docs.status_code == 200
    assert "/static/ninja/swagger-ui" in docs.content.decode()
    assert "cdn" not in docs.content.decode().lower()
    assert api_client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/api/v1/nothing-here", 404, "not_found"),
        ("get", "/api/elsewhere", 404, "not_found"),
        ("delete", "/api/v1/tickets", 405, "method_not_allowed"),
        ("get", "/api/v1/tickets/99999999999999999999999", 422, "validation_error"),
        ("get", "/api/v1/tickets/0", 422, "validation_error"),
        ("get", "/api/v1/tickets/123456", 404, "not_found"),
        ("get", "/api/v1/refund-requests", 403, "forbidden"),
    ],
)
def test_errors_have_the_uniform_body(api_client, make_key, customer_a, method, path, status, code):
    key = make_key("tickets", customer=customer_a)
    response = getattr(api_client, method)(path, headers=bearer(key))
    assert response.status_code == status
    assert error_code(response) == code


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer 0123456789ab.not-the-secret"},
        {"Authorization": "Basic dXNlcjpwdw=="},
    ],
)
def test_missing_or_bad_credentials_are_a_401(api_client, headers):
    response = api_client.get("/api/v1/tickets", headers=headers)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_malformed_json_is_a_400_and_a_wrong_shape_a_422(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    broken = api_client.post(
        "/api/v1/tickets", "{not json", content_type="application/json", headers=bearer(key)
    )
    wrong = post_json(api_client, "/api/v1/tickets", ["text"], key)
    empty = post_json(api_client, "/api/v1/tickets", {"text": "   "}, key)

    assert (broken.status_code, error_code(broken)) == (400, "bad_request")
    assert (wrong.status_code, error_code(wrong)) == (422, "validation_error")
    assert (empty.status_code, error_code(empty)) == (422, "validation_error")
    assert Ticket.objects.count() == 0


def test_a_body_over_the_upload_limit_is_a_413(api_client, make_key, customer_a, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    key = make_key("tickets", customer=customer_a)

    response = post_json(api_client, "/api/v1/tickets", {"text": "x" * 5000}, key)

    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
    assert Ticket.objects.count() == 0


def test_nul_characters_are_a_422_and_store_nothing(api_client, make_key, customer_a):
    tickets, staff = make_key("tickets", customer=customer_a), make_key("staff")

    in_ticket = post_json(api_client, "/api/v1/tickets", {"text": "hello\x00there"}, tickets)
    in_article = post_json(
        api_client, "/api/v1/helpcenter/articles", {**ARTICLE, "body": "a\x00b"}, staff
    )
    in_search = api_client.get("/api/v1/helpcenter/search", {"q": "a\x00"}, headers=bearer(staff))

    assert [r.status_code for r in (in_ticket, in_article, in_search)] == [422, 422, 422]
    assert Ticket.objects.count() == 0
    assert not Article.objects.filter(slug="gift-cards").exists()


@pytest.mark.parametrize("q", ["", "   "])
def test_an_empty_search_is_a_422(api_client, make_key, q):
    response = api_client.get(
        "/api/v1/helpcenter/search", {"q": q}, headers=bearer(make_key("staff"))
    )
    assert response.status_code == 422
    assert error_code(response) == "validation_error"


@pytest.mark.parametrize("slug", ["../../etc", "UPPER", "-lead", "a" * 81, "sp ace", ""])
def test_a_bad_slug_is_a_422(api_client, make_key, slug):
    response = post_json(
        api_client, "/api/v1/helpcenter/articles", {**ARTICLE, "slug": slug}, make_key("staff")
    )
    assert response.status_code == 422
    assert not Article.objects.filter(slug=slug).exists()


def test_a_path_like_slug_in_the_url_is_not_found(api_client, make_key):
    response = api_client.get(
        "/api/v1/helpcenter/articles/..%2F..%2Fetc", headers=bearer(make_key("staff"))
    )
    assert response.status_code in (404, 422)
    assert error_code(response) in ("not_found", "validation_error")


def test_article_writes_through_the_api_are_audited_with_the_key(api_client, make_key):
    key = make_key("staff")
    prefix = key.split(".")[0]

    created = post_json(api_client, "/api/v1/helpcenter/articles", ARTICLE, key)
    edited = api_client.patch(
        "/api/v1/helpcenter/articles/gift-cards",
        {"title": "Gift cards and vouchers"},
        content_type="application/json",
        headers=bearer(key),
    )
    deleted = api_client.delete("/api/v1/helpcenter/articles/gift-cards", headers=bearer(key))

    assert [created.status_code, edited.status_code, deleted.status_code] == [201, 200, 204]
    entries = list(AuditEntry.objects.order_by("created_at", "id"))
    assert [e.action for e in entries] == ["article.create", "article.edit", "article.delete"]
    assert {e.via for e in entries} == {f"api_key:{prefix}"}
    assert {e.target for e in entries} == {"article:gift-cards"}


def test_a_failed_write_leaves_no_audit_entry(api_client, make_key):
    response = api_client.delete(
        "/api/v1/helpcenter/articles/no-such", headers=bearer(make_key("staff"))
    )
    assert response.status_code == 404
    assert AuditEntry.objects.count() == 0


# --- rate limits ----------------------------------------------------------------------------------
def test_over_the_per_key_limit_is_a_429_with_retry_after(
    api_client, make_key, customer_a, settings, redis_client
):
    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 3
    settings.API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE = 1000
    key = make_key("tickets", customer=customer_a)

    statuses = [
        api_client.get("/api/v1/tickets", headers=bearer(key)).status_code for _ in range(4)
    ]
    limited = api_client.get("/api/v1/tickets", headers=bearer(key))

    assert statuses == [200, 200, 200, 429]
    assert limited.status_code == 429
    assert error_code(limited) == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    other = make_key("tickets", customer=customer_a)  # another key has its own bucket
    assert api_client.get("/api/v1/tickets", headers=bearer(other)).status_code == 200


def test_the_per_customer_limit_counts_every_key_and_integration(
    api_client, make_key, customer_a, customer_b, settings, redis_client
):
    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 1000
    settings.API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE = 2
    bound_one = make_key("tickets", customer=customer_a)
    bound_two = make_key("tickets", customer=customer_a)
    integration = make_key("tickets")

    first = api_client.get("/api/v1/tickets", headers=bearer(bound_one))
    second = api_client.get("/api/v1/tickets", headers=bearer(bound_two))
    for_a = post_json(
        api_client, "/api/v1/tickets", {"text": "hi", "customer": customer_a.email}, integration
    )
    for_b = post_json(
        api_client, "/api/v1/tickets", {"text": "hi", "customer": customer_b.email}, integration
    )

    assert [first.status_code, second.status_code] == [200, 200]
    assert for_a.status_code == 429
    assert int(for_a["Retry-After"]) >= 1
    assert for_b.status_code == 202
    assert list(Ticket.objects.values_list("customer_id", flat=True)) == [customer_b.pk]


def test_a_session_without_csrf_changes_nothing(plain_staff, make_key):
    client = Client(enforce_csrf_checks=True)
    client.force_login(plain_staff)
    response = client.post("/api/v1/helpcenter/articles", ARTICLE, content_type="application/json")
    assert response.status_code == 403
    assert error_code(response) == "csrf_failed"
    assert not Article.objects.filter(slug="gift-cards").exists()


@pytest.mark.parametrize("cookie", ["abc\x00defghij", "x" * 300, "not a session"])
def test_a_session_cookie_django_never_issued_is_anonymous(api_client, cookie):
    api_client.cookies["sessionid"] = cookie
    response = api_client.get("/api/v1/tickets")
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
