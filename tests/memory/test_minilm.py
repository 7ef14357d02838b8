"""The MiniLM provider (numpy all-MiniLM-L6-v2) and the migration that made it the default.

Checked once against the reference in a scratch venv outside the project (torch 2.13.0+cpu,
sentence-transformers 6.2.0, same bundled model dir; torch is never a project dependency): on
218 texts (the 206 benchmark questions, an empty string, a 600-token text, accents) the numpy
vectors differ by at most 2.4e-7 per element (min cosine 0.9999999) and pairwise similarities by
at most 7.2e-7. Here the encoder is held to the properties that matter to callers.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from memory.minilm import MiniLMEncoder


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_unit_vectors_of_384_and_independent_of_the_batch(encoder):
    texts = ["How do I get a refund?", "a much longer sentence about invoices " * 20, "VAT"]

    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])

    assert together.shape == (3, 384)
    assert together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Padding to the batch's longest text must not change a text's vector.
    assert np.allclose(together, alone, atol=1e-5)


def test_paraphrases_score_far_above_unrelated_sentences(encoder):
    pairs = [
        (
            "I was charged twice for the same invoice",
            "My card got billed two times for one invoice",
        ),
        (
            "How do I get a refund on my monthly plan?",
            "Can I get my money back on a monthly subscription?",
        ),
        ("How do I download an invoice as a PDF?", "where can i get a pdf copy of my bill"),
    ]
    unrelated = "The weather in Paris is lovely today"
    for a, b in pairs:
        va, vb, vu = encoder.encode([a, b, unrelated])
        assert float(va @ vb) > 0.5
        assert float(va @ vu) < 0.15
        assert float(va @ vb) - float(va @ vu) > 0.45


def test_long_texts_are_truncated_to_256_tokens(encoder):
    long = "refund " * 600
    assert len(encoder._tokenizer.encode(long).ids) == 256
    assert encoder.encode([long]).shape == (1, 384)


def test_loads_with_the_network_blocked(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the MiniLM provider tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert MiniLMEncoder().encode(["offline"]).shape == (1, 384)


def _migrate(target: tuple[str, str]):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


def _dims(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT vector_dims(embedding) FROM {table} LIMIT 1")  # noqa: S608
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_migration_0005_re_embeds_chunks_and_memories_and_drops_cached_answers(encoder):
    from memory.embeddings import WordLlamaProvider
    from memory.knowledge import passage_embedding_text

    old = WordLlamaProvider(dim=256)
    try:
        apps = _migrate(("memory", "0004_conversations_and_customer_memory"))
        Article = apps.get_model("memory", "Article")
        Chunk = apps.get_model("memory", "Chunk")
        Customer = apps.get_model("billing", "Customer")
        CustomerMemory = apps.get_model("memory", "CustomerMemory")
        SemanticCacheEntry = apps.get_model("memory", "SemanticCacheEntry")
        article = Article.objects.create(
            slug="refunds",
            title="Refunds",
            section="Billing",
            body="...",
            keywords="money back",
            content_hash="h",
            indexed_hash="h",
            indexed_model_id=old.model_id,
        )
        chunk_text = passage_embedding_text(
            title="Refunds",
            keywords="money back",
            heading="Window",
            text="14 days on monthly plans.",
        )
        Chunk.objects.create(
            article=article,
            ordinal=0,
            heading="Window",
            text="14 days on monthly plans.",
            embedding=old.embed([chunk_text])[0],
        )
        customer = Customer.objects.create(
            ref="cus_mig",
            email="mig@example.com",
            name="Mig",
            country="DE",
            currency="EUR",
            created_at=timezone.now(),
        )
        fact = "prefers invoices in EUR"
        CustomerMemory.objects.create(
            customer=customer,
            text=fact,
            content_hash="f",
            embedding=old.embed([fact])[0],
            created_at=timezone.now(),
        )
        SemanticCacheEntry.objects.create(
            question="q",
            question_hash="q",
            embedding=old.embed(["q"])[0],
            answer="a",
            prompt_version="p",
            kb_version=1,
            model_id=old.model_id,
            expires_at=timezone.now(),
        )

        apps = _migrate(("memory", "0005_embeddings_minilm_384"))

        assert _dims("memory_chunk") == 384
        assert _dims("memory_customermemory") == 384
        chunk = apps.get_model("memory", "Chunk").objects.get()
        memory = apps.get_model("memory", "CustomerMemory").objects.get()
        assert np.allclose(chunk.embedding, encoder.encode([chunk_text])[0], atol=1e-5)
        assert np.allclose(memory.embedding, encoder.encode([fact])[0], atol=1e-5)
        assert apps.get_model("memory", "Article").objects.get().indexed_model_id == (
            "all-minilm-l6-v2"
        )
        assert not apps.get_model("memory", "SemanticCacheEntry").objects.exists()

        # Backwards: wordllama's 256-d vectors again.
        apps = _migrate(("memory", "0004_conversations_and_customer_memory"))
        assert _dims("memory_customermemory") == 256
        memory = apps.get_model("memory", "CustomerMemory").objects.get()
        assert np.allclose(memory.embedding, old.embed([fact])[0], atol=1e-5)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
