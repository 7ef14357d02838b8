"""The MiniLM provider (all-MiniLM-L6-v2 in numpy, EMBEDDING_PROVIDER=minilm, 384-d).

data/minilm_reference.json holds the vectors sentence-transformers 6.2.0 on torch 2.13.0+cpu
computes from the same bundled model (made by data/make_minilm_reference.py in a scratch venv;
torch is never a project dependency); the numpy forward pass must reproduce them.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from memory.minilm import MiniLMEncoder


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_reproduces_the_sentence_transformers_reference(encoder):
    reference = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
    expected = np.array(reference["vectors"], dtype=np.float32)

    got = encoder.encode(reference["texts"])

    assert got.shape == expected.shape == (len(reference["texts"]), 384)
    assert np.abs(got - expected).max() < 1e-5
    assert (got * expected).sum(axis=1).min() > 0.99999


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
