"""Memory's tables: the help center (articles, chunks, version), the embedding cache, the
semantic answer cache and its lookup log, customer memory, conversations and messages.

Vector columns have EMBEDDING_DIM (256) dimensions and cosine HNSW indexes; vectors are stored
unit-length, so cosine similarity = 1 - cosine distance.
"""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIM = 256  # must equal settings.EMBEDDING_DIM; the adapter checks the provider
MINILM_DIM = 384


class EmbeddingCacheEntry(models.Model):
    """One text's vector under one model. Any dimension, so providers can coexist.

    `owner` is the customer a text was embedded for (their memories); null for public texts
    (help-center passages, generic FAQ questions). A customer's rows are looked up and reused
    only for that customer, so `customer_forget` can delete every vector of their texts (the
    row holds no text, but its hash names it) and the deletion of a customer cascades.
    """

    model_id = models.CharField(max_length=100)
    content_hash = models.CharField(max_length=64)
    embedding = VectorField()
    owner = models.ForeignKey(
        "billing.Customer",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # NULLS NOT DISTINCT: one public row per (model, text), as before the owner column.
            models.UniqueConstraint(
                fields=["model_id", "content_hash", "owner"],
                name="memory_embedding_cache_owner_unique",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_id}:{self.content_hash[:12]}"


class KnowledgeBaseState(models.Model):
    """The single row holding the knowledge-base version (bumped whenever content changes)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="memory_kb_singleton")]

    def __str__(self) -> str:
        return f"knowledge base v{self.version}"


class Article(models.Model):
    """A help-center article (markdown body). `content_hash` covers all of its content."""

    slug = models.SlugField(max_length=120, unique=True)
    title = models.CharField(max_length=200)
    section = models.CharField(max_length=100)
    body = models.TextField()
    keywords = models.TextField(blank=True, default="")  # customers' words for the topic
    content_hash = models.CharField(max_length=64)
    # The hash of the content the chunks were built from ("" = not indexed yet).
    indexed_hash = models.CharField(max_length=64, blank=True, default="")
    indexed_model_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["section", "slug"]

    def __str__(self) -> str:
        return self.slug


class Chunk(models.Model):
    """A passage of an article, embedded for vector search and indexed for full-text search."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    heading = models.CharField(max_length=200, blank=True, default="")
    text = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    # The passage under all-MiniLM-L6-v2, the second encoder retrieval fuses with `embedding`
    # (see selectors.passages_search); null when the configured provider is MiniLM itself.
    minilm_embedding = VectorField(dimensions=MINILM_DIM, null=True)
    search_vector = SearchVectorField(null=True)

    class Meta:
        ordering = ["article_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["article", "ordinal"], name="memory_chunk_unique")
        ]
        indexes = [
            HnswIndex(
                name="memory_chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="memory_chunk_search_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.article_id}#{self.ordinal}"


class SemanticCacheEntry(models.Model):
    """A cached FAQ answer, valid only under the prompt and KB versions it was made with."""

    question = models.TextField()
    question_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    answer = models.TextField()
    sources = models.JSONField(default=list)  # [{"slug": ..., "title": ...}]
    prompt_version = models.CharField(max_length=100)
    kb_version = models.PositiveIntegerField()
    model_id = models.CharField(max_length=100)  # the embedding model of `embedding`
    # The pinned model id that wrote `answer`: an answer is served only for the same model
    # (rows from before this column have "" and are never served).
    answer_model = models.CharField(max_length=100, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "question_hash",
                    "prompt_version",
                    "kb_version",
                    "model_id",
                    "answer_model",
                ],
                name="memory_semantic_cache_model_unique",
            )
        ]
        indexes = [
            HnswIndex(
                name="memory_semcache_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(fields=["prompt_version", "kb_version"], name="memory_semcache_version"),
        ]

    def __str__(self) -> str:
        return self.question[:60]


class SemanticCacheLookup(models.Model):
    """Every lookup: hit or miss, the best similarity seen, and why a candidate was refused."""

    question = models.TextField()
    hit = models.BooleanField()
    similarity = models.FloatField(null=True)
    entry = models.ForeignKey(
        SemanticCacheEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=40)  # hit, below_threshold, guard_mismatch, empty, ...
    prompt_version = models.CharField(max_length=100)
    kb_version = models.PositiveIntegerField()
    answer_model = models.CharField(max_length=100, default="")
    # Who asked, when the caller knows (the FAQ lane does): `customer_forget` deletes their
    # rows. Older rows have none and are matched by their text instead.
    customer = models.ForeignKey(
        "billing.Customer", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{'hit' if self.hit else 'miss'} {self.similarity}"


class Conversation(models.Model):
    """One customer's conversation: the durable history (messages) and its rolling summary.

    `last_seq` is the sequence number of the newest message; appending locks this row, so
    sequence numbers are gap-free and ordered under concurrent writers.
    """

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.CASCADE, related_name="conversations"
    )
    last_seq = models.PositiveIntegerField(default=0)
    # Summary of messages 1..summary_through_seq, written by the small model via the gateway.
    summary = models.TextField(blank=True, default="")
    summary_through_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["customer", "-updated_at"], name="memory_conv_customer")]

    def __str__(self) -> str:
        return f"conversation {self.pk} of customer {self.customer_id}"


class MessageRole(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    ASSISTANT = "assistant", "Assistant"
    STAFF = "staff", "Staff"


class Message(models.Model):
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation_id", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "seq"], name="memory_message_seq_unique"
            ),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="memory_message_seq_gte_1"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq} {self.role}"


class CustomerMemory(models.Model):
    """A fact about one customer, with where it came from (conversation, message) and when.

    No HNSW index on purpose: recall always filters to one customer, whose few memories are
    scanned exactly through the (customer, created_at) index; an approximate index filtered
    afterwards could miss them.
    """

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.CASCADE, related_name="memories"
    )
    text = models.TextField()
    content_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="memories"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=40, default="conversation")  # conversation, staff, ...
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "content_hash"], name="memory_customer_memory_unique"
            )
        ]
        indexes = [
            models.Index(fields=["customer", "-created_at"], name="memory_custmem_customer"),
        ]

    def __str__(self) -> str:
        return self.text[:60]
