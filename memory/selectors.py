"""Reads from memory: help-center retrieval, the KB version, customer memory recall.

What leaves the app is a frozen dataclass (`RetrievedPassage`, `RecalledMemory`) or a model
instance to be read, never a queryset to be filtered further by a caller.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Avg, Count
from django.utils import timezone

from ledgerly.redis_keys import prefixed
from memory import embeddings, hot, query_rewrite
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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievedPassage:
    slug: str
    title: str
    section: str
    heading: str
    text: str
    score: float  # of the best chunk: cosine similarity for "vector", fused RRF for "hybrid"
    chunk_id: int  # the best chunk
    # Every chunk whose text is in `text`, in the article's order (the best one and at most
    # CHUNKS_PER_PASSAGE - 1 more).
    chunk_ids: tuple[int, ...] = ()


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

# The two encoders' cosine similarities, averaged. No index can order by this sum, so it is an
# exact scan: the help center is a few hundred passages at most (72 today), which Postgres
# scores in about a millisecond; a knowledge base of many thousands of passages would take the
# union of both HNSW indexes' candidates instead. A chunk not yet embedded by the second
# encoder counts with its first similarity twice.
_FUSED_SQL = """
    SELECT c.id,
        %s * (1 - (c.embedding <=> %s::vector))
        + %s * COALESCE(1 - (c.minilm_embedding <=> %s::vector), 1 - (c.embedding <=> %s::vector))
        AS similarity
    FROM memory_chunk c
    ORDER BY similarity DESC, c.id
    LIMIT %s
"""

# Weight of the configured provider's similarity (the rest is MiniLM's): 0.5 on the
# development and old held-out sets (0.3/0.5/0.7 tried; bench/retrieval.py).
PRIMARY_WEIGHT = 0.5

_FTS_SQL = """
    SELECT c.id, ts_rank_cd(c.search_vector, q) AS rank
    FROM memory_chunk c, to_tsquery('english', %s) q
    WHERE c.search_vector @@ q
    ORDER BY rank DESC, c.id
    LIMIT %s
"""

_WORD = re.compile(r"[a-z0-9]+")

# A passage is an article's best chunks, not its best chunk only: the chunk that ranks best is
# often the article's topic sentence while the fact asked for is in the next section ("how long
# do I have to report a duplicate charge" ranks the definition above "within 180 days"). On
# bench/data/retrieval_passages.jsonl (k=4) the phrase that answers is in the passages for 0.731
# of the questions with one chunk per article, 0.942 with two chunks for the first article only,
# 0.962 with two per article (a score margin for the second chunk, 0.03 to 0.15 absolute or 80%
# to 90% relative, was never better); three per article adds words and finds nothing more.
CHUNKS_PER_PASSAGE = 2
# The FAQ prompt must stay cheap: the second chunks are added, best article first, only while
# all the passages together stay within this many words (two chunks each reach ~360 today).
PASSAGES_MAX_WORDS = 600
# Bumped when what a search returns changes shape, so cached results of the old shape are
# not served.
_RESULT_SHAPE = "chunks2"

# Retrieval results are cached in Redis this long per (query, k, mode, encoders, knowledge base).
SEARCH_CACHE_TTL_SECONDS = 3600
SEARCH_CACHE_PREFIX = "memory:search:"  # under REDIS_KEY_PREFIX


def _or_query(text: str) -> str:
    """A tsquery matching any word of `text` (a question rarely contains every article word)."""
    return " | ".join(dict.fromkeys(_WORD.findall(text.lower())))


def normalise_query(query: str) -> str:
    """The form a query is searched and cached in: lower case, single spaces. Both encoders
    and the full-text search are case-insensitive, so this changes no result."""
    return " ".join(query.lower().split())


def _kb_fingerprint(cursor: object) -> tuple[int, str]:
    """The KB version and a digest of what the index was built from. The version alone can name
    different content (an edit rolled back after a search inside its transaction, another
    database behind the same Redis); every (re-)index changes an article's updated_at."""
    cursor.execute(  # type: ignore[attr-defined]
        """
        SELECT (SELECT version FROM memory_knowledgebasestate WHERE id = 1),
               md5(COALESCE(string_agg(
                   id::text || ':' || indexed_hash || ':' || updated_at::text, ',' ORDER BY id
               ), ''))
        FROM memory_article
        """
    )
    version, digest = cursor.fetchone()  # type: ignore[attr-defined]
    return version or 1, digest


def _search_cache_key(*, query: str, k: int, mode: str, fingerprint: tuple[int, str]) -> str:
    # The query is hashed, not stored: a customer's question must not sit in a Redis key.
    parts = [
        normalise_query(query),
        str(k),
        mode,
        embeddings.index_model_id(),
        query_rewrite.VERSION,
        str(PRIMARY_WEIGHT),
        _RESULT_SHAPE,
        f"kb{fingerprint[0]}",
        fingerprint[1],
    ]
    digest = embeddings.content_hash("\x00".join(parts))
    return prefixed(f"{SEARCH_CACHE_PREFIX}v{fingerprint[0]}:{digest}")


