"""Writes to memory: help-center articles and their index, customer memory, conversations.

Public functions are keyword-only. Reads live in selectors.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from memory import embeddings, hot, selectors
from memory.knowledge import (
    HELPCENTER_DIR,
    ArticleSource,
    article_hash,
    chunk_body,
    load_directory,
    passage_embedding_text,
)
from memory.models import (
    Article,
    Chunk,
    Conversation,
    CustomerMemory,
    EmbeddingCacheEntry,
    KnowledgeBaseState,
    Message,
    MessageRole,
    SemanticCacheEntry,
    SemanticCacheLookup,
)
from memory.semantic_cache import (
    amounts_in,
    customer_specific_reasons,
    guard_allows,
    numbers_in,
    words_in,
)

if TYPE_CHECKING:
    from billing.models import Customer

# One advisory-lock key for every write to the knowledge base, so two workers re-indexing at
# once cannot interleave their chunk rows or double-bump the version.
_KB_LOCK = 0x4C4B_0001


def _lock_kb() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_KB_LOCK])


def kb_version_bump() -> int:
    """Increment the knowledge-base version (invalidates every semantic-cache entry)."""
    KnowledgeBaseState.objects.get_or_create(id=1)
    KnowledgeBaseState.objects.filter(id=1).update(version=F("version") + 1)
    return KnowledgeBaseState.objects.values_list("version", flat=True).get(id=1)


def _index_article(article: Article) -> int:
    """Replace `article`'s chunks with freshly embedded ones. Returns the number of chunks."""
    passages = chunk_body(article.body)
    texts = [
        passage_embedding_text(
            title=article.title, keywords=article.keywords, heading=p.heading, text=p.text
        )
        for p in passages
    ]
    vectors = embeddings.embed_texts(texts)
    second = embeddings.minilm_provider()
    second_vectors: list[object] = (
        [None] * len(passages)
        if second is None
        else list(embeddings.embed_passages(texts, provider=second))
    )
    Chunk.objects.filter(article=article).delete()
    Chunk.objects.bulk_create(
        Chunk(
            article=article,
            ordinal=i,
            heading=p.heading,
            text=p.text,
            embedding=v,
            minilm_embedding=m,
        )
        for i, (p, v, m) in enumerate(zip(passages, vectors, second_vectors, strict=True))
    )
    # Full-text vector: title weighs most, then keywords and heading, then the text.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE memory_chunk c SET search_vector =
                setweight(to_tsvector('english', a.title), 'A')
                || setweight(to_tsvector('english', a.keywords), 'B')
                || setweight(to_tsvector('english', c.heading), 'B')
                || setweight(to_tsvector('english', c.text), 'C')
            FROM memory_article a WHERE c.article_id = a.id AND a.id = %s
            """,
            [article.id],
        )
    article.indexed_hash = article.content_hash
    article.indexed_model_id = embeddings.index_model_id()
    article.save(update_fields=["indexed_hash", "indexed_model_id", "updated_at"])
    return len(passages)


_CONTENT_FIELDS = ["title", "section", "body", "keywords"]


def _hash_of(article: Article) -> str:
    return article_hash(
        title=article.title, section=article.section, body=article.body, keywords=article.keywords
    )


def _needs_index(article: Article) -> bool:
    return (
        article.indexed_hash != article.content_hash
        or article.indexed_model_id != embeddings.index_model_id()
    )


@transaction.atomic
def article_create(
    *, slug: str, title: str, section: str, body: str, keywords: str = ""
) -> Article:
    """Create and index an article; bumps the KB version. `slug` must be new (IntegrityError)."""
    _lock_kb()
    article = Article.objects.create(
        slug=slug,
        title=title,
        section=section,
        body=body,
        keywords=keywords,
        content_hash=article_hash(title=title, section=section, body=body, keywords=keywords),
    )
    _index_article(article)
    kb_version_bump()
    return article


@transaction.atomic
def article_update(
    *,
    article: Article,
    title: str | None = None,
    section: str | None = None,
    body: str | None = None,
    keywords: str | None = None,
) -> Article:
    """Change an article's fields; re-indexes and bumps the KB version only if content changed."""
    _lock_kb()
    article = Article.objects.select_for_update().get(pk=article.pk)
    article.title = article.title if title is None else title
    article.section = article.section if section is None else section
    article.body = article.body if body is None else body
    article.keywords = article.keywords if keywords is None else keywords
    new_hash = _hash_of(article)
    if new_hash == article.content_hash and not _needs_index(article):
        return article
    article.content_hash = new_hash
    article.save(update_fields=[*_CONTENT_FIELDS, "content_hash", "updated_at"])
    _index_article(article)
    kb_version_bump()
    return article


