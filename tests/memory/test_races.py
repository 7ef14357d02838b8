"""Concurrent writers: ingestion runs, cache stores and memory adds racing on real Postgres."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connections

from memory import selectors, services
from memory.models import Article, Chunk, CustomerMemory, SemanticCacheEntry

pytestmark = pytest.mark.django_db(transaction=True)


def race(n: int, work: Callable[[], object]) -> list[BaseException]:
    """Run `work` in `n` threads released together; return the exceptions raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            work()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_ingests_index_each_article_once_and_bump_the_version_once(trial):
    before = selectors.kb_version_get()

    errors = race(3, services.helpcenter_ingest)

    assert errors == []
    articles = Article.objects.count()
    assert articles >= 25
    assert Chunk.objects.values("article_id").distinct().count() == articles
    assert selectors.kb_version_get() == before + 1


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_stores_of_one_answer_keep_one_entry(trial):
    services.helpcenter_ingest()

    errors = race(
        4,
        lambda: services.semantic_cache_store(
            question="How do I export my data?",
            answer="As CSV or JSON, at any time.",
            sources=[{"slug": "exporting-your-data", "title": "Exporting your data (CSV or JSON)"}],
            prompt_version="faq@race",
            kb_version=selectors.kb_version_get(),
        ),
    )

    assert errors == []
    assert SemanticCacheEntry.objects.count() == 1


def test_concurrent_adds_of_one_fact_keep_one_memory(customer):
    errors = race(
        4, lambda: services.customer_memory_add(customer=customer, text="Prefers invoices in EUR")
    )

    assert errors == []
    assert CustomerMemory.objects.filter(customer=customer).count() == 1
