"""Staff manage the help center through the REST API and the admin; non-staff cannot."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from memory import selectors
from memory.models import Article, Chunk, KnowledgeBaseState

NEW = {
    "slug": "gift-cards",
    "title": "Gift cards",
    "section": "Payments",
    "body": "Ledgerly does not sell gift cards.",
    "keywords": "voucher, gift card",
}


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_user("staffer", password="pw-staff-123", is_staff=True)
    client.force_login(user)
    return client


@pytest.fixture
def customer_client(db):
    user = get_user_model().objects.create_user("someone", password="pw-user-123")
    logged_in = Client()
    logged_in.force_login(user)
    return logged_in


@pytest.fixture
def anonymous_client():
    return Client()


def _version() -> int:
    return KnowledgeBaseState.objects.get(id=1).version


def test_staff_create_update_reindex_and_delete_an_article(staff_client, helpcenter):
    v0 = _version()

    created = staff_client.post("/api/v1/helpcenter/articles", NEW, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["indexed"] is True
    assert selectors.passages_search(query="can I buy a voucher or gift card", k=1)[0].slug == (
        "gift-cards"
    )

    updated = staff_client.patch(
        "/api/v1/helpcenter/articles/gift-cards",
        {"body": "Ledgerly does not sell gift cards or vouchers."},
        content_type="application/json",
    )
    assert updated.status_code == 200
    assert "vouchers" in Chunk.objects.get(article__slug="gift-cards").text

    reindexed = staff_client.post("/api/v1/helpcenter/articles/gift-cards/reindex")
    assert reindexed.json()["chunks_written"] == 1

    deleted = staff_client.delete("/api/v1/helpcenter/articles/gift-cards")
    assert deleted.status_code == 204
    assert not Article.objects.filter(slug="gift-cards").exists()
    assert not Chunk.objects.filter(article__slug="gift-cards").exists()
    assert _version() == v0 + 4


def test_an_unchanged_update_does_no_work(staff_client, helpcenter):
    v0 = _version()

    response = staff_client.patch(
        "/api/v1/helpcenter/articles/refund-timing", {}, content_type="application/json"
    )

    assert response.status_code == 200
    assert _version() == v0


def test_a_duplicate_slug_is_a_conflict(staff_client, helpcenter):
    response = staff_client.post(
        "/api/v1/helpcenter/articles",
        {**NEW, "slug": "refund-timing"},
        content_type="application/json",
    )

    assert response.status_code == 409


def test_staff_can_search_and_read_cache_stats(staff_client, helpcenter):
    search = staff_client.get("/api/v1/helpcenter/search", {"q": "support hours"})
    stats = staff_client.get("/api/v1/helpcenter/semantic-cache/stats")

    assert search.json()[0]["slug"] == "contacting-support"
    assert stats.json()["lookups"] == 0


def test_ingest_endpoint_is_idempotent(staff_client, helpcenter):
    response = staff_client.post("/api/v1/helpcenter/ingest")

    assert response.json()["created"] == []
    assert response.json()["chunks_written"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/helpcenter/articles"),
        ("post", "/api/v1/helpcenter/articles"),
        ("delete", "/api/v1/helpcenter/articles/refund-timing"),
        ("post", "/api/v1/helpcenter/articles/refund-timing/reindex"),
    ],
)
@pytest.mark.parametrize(("who", "status"), [("anonymous_client", 401), ("customer_client", 403)])
def test_only_staff_may_use_the_api(request, helpcenter, method, path, who, status):
    not_staff = request.getfixturevalue(who)

    response = getattr(not_staff, method)(path)

    assert response.status_code == status
    assert Article.objects.filter(slug="refund-timing").exists()


def test_admin_saves_articles_through_the_services(admin_client, helpcenter):
    v0 = _version()

    response = admin_client.post(
        "/admin/memory/article/add/",
        {
            "slug": "gift-cards",
            "title": "Gift cards",
            "section": "Payments",
            "keywords": "voucher",
            "body": "No gift cards.",
        },
    )

    assert response.status_code == 302
    assert Chunk.objects.filter(article__slug="gift-cards").count() == 1
    assert _version() == v0 + 1


@pytest.mark.parametrize(
    "url",
    [
        "/admin/memory/article/",
        "/admin/memory/article/{article}/change/",
        "/admin/memory/chunk/",
        "/admin/memory/customermemory/",
        "/admin/memory/conversation/",
        "/admin/memory/semanticcacheentry/",
        "/admin/memory/semanticcachelookup/",
    ],
)
def test_admin_pages_render(admin_client, helpcenter, url):
    article = Article.objects.get(slug="refund-timing")

    assert admin_client.get(url.format(article=article.pk)).status_code == 200