@transaction.atomic
def article_delete(*, article: Article) -> None:
    """Delete an article and its chunks; bumps the KB version."""
    _lock_kb()
    Article.objects.filter(pk=article.pk).delete()
    kb_version_bump()


@transaction.atomic
def article_reindex(*, article: Article, force: bool = False) -> int:
    """Re-embed an article's passages (all of them with `force`, else only if stale).

    Returns the number of chunks written (0 when nothing was stale). A forced re-index bumps the
    KB version because passages (and hence answers) may differ.
    """
    _lock_kb()
    article = Article.objects.select_for_update().get(pk=article.pk)
    if not force and not _needs_index(article):
        return 0
    count = _index_article(article)
    kb_version_bump()
    return count


@dataclass(frozen=True)
class IngestReport:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]
    chunks_written: int
    kb_version: int

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


@transaction.atomic
def helpcenter_ingest(
    *,
    sources: list[ArticleSource] | None = None,
    directory: Path = HELPCENTER_DIR,
    prune: bool = False,
) -> IngestReport:
    """Bring the knowledge base in line with the article files (idempotent).

    Unchanged articles (same content hash, indexed under the current embedding model) cost
    nothing. Any change bumps the KB version once per run. With `prune`, articles whose slug is
    no longer among the files are deleted (off by default: staff may add articles through the
    API that have no file).
    """
    _lock_kb()
    if sources is None:
        sources = load_directory(directory)
    existing = {a.slug: a for a in Article.objects.select_for_update()}
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    chunks = 0
    for source in sources:
        new_hash = article_hash(
            title=source.title, section=source.section, body=source.body, keywords=source.keywords
        )
        article = existing.get(source.slug)
        if article is None:
            article = Article.objects.create(
                slug=source.slug,
                title=source.title,
                section=source.section,
                body=source.body,
                keywords=source.keywords,
                content_hash=new_hash,
            )
            created.append(source.slug)
        elif article.content_hash != new_hash or _needs_index(article):
            article.title, article.section = source.title, source.section
            article.body, article.keywords = source.body, source.keywords
            article.content_hash = new_hash
            article.save(update_fields=[*_CONTENT_FIELDS, "content_hash", "updated_at"])
            updated.append(source.slug)
        else:
            unchanged.append(source.slug)
            continue
        chunks += _index_article(article)
    deleted: list[str] = []
    if prune:
        wanted = {s.slug for s in sources}
        deleted = sorted(slug for slug in existing if slug not in wanted)
        Article.objects.filter(slug__in=deleted).delete()
    if created or updated or deleted:
        version = kb_version_bump()
    else:
        state, _ = KnowledgeBaseState.objects.get_or_create(id=1)
        version = state.version
    return IngestReport(
        created=created,
        updated=updated,
        unchanged=unchanged,
        deleted=deleted,
        chunks_written=chunks,
        kb_version=version,
    )


# --- Semantic answer cache ------------------------------------------------------------------------


class CustomerSpecificAnswer(ValueError):
    """The answer or question names one customer's data; it must not be cached."""


@dataclass(frozen=True)
class CachedAnswer:
    entry_id: int
    question: str  # the cached question this one matched
    answer: str
    sources: list[dict[str, str]]
    similarity: float


@dataclass(frozen=True)
class _PublicFacts:
    amounts: frozenset[str]
    numbers: frozenset[str]
    words: frozenset[str]


# (content digest, facts) of the help center last seen by this process. Replaced as a whole by
# one assignment, never mutated: under Celery's threads pool a reader holding the old pair
# keeps a consistent one, where clearing and refilling a shared dict let a concurrent reader
# find its key gone (KeyError) between the check and the read.
_public_facts: tuple[str, _PublicFacts] | None = None


