"""Ingesting the help center: chunks with an HNSW index, idempotence, versioning, retrieval."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from memory import selectors, services
from memory.knowledge import ArticleSource, load_directory
from memory.models import Article, Chunk, EmbeddingCacheEntry


def test_ingest_stores_every_article_with_embedded_chunks(helpcenter):
    files = load_directory()
    assert sorted(helpcenter.created) == sorted(a.slug for a in files)
    assert Article.objects.count() == len(files)
    assert Chunk.objects.filter(embedding__isnull=False, search_vector__isnull=False).count() == (
        helpcenter.chunks_written
    )
    assert helpcenter.chunks_written >= len(files)


def test_chunk_embeddings_have_a_cosine_hnsw_index(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'memory_chunk_embedding_hnsw'"
        )
        (definition,) = cursor.fetchone()
    assert "USING hnsw" in definition
    assert "vector_cosine_ops" in definition


def test_reingesting_unchanged_articles_does_no_work(helpcenter):
    chunk_ids = sorted(Chunk.objects.values_list("id", flat=True))
    cache_rows = EmbeddingCacheEntry.objects.count()

    again = services.helpcenter_ingest()

    assert (again.created, again.updated, again.chunks_written) == ([], [], 0)
    assert again.kb_version == helpcenter.kb_version
    assert sorted(Chunk.objects.values_list("id", flat=True)) == chunk_ids
    assert EmbeddingCacheEntry.objects.count() == cache_rows


def test_a_changed_article_is_reindexed_and_bumps_the_kb_version(helpcenter):
    sources = load_directory()
    changed = [
        ArticleSource(s.slug, s.title, s.section, s.body + "\n\nA new closing line.")
        if s.slug == "refund-timing"
        else s
        for s in sources
    ]

    report = services.helpcenter_ingest(sources=changed)

    assert report.updated == ["refund-timing"]
    assert report.kb_version == helpcenter.kb_version + 1
    assert selectors.kb_version_get() == report.kb_version
    assert "A new closing line." in " ".join(
        Chunk.objects.filter(article__slug="refund-timing").values_list("text", flat=True)
    )


def test_ingest_command_is_idempotent(db, capsys):
    call_command("ingest_helpcenter")
    first = capsys.readouterr().out
    call_command("ingest_helpcenter")
    second = capsys.readouterr().out

    assert "0 unchanged" in first
    assert "0 created, 0 updated" in second
    assert "0 chunks written" in second


def test_prune_deletes_articles_without_a_file(helpcenter):
    services.article_create(slug="staff-note", title="A staff note", section="Misc", body="Hello.")

    kept = services.helpcenter_ingest()
    pruned = services.helpcenter_ingest(prune=True)

    assert kept.deleted == []
    assert pruned.deleted == ["staff-note"]
    assert not Article.objects.filter(slug="staff-note").exists()


@pytest.mark.parametrize(
    ("question", "slug"),
    [
        ("How long do I have to get my money back on a monthly plan?", "refunds-monthly-plans"),
        ("can i pay with sepa direct debit", "sepa-direct-debit"),
        ("What are your support hours?", "contacting-support"),
        ("I was charged twice for the same invoice", "duplicate-charges"),
    ],
)
def test_retrieval_returns_the_right_article_with_slug_title_and_score(helpcenter, question, slug):
    passages = selectors.passages_search(query=question, k=3)

    assert slug in [p.slug for p in passages]
    assert all(p.title and p.text for p in passages)
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert len({p.slug for p in passages}) == len(passages)


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_both_retrieval_modes_answer(helpcenter, mode):
    passages = selectors.passages_search(query="download invoice as PDF", k=3, mode=mode)

    assert passages[0].slug == "invoices-and-pdf"


def test_documents_block_cites_slug_and_title(helpcenter):
    passages = selectors.passages_search(query="VAT reverse charge", k=2)

    block = selectors.passages_as_documents(passages)

    assert block.startswith('<documents><document index="1"><source>')
    assert f"<title>{passages[0].title}</title>" in block