def passages_search(
    *,
    query: str,
    k: int | None = None,
    mode: Literal["vector", "hybrid"] | None = None,
    cache: bool = True,
) -> list[RetrievedPassage]:
    """The `k` best passages for `query`, one per article, best first.

    Articles rank by their best chunk; each article's passage is its CHUNKS_PER_PASSAGE best
    chunks, in the article's order, as long as all passages stay within PASSAGES_MAX_WORDS words
    (else a passage is its best chunk only).

    The query is first rewritten (query_rewrite.expand: English terms for Spanish, German and
    French billing words). "vector": the configured provider's cosine similarity averaged with
    all-MiniLM-L6-v2's (a contextual encoder that reads word order; wordllama is a bag of
    words), or the provider's alone over the HNSW index when it is MiniLM. "hybrid":
    reciprocal-rank fusion of that ranking and Postgres full-text ranking. The default mode is
    MEMORY_RETRIEVAL_MODE, chosen by bench/retrieval.py.

    Results are cached in Redis, keyed by the normalised query, `k`, the mode, the encoders and
    the knowledge base's version and content: the same question asked a hundred times is one
    search, and any article change or KB version bump makes a new key. `cache=False` always
    searches (benchmarks). A Redis outage only costs the search.
    """
    k = k or settings.MEMORY_RETRIEVAL_TOP_K
    mode = mode or settings.MEMORY_RETRIEVAL_MODE  # type: ignore[assignment]
    query = normalise_query(query)
    with transaction.atomic(), connection.cursor() as cursor:
        fingerprint = _kb_fingerprint(cursor)
    key = _search_cache_key(query=query, k=k, mode=str(mode), fingerprint=fingerprint)
    if cache:
        cached = _search_cache_get(key)
        if cached is not None:
            return cached
    result = _search(query=query, k=k, mode=str(mode))
    if cache:
        _search_cache_set(key, result)
    return result


def _search_cache_get(key: str) -> list[RetrievedPassage] | None:
    try:
        raw = hot.client().get(key)
    except redis.RedisError:
        log.warning("retrieval cache unreadable", exc_info=True)
        return None
    if raw is None:
        return None
    return [
        RetrievedPassage(**{**item, "chunk_ids": tuple(item["chunk_ids"])})
        for item in json.loads(raw)
    ]


def _search_cache_set(key: str, passages: list[RetrievedPassage]) -> None:
    payload = json.dumps([asdict(p) for p in passages])
    try:
        hot.client().set(key, payload, ex=SEARCH_CACHE_TTL_SECONDS)
    except redis.RedisError:
        log.warning("retrieval cache unwritable", exc_info=True)


# The largest k a caller asks for (the API caps it at 20): search_cache_forget covers 1..this.
_SEARCH_CACHE_MAX_K = 20


def search_cache_forget(*, queries: Sequence[str]) -> int:
    """Delete the cached results of `queries` under the current knowledge base (every mode and
    k up to 20); returns how many entries went. For `customer_forget`: an entry holds no text,
    but its key is a hash of the question. Entries of older KB states expire by their TTL."""
    if not queries:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        fingerprint = _kb_fingerprint(cursor)
    keys = [
        _search_cache_key(query=normalise_query(q), k=k, mode=mode, fingerprint=fingerprint)
        for q in dict.fromkeys(queries)
        for mode in ("vector", "hybrid")
        for k in range(1, _SEARCH_CACHE_MAX_K + 1)
    ]
    try:
        return int(hot.client().delete(*keys))  # type: ignore[arg-type]
    except redis.RedisError:
        log.warning("retrieval cache entries not deleted", exc_info=True)
        return 0


def _search(*, query: str, k: int, mode: str) -> list[RetrievedPassage]:
    text = query_rewrite.expand(query)
    vector = embeddings.embed_query(text)
    literal = vector_literal(vector)
    second = embeddings.minilm_provider()
    candidates = max(k * 8, 40)
    with transaction.atomic(), connection.cursor() as cursor:
        if second is not None:
            second_literal = vector_literal(embeddings.embed_query(text, provider=second))
            cursor.execute(
                _FUSED_SQL,
                [
                    PRIMARY_WEIGHT,
                    literal,
                    1 - PRIMARY_WEIGHT,
                    second_literal,
                    literal,
                    candidates,
                ],
            )
            vector_rows = cursor.fetchall()
        else:
            set_ef_search(cursor)
            cursor.execute(_VECTOR_SQL, [literal, literal, candidates])
            vector_rows = cursor.fetchall()
            if len(vector_rows) < candidates:
                # pgvector (< 0.8) drops index candidates that are not visible (chunks of a
                # re-index deleted or rolled back and not yet vacuumed) after the HNSW scan, so
                # a short result may lack the best live chunks: scan exactly instead (it is
                # short only when the index is full of dead entries or the table is small).
                cursor.execute("SET LOCAL enable_indexscan = off")
                cursor.execute(_VECTOR_SQL, [literal, literal, candidates])
                vector_rows = cursor.fetchall()
        fts_rows: list[tuple[int, float]] = []
        words = _or_query(text)
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
    # The k best articles, each with its chunks best first (ordered is best first).
    by_article: dict[int, list[Chunk]] = {}
    for cid in ordered:
        chunk = chunks.get(cid)
        if chunk is None:
            continue
        if chunk.article_id not in by_article and len(by_article) == k:
            continue
        by_article.setdefault(chunk.article_id, []).append(chunk)
    picked = {aid: found[:1] for aid, found in by_article.items()}
    words = sum(len(c.text.split()) for found in picked.values() for c in found)
    for aid, found in by_article.items():
        for chunk in found[1:CHUNKS_PER_PASSAGE]:
            size = len(chunk.text.split())
            if words + size <= PASSAGES_MAX_WORDS:
                picked[aid].append(chunk)
                words += size
    result: list[RetrievedPassage] = []
    for found in picked.values():
        best = found[0]
        in_order = sorted(found, key=lambda c: c.ordinal)
        result.append(
            RetrievedPassage(
                slug=best.article.slug,
                title=best.article.title,
                section=best.article.section,
                heading=best.heading,
                text="\n\n".join(c.text for c in in_order),
                score=round(scores[best.id], 6),
                chunk_id=best.id,
                chunk_ids=tuple(c.id for c in in_order),
            )
        )
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