def _help_center_public() -> _PublicFacts:
    # What the help center itself states (prices, limits, worked examples, its vocabulary) is
    # public. Keyed by the articles' content hashes, not the KB version: a version number can
    # name different content (a rolled-back edit, another database), a content hash cannot.
    global _public_facts
    hashes = sorted(Article.objects.values_list("content_hash", flat=True))
    digest = embeddings.content_hash("\n".join(hashes))
    current = _public_facts  # one read: another thread may swap the global meanwhile
    if current is not None and current[0] == digest:
        return current[1]
    texts = [
        f"{title}\n{body}\n{keywords}"
        for title, body, keywords in Article.objects.values_list("title", "body", "keywords")
    ]
    facts = _PublicFacts(
        amounts=frozenset(a for t in texts for a in amounts_in(t)),
        numbers=frozenset(n for t in texts for n in numbers_in(t)),
        words=frozenset(w for t in texts for w in words_in(t)),
    )
    # Two threads computing at once each return their own (both correct for their digest);
    # the last assignment wins, and the next call with the other digest recomputes.
    _public_facts = (digest, facts)
    return facts


def semantic_cache_store(
    *,
    question: str,
    answer: str,
    sources: list[dict[str, str]],
    prompt_version: str,
    kb_version: int,
    answer_model: str,
    ttl_seconds: int | None = None,
) -> SemanticCacheEntry:
    """Cache a generic FAQ answer under `prompt_version`, `kb_version` and `answer_model`.

    `answer_model` is the pinned model id that wrote the answer (the gateway's record of the
    call, not the tier): the entry is served only to lookups for that same model, so a model
    change (a release, a fallback to the small tier) never serves another model's answer.

    Preconditions: the answer came from the FAQ lane (help-center passages only, no customer
    lookups), and `kb_version` is `selectors.kb_version_get()` read BEFORE the passages were
    retrieved: an answer built from an older help center is then stored under that older
    version and never served (reading the version at store time would label a stale answer
    as current when staff edit an article while the model is answering). Raises
    CustomerSpecificAnswer when the question or answer names an email, an invoice number, a
    payment reference or an amount the help center does not state.
    """
    public = _help_center_public()
    reasons = [
        reason
        for text in (question, answer)
        for reason in customer_specific_reasons(
            text,
            public_amounts=public.amounts,
            public_numbers=public.numbers,
            public_words=public.words,
        )
    ]
    # Sources are shown with the answer: each must be a help-center article, as it is titled.
    slugs = [str(source.get("slug")) for source in sources]
    titles = dict(Article.objects.filter(slug__in=slugs).values_list("slug", "title"))
    reasons += [
        f"source is not a help-center article: {source.get('slug')!r}"
        for source, slug in zip(sources, slugs, strict=True)
        if slug not in titles
        or source.get("title", titles[slug]) != titles[slug]
        or set(source) - {"slug", "title"}
    ]
    if reasons:
        raise CustomerSpecificAnswer("; ".join(dict.fromkeys(reasons)))
    if not answer_model.strip():
        raise ValueError("answer_model must name the model that wrote the answer")
    provider = embeddings.get_provider()
    ttl = settings.SEMANTIC_CACHE_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    entry, _ = SemanticCacheEntry.objects.update_or_create(
        question_hash=embeddings.content_hash(question),
        prompt_version=prompt_version,
        kb_version=kb_version,
        model_id=provider.model_id,
        answer_model=answer_model,
        defaults={
            "question": question,
            "embedding": embeddings.embed_text(question),
            "answer": answer,
            "sources": sources,
            "expires_at": timezone.now() + timedelta(seconds=ttl),
        },
    )
    return entry


_CACHE_CANDIDATES_SQL = """
    SELECT id, question, 1 - (embedding <=> %s::vector) AS similarity
    FROM memory_semanticcacheentry
    WHERE prompt_version = %s AND kb_version = %s AND model_id = %s AND answer_model = %s
        AND expires_at > %s
    ORDER BY embedding <=> %s::vector
    LIMIT 5
"""


def _loggable(question: str) -> str:
    # The lookup log is linked to no customer, so a deletion request could never reach it: a
    # question naming a customer's details is logged only as the reasons it was withheld.
    public = _help_center_public()
    reasons = customer_specific_reasons(
        question,
        public_amounts=public.amounts,
        public_numbers=public.numbers,
        public_words=public.words,
    )
    if not reasons:
        return question
    kinds = dict.fromkeys(reason.split(":", 1)[0] for reason in reasons)
    return f"[withheld: {', '.join(kinds)}]"


