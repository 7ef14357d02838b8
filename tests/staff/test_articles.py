"""Help-center articles on the staff pages: edit (re-indexed, knowledge-base version bumped),
re-index, bad input refused, unknown or path-like slugs not found."""

from __future__ import annotations

import pytest

from memory import selectors as memory_selectors
from memory import services as memory_services
from memory.models import Article, Chunk
from support.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def article(redis_client) -> Article:
    return memory_services.article_create(
        slug="sepa-payments",
        title="Paying by SEPA Direct Debit",
        section="Payments",
        body="# SEPA\n\nEUR accounts can pay by SEPA Direct Debit.",
        keywords="sepa, direct debit",
    )


def _form(article: Article, **changes: str) -> dict[str, str]:
    fields = {f: getattr(article, f) for f in ("title", "section", "body", "keywords")}
    return {**fields, **changes}


def test_the_list_and_the_edit_page_show_the_article(viewer_client, article):
    listing = viewer_client.get("/staff/articles/").content.decode()
    assert 'data-testid="article-row-sepa-payments"' in listing
    page = viewer_client.get("/staff/articles/sepa-payments/").content.decode()
    assert "EUR accounts can pay by SEPA Direct Debit." in page


def test_saving_a_change_reindexes_and_is_audited(viewer, viewer_client, article):
    version = memory_selectors.kb_version_get()
    body = "# SEPA\n\nEUR accounts can pay by SEPA Direct Debit; mandates take 2 days."
    url = "/staff/articles/sepa-payments/"
    response = viewer_client.post(url, _form(article, body=body))
    assert response.status_code == 302
    saved = Article.objects.get(slug="sepa-payments")
    assert saved.body == body
    assert saved.indexed_hash == saved.content_hash
    assert any("mandates take 2 days" in c.text for c in Chunk.objects.filter(article=saved))
    assert memory_selectors.kb_version_get() == version + 1
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target, entry.via) == (
        viewer,
        "article.edit",
        "article:sepa-payments",
        f"page:{url}",
    )
    assert entry.detail["changed"] is True


def test_reindexing_is_audited_with_what_it_wrote(viewer, viewer_client, article):
    url = "/staff/articles/sepa-payments/reindex"
    assert viewer_client.post(url).status_code == 302
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.via) == ("article.reindex", viewer, f"page:{url}")
    assert entry.detail["chunks_written"] == Chunk.objects.filter(article=article).count() > 0


@pytest.mark.parametrize("field", ["title", "section", "body"])
def test_an_empty_required_field_is_refused_and_nothing_changes(viewer_client, article, field):
    response = viewer_client.post("/staff/articles/sepa-payments/", _form(article, **{field: " "}))
    assert response.status_code == 400
    assert Article.objects.get(pk=article.pk).content_hash == article.content_hash
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "/staff/articles/no-such-article/",
        "/staff/articles/..%2F..%2Fetc/",
        "/staff/articles/../../etc/",
        "/staff/articles/no-such-article/reindex",
    ],
)
def test_unknown_or_path_like_slugs_are_not_found(viewer_client, url):
    assert viewer_client.get(url).status_code in (404, 405)
    assert viewer_client.post(url, {"title": "x"}).status_code == 404
