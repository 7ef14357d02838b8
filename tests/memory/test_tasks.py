"""Memory's tasks do their service's work and are safe to run twice."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from memory import selectors, services, tasks
from memory.models import Article, SemanticCacheEntry

MODEL = "claude-haiku-5-5"  # the model that wrote the cached answers


def test_ingest_task_twice_indexes_once(db):
    first = tasks.ingest_helpcenter()
    second = tasks.ingest_helpcenter()

    assert first > 0
    assert second == 0
    assert Article.objects.count() >= 25


def test_purge_task_removes_only_expired_entries(helpcenter):
    keep = services.semantic_cache_store(
        answer_model=MODEL,
        question="How do I export my data?",
        answer="CSV or JSON.",
        sources=[],
        prompt_version="p1",
        kb_version=selectors.kb_version_get(),
    )
    gone = services.semantic_cache_store(
        answer_model=MODEL,
        question="What are your support hours?",
        answer="Mon-Fri.",
        sources=[],
        prompt_version="p1",
        kb_version=selectors.kb_version_get(),
    )
    SemanticCacheEntry.objects.filter(id=gone.id).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    assert tasks.purge_semantic_cache() == 1
    assert tasks.purge_semantic_cache() == 0
    assert list(SemanticCacheEntry.objects.values_list("id", flat=True)) == [keep.id]