def semantic_cache_lookup(
    *,
    question: str,
    prompt_version: str,
    answer_model: str,
    customer: Customer | None = None,
    threshold: float | None = None,
) -> CachedAnswer | None:
    """A cached answer to `question`, or None. Every lookup is recorded (hit rate, similarity).

    A hit needs: same prompt version, same answering model (`answer_model`, the pinned model id
    that would answer on a miss), current KB version, unexpired, cosine similarity at or above
    SEMANTIC_CACHE_THRESHOLD, and the same answer-changing terms (see semantic_cache.py).
    `customer` is who asked: the lookup-log row is linked to them, so `customer_forget` can
    delete it.
    """
    if not settings.SEMANTIC_CACHE_ENABLED:
        return None
    threshold = settings.SEMANTIC_CACHE_THRESHOLD if threshold is None else threshold
    kb_version = selectors.kb_version_get()
    provider = embeddings.get_provider()
    literal = selectors.vector_literal(embeddings.embed_query(question))
    with transaction.atomic(), connection.cursor() as cursor:
        selectors.set_ef_search(cursor)
        cursor.execute(
            _CACHE_CANDIDATES_SQL,
            [
                literal,
                prompt_version,
                kb_version,
                provider.model_id,
                answer_model,
                timezone.now(),
                literal,
            ],
        )
        candidates = cursor.fetchall()
    best = float(candidates[0][2]) if candidates else None
    chosen: tuple[int, str, float] | None = None
    reason = "empty"
    for entry_id, cached_question, similarity in candidates:
        if similarity < threshold:
            reason = "below_threshold"
            break
        if not guard_allows(cached_question, question):
            reason = "guard_mismatch"
            continue
        chosen = (entry_id, cached_question, float(similarity))
        reason = "hit"
        break
    SemanticCacheLookup.objects.create(
        question=_loggable(question),
        hit=chosen is not None,
        similarity=chosen[2] if chosen else best,
        entry_id=chosen[0] if chosen else None,
        reason=reason,
        prompt_version=prompt_version,
        kb_version=kb_version,
        answer_model=answer_model,
        customer=customer,
    )
    if chosen is None:
        return None
    SemanticCacheEntry.objects.filter(id=chosen[0]).update(hits=F("hits") + 1)
    entry = SemanticCacheEntry.objects.get(id=chosen[0])
    return CachedAnswer(
        entry_id=entry.id,
        question=entry.question,
        answer=entry.answer,
        sources=list(entry.sources),
        similarity=chosen[2],
    )


def semantic_cache_purge(*, now: datetime | None = None) -> int:
    """Delete expired entries and entries of older KB versions. Returns how many."""
    now = now or timezone.now()
    deleted, _ = SemanticCacheEntry.objects.filter(
        Q(expires_at__lte=now) | Q(kb_version__lt=selectors.kb_version_get())
    ).delete()
    return deleted


# --- Customer memory ------------------------------------------------------------------------------


class MemoryNotFound(LookupError):
    """No such memory for this customer (another customer's memory is "not found" too)."""


def customer_memory_add(
    *,
    customer: Customer,
    text: str,
    conversation: Conversation | None = None,
    message: Message | None = None,
    source: str = "conversation",
    at: datetime | None = None,
) -> CustomerMemory:
    """Remember a fact about `customer`, with its provenance; the same text twice is kept once.

    Preconditions: `conversation` and `message`, when given, belong to `customer` (checked:
    a memory must never point into another customer's conversation).
    """
    text = " ".join(text.split())
    if not text:
        raise ValueError("a memory needs text")
    if conversation is not None and conversation.customer_id != customer.pk:
        raise ValueError("the conversation belongs to another customer")
    if message is not None and (conversation is None or message.conversation_id != conversation.pk):
        raise ValueError("the message must belong to the given conversation")
    memory, _ = CustomerMemory.objects.get_or_create(
        customer=customer,
        content_hash=embeddings.content_hash(text.lower()),
        defaults={
            "text": text,
            "embedding": embeddings.embed_texts([text], owner=customer)[0],
            "conversation": conversation,
            "message": message,
            "source": source,
            "created_at": at or timezone.now(),
        },
    )
    return memory


def customer_memory_delete(*, customer: Customer, memory_id: int) -> None:
    """Forget one memory of `customer` (privacy). Raises MemoryNotFound for anyone else's."""
    deleted, _ = CustomerMemory.objects.filter(customer=customer, id=memory_id).delete()
    if not deleted:
        raise MemoryNotFound(memory_id)


