"""Reads from memory: help-center retrieval, the KB version, customer memory recall.

What leaves the app is a frozen dataclass (`RetrievedPassage`, `RecalledMemory`) or a model
instance to be read, never a queryset to be filtered further by a caller.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Avg, Count
from django.utils import timezone

from memory import embeddings
from memory.models import (
    Article,
    Chunk,
    Conversation,
    CustomerMemory,
    KnowledgeBaseState,
    SemanticCacheLookup,
)

if TYPE_CHECKING:
    from billing.models import Customer


@dataclass(frozen=True)
class RetrievedPassage:
    slug: str
    title: str
    section: str
    heading: str
    text: str
    score: float  # cosine similarity for "vector", fused RRF score for "hybrid"
    chunk_id: int


def kb_version_get() -> int:
    """The current knowledge-base version (1 before anything was ingested)."""
    version = KnowledgeBaseState.objects.filter(id=1).values_list("version", flat=True).first()
    return version or 1


def article_get_by_slug(*, slug: str) -> Article | None:
    return Article.objects.filter(slug=slug).first()


def articles_list() -> list[Article]:
    return list(Article.objects.order_by("section", "slug"))


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


def set_ef_search(cursor: object) -> None:
    # SET LOCAL lasts to the end of the surrounding transaction only.
    cursor.execute(  # type: ignore[attr-defined]
        "SELECT set_config('hnsw.ef_search', %s, true)", [str(settings.MEMORY_HNSW_EF_SEARCH)]
    )


_VECTOR_SQL = """
    SELECT c.id, 1 - (c.embedding <=> %s::vector) AS similarity
    FROM memory_chunk c
    ORDER BY c.embedding <=> %s::vector
    LIMIT %s
"""

_FTS_SQL = """
    SELECT c.id, ts_rank_cd(c.search_vector, q) AS rank
    FROM memory_chunk c, to_tsquery('english', %s) q
    WHERE c.search_vector @@ q
    ORDER BY rank DESC, c.id
    LIMIT %s
"""

_WORD = re.compile(r"[a-z0-9]+")


def _or_query(text: str) -> str:
    """A tsquery matching any word of `text` (a question rarely contains every article word)."""
    return " | ".join(dict.fromkeys(_WORD.findall(text.lower())))


def passages_search(
    *,
    query: str,
    k: int | None = None,
    mode: Literal["vector", "hybrid"] | None = None,
    query_vector: np.ndarray | None = None,
) -> list[RetrievedPassage]:
    """The `k` best passages for `query`, at most one per article, best first.

    "vector": cosine similarity over the HNSW index. "hybrid": reciprocal-rank fusion of the
    vector ranking and Postgres full-text ranking. The default mode is MEMORY_RETRIEVAL_MODE,
    chosen by bench/retrieval.py.
    """
    k = k or settings.MEMORY_RETRIEVAL_TOP_K
    mode = mode or settings.MEMORY_RETRIEVAL_MODE  # type: ignore[assignment]
    vector = embeddings.embed_query(query) if query_vector is None else query_vector
    literal = vector_literal(vector)
    candidates = max(k * 8, 40)
    with transaction.atomic(), connection.cursor() as cursor:
        set_ef_search(cursor)
        cursor.execute(_VECTOR_SQL, [literal, literal, candidates])
        vector_rows = cursor.fetchall()
        if len(vector_rows) < candidates:
            # pgvector (< 0.8) drops index candidates that are not visible (chunks of a
            # re-index deleted or rolled back and not yet vacuumed) after the HNSW scan, so a
            # short result may lack the best live chunks: scan exactly instead (it is short
            # only when the index is full of dead entries or the table is small).
            cursor.execute("SET LOCAL enable_indexscan = off")
            cursor.execute(_VECTOR_SQL, [literal, literal, candidates])
            vector_rows = cursor.fetchall()
        fts_rows: list[tuple[int, float]] = []
        words = _or_query(query)
        if mode == "hybrid" and words:
            cursor.execute(_FTS_SQL, [words, candidates])
            fts_rows = cursor.fetchall()
    similarity = {cid: float(sim) for cid, sim in vector_rows}
    if mode == "hybrid":
        scores: dict[int, float] = {}
        # Reciprocal-rank fusion (k=60, Cormack et al.): robust to the two scores' scales.
        for ranking in (vector_rows, fts_rows):
            for rank, (cid, _) in enumerate(ranking):
                scores[cid] = scores.get(cid, 0.0) + 1.0 / (60 + rank + 1)
    else:
        scores = dict(similarity)
    ordered = sorted(scores, key=lambda cid: -scores[cid])
    return _passages(ordered, scores, k)


def _passages(ordered: Sequence[int], scores: dict[int, float], k: int) -> list[RetrievedPassage]:
    chunks = Chunk.objects.select_related("article").in_bulk(list(ordered))
    result: list[RetrievedPassage] = []
    seen: set[int] = set()
    for cid in ordered:
        chunk = chunks.get(cid)
        if chunk is None or chunk.article_id in seen:
            continue
        seen.add(chunk.article_id)
        result.append(
            RetrievedPassage(
                slug=chunk.article.slug,
                title=chunk.article.title,
                section=chunk.article.section,
                heading=chunk.heading,
                text=chunk.text,
                score=round(scores[cid], 6),
                chunk_id=cid,
            )
        )
        if len(result) == k:
            break
    return result


def passages_as_documents(passages: Sequence[RetrievedPassage]) -> str:
    """Passages in the `<documents>` format the gateway's prompts (and simulator) read."""
    from xml.sax.saxutils import escape

    parts = [
        f'<document index="{i}"><source>{escape(p.slug)}</source><title>{escape(p.title)}</title>'
        f"<document_content>{escape(p.text)}</document_content></document>"
        for i, p in enumerate(passages, start=1)
    ]
    return "<documents>" + "".join(parts) + "</documents>"


