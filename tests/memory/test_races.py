"""Concurrent writers: ingestion runs, cache stores and memory adds racing on real Postgres."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import pytest
from django.db import connections, transaction

from memory import selectors, services
from memory.models import Article, Chunk, CustomerMemory, SemanticCacheEntry

MODEL = "claude-haiku-5-5"  # the model that wrote the cached answers

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
            answer_model=MODEL,
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


def _yield_between_bytecodes(code: CodeType) -> Any:
    """A trace function that lets other threads run between any two bytecodes of `code`:
    what a free-threaded build, or an unlucky switch, can do at any of them."""

    def local(frame: FrameType, event: str, arg: object) -> object:
        if event == "opcode":
            time.sleep(0.0002)
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> object:
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes = True
        return local

    return tracer


def test_readers_of_two_help_centers_at_once_each_get_their_own_public_facts():
    """Celery's threads pool: threads whose transactions see different help centers (one has
    an uncommitted article) ask for the public facts at once, so the process-wide memo flips
    between two digests while the others read it. Each must get its own view's facts; the
    memo was a dict cleared and refilled, and a reader could find its key gone (KeyError)."""
    Article.objects.create(
        slug="public", title="Public", section="Test", body="Refunds in 14 days.", content_hash="a"
    )
    rounds = 15
    tracer = _yield_between_bytecodes(services._help_center_public.__code__)

    def committed_view() -> None:
        for _ in range(rounds):
            assert "zanzibarquux" not in services._help_center_public().words

    def uncommitted_view() -> None:
        with transaction.atomic():
            Article.objects.create(
                slug="race-only", title="Race", section="T", body="zanzibarquux", content_hash="b"
            )
            for _ in range(rounds):
                assert "zanzibarquux" in services._help_center_public().words
            transaction.set_rollback(True)

    views = iter([committed_view, uncommitted_view] * 2)
    lock = threading.Lock()

    def work() -> None:
        with lock:
            view = next(views)
        sys.settrace(tracer)
        try:
            view()
        finally:
            sys.settrace(None)

    errors = race(4, work)

    assert errors == []
    assert not Article.objects.filter(slug="race-only").exists()