def customer_memories_delete_all(*, customer: Customer) -> int:
    """Forget everything remembered about `customer`. Returns how many memories went."""
    deleted, _ = CustomerMemory.objects.filter(customer=customer).delete()
    return deleted


# --- Conversations --------------------------------------------------------------------------------


def conversation_start(*, customer: Customer) -> Conversation:
    """A new, empty conversation for `customer`."""
    return Conversation.objects.create(customer=customer)


@transaction.atomic
def message_append(*, conversation: Conversation, role: str, content: str) -> Message:
    """Store a message as the conversation's next turn; the Redis hot copy follows on commit.

    The conversation row is locked so concurrent appends get consecutive sequence numbers.
    """
    if role not in MessageRole.values:
        raise ValueError(f"unknown role {role!r}")
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    locked.last_seq += 1
    locked.save(update_fields=["last_seq", "updated_at"])
    message = Message.objects.create(
        conversation=locked, seq=locked.last_seq, role=role, content=content
    )
    conversation.last_seq = locked.last_seq
    turn = hot.Turn(seq=message.seq, role=role, content=content)
    transaction.on_commit(lambda: hot.append(conversation=locked, turn=turn))
    return message


def conversation_summary_save(
    *, conversation: Conversation, summary: str, through_seq: int
) -> bool:
    """Record a summary of messages 1..through_seq unless a newer one is already stored.

    Conditional update, so two workers summarising at once keep the one that covers more.
    """
    updated = Conversation.objects.filter(
        pk=conversation.pk, summary_through_seq__lt=through_seq
    ).update(summary=summary, summary_through_seq=through_seq)
    if updated:
        conversation.summary, conversation.summary_through_seq = summary, through_seq
    return bool(updated)


# --- Forget me ------------------------------------------------------------------------------------


@transaction.atomic
def customer_forget(*, customer: Customer) -> dict[str, int]:
    """Delete what memory keeps of `customer` outside their conversations; counts per kind.

    Gone: their memories; the vectors of texts embedded for them (embedding-cache rows they
    own, and any ownerless row left from before owners were recorded whose hash is one of
    their memories' texts); semantic-cache lookup-log rows linked to them or whose question is
    the text of one of their messages or memories, and cached answers whose question is one of
    their messages (with those questions' vectors); the Redis hot copies of their
    conversations; and the retrieval-cache entries of their messages under the current
    knowledge base (entries hold no text, only a hash of it, and expire within
    selectors.SEARCH_CACHE_TTL_SECONDS anyway).

    Kept: the conversations and messages in Postgres: they are the support record tickets
    point to (support's retention decides them), so a later read rebuilds a hot copy from
    them. Other customers' rows are never touched: every filter names `customer` or one of
    their own texts.
    """
    memory_texts = list(
        CustomerMemory.objects.filter(customer=customer).values_list("text", flat=True)
    )
    conversations = list(Conversation.objects.filter(customer=customer))
    asked = list(
        Message.objects.filter(
            conversation__customer=customer, role=MessageRole.CUSTOMER
        ).values_list("content", flat=True)
    )
    their_texts = sorted(set(memory_texts) | set(asked))

    memories, _ = CustomerMemory.objects.filter(customer=customer).delete()

    memory_hashes = sorted({embeddings.content_hash(t) for t in memory_texts})
    owned, _ = EmbeddingCacheEntry.objects.filter(
        Q(owner=customer) | Q(owner__isnull=True, content_hash__in=memory_hashes)
    ).delete()

    lookups, _ = SemanticCacheLookup.objects.filter(
        Q(customer=customer) | Q(question__in=their_texts)
    ).delete()
    entries = SemanticCacheEntry.objects.filter(question__in=asked)
    entry_hashes = sorted(
        {embeddings.content_hash(q) for q in entries.values_list("question", flat=True)}
    )
    cached_answers, _ = entries.delete()
    question_vectors, _ = EmbeddingCacheEntry.objects.filter(
        owner__isnull=True, content_hash__in=entry_hashes
    ).delete()

    hot_copies = sum(hot.drop(conversation=conversation) for conversation in conversations)
    search_entries = selectors.search_cache_forget(queries=asked)
    return {
        "memories": memories,
        "embedding_cache_rows": owned + question_vectors,
        "semantic_cache_lookups": lookups,
        "semantic_cache_entries": cached_answers,
        "hot_copies": hot_copies,
        "search_cache_entries": search_entries,
    }
