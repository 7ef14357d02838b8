"""The embedding adapter: unit vectors, batching, a Postgres cache keyed by content and model,
providers swappable behind one Protocol, and nothing fetched from the network."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured

from memory import embeddings
from memory.models import EmbeddingCacheEntry


def _count_provider_calls(monkeypatch) -> list[int]:
    """Record the batch size of every call that reaches the provider."""
    provider = embeddings.get_provider()
    calls: list[int] = []
    real = provider.embed

    def counting(texts):
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(provider, "embed", counting)
    return calls


def test_vectors_are_unit_length_and_settings_sized(db, settings):
    vectors = embeddings.embed_texts(["How do I get a refund?", "Which cards do you accept?"])

    assert vectors.shape == (2, settings.EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_each_text_is_embedded_once_per_model_and_cached_in_postgres(db, monkeypatch):
    calls = _count_provider_calls(monkeypatch)

    first = embeddings.embed_texts(["alpha refund", "beta invoice", "alpha refund"])
    second = embeddings.embed_texts(["beta invoice", "alpha refund"])

    assert calls == [2]
    assert np.allclose(first[0], second[1])
    assert np.allclose(first[0], first[2])
    assert set(EmbeddingCacheEntry.objects.values_list("model_id", flat=True)) == {
        embeddings.get_provider().model_id
    }
    assert EmbeddingCacheEntry.objects.count() == 2


def test_misses_are_embedded_in_batches_of_the_configured_size(db, monkeypatch, settings):
    settings.EMBEDDING_BATCH_SIZE = 3
    calls = _count_provider_calls(monkeypatch)

    embeddings.embed_texts([f"text number {i}" for i in range(8)])

    assert calls == [3, 3, 2]


def test_a_second_provider_serves_callers_unchanged_with_its_own_cache_rows(db, settings):
    default_model_id = embeddings.get_provider().model_id
    default = embeddings.embed_texts(["refund window"])
    settings.EMBEDDING_PROVIDER = "hashing"

    hashing = embeddings.embed_texts(["refund window"])

    assert hashing.shape == default.shape
    assert not np.allclose(hashing, default)
    assert sorted(EmbeddingCacheEntry.objects.values_list("model_id", flat=True)) == sorted(
        [f"hashing-uni-bigram-{settings.EMBEDDING_DIM}", default_model_id]
    )
    assert default_model_id != f"hashing-uni-bigram-{settings.EMBEDDING_DIM}"


def test_a_provider_dimension_other_than_the_setting_is_refused(settings):
    settings.EMBEDDING_DIM = 300

    with pytest.raises(ImproperlyConfigured):
        embeddings.get_provider()


def test_wordllama_loads_with_the_network_blocked(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the embedding model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)

    provider = embeddings.WordLlamaProvider()

    assert provider.embed(["offline"]).shape == (1, 256)