@dataclass(frozen=True)
class SemanticCacheStats:
    lookups: int
    hits: int
    hit_rate: float
    by_reason: dict[str, int]
    mean_hit_similarity: float | None


def semantic_cache_stats(*, since: datetime | None = None) -> SemanticCacheStats:
    """Hit rate of the semantic cache (all lookups, or those since `since`)."""
    lookups = SemanticCacheLookup.objects.all()
    if since is not None:
        lookups = lookups.filter(created_at__gte=since)
    by_reason = dict(
        lookups.values_list("reason").annotate(n=Count("id")).order_by().values_list("reason", "n")
    )
    total = sum(by_reason.values())
    hits = by_reason.get("hit", 0)
    mean = lookups.filter(hit=True).aggregate(m=Avg("similarity"))["m"]
    return SemanticCacheStats(
        lookups=total,
        hits=hits,
        hit_rate=round(hits / total, 4) if total else 0.0,
        by_reason=by_reason,
        mean_hit_similarity=mean,
    )


@dataclass(frozen=True)
class RecalledMemory:
    id: int
    text: str
    conversation_id: int | None
    created_at: datetime
    similarity: float
    score: float  # similarity + recency bonus


_RECALL_SQL = """
    SELECT id, text, conversation_id, created_at, 1 - (embedding <=> %s::vector) AS similarity
    FROM memory_customermemory
    WHERE customer_id = %s
"""


def customer_memories_recall(
    *, customer: Customer, query: str, k: int = 5, now: datetime | None = None
) -> list[RecalledMemory]:
    """`customer`'s memories most relevant to `query`: similarity plus a recency bonus.

    score = cosine similarity + CUSTOMER_MEMORY_RECENCY_WEIGHT * 0.5 ** (age / half-life).
    Only `customer`'s rows are ever read (the WHERE clause is part of this function, not of
    the caller), scanned exactly (see CustomerMemory).
    """
    now = now or timezone.now()
    literal = vector_literal(embeddings.embed_query(query))
    with connection.cursor() as cursor:
        cursor.execute(_RECALL_SQL, [literal, customer.pk])
        rows = cursor.fetchall()
    weight = settings.CUSTOMER_MEMORY_RECENCY_WEIGHT
    half_life = settings.CUSTOMER_MEMORY_HALF_LIFE_DAYS
    recalled = []
    for memory_id, text, conversation_id, created_at, similarity in rows:
        age_days = max((now - created_at).total_seconds(), 0) / 86400
        score = float(similarity) + weight * 0.5 ** (age_days / half_life)
        recalled.append(
            RecalledMemory(
                id=memory_id,
                text=text,
                conversation_id=conversation_id,
                created_at=created_at,
                similarity=round(float(similarity), 6),
                score=round(score, 6),
            )
        )
    recalled.sort(key=lambda m: (-m.score, -m.id))
    return recalled[:k]


def customer_memories_list(*, customer: Customer) -> list[CustomerMemory]:
    """Everything remembered about `customer`, newest first (for the customer and staff)."""
    return list(CustomerMemory.objects.filter(customer=customer).order_by("-created_at", "-id"))


def conversation_get_for_customer(
    *, customer: Customer, conversation_id: int
) -> Conversation | None:
    return Conversation.objects.filter(customer=customer, id=conversation_id).first()
