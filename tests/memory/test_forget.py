"""Forget me: `customer_forget` removes what memory keeps of one customer and nothing else."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

from memory import embeddings, hot, selectors, services
from memory.models import (
    Conversation,
    CustomerMemory,
    EmbeddingCacheEntry,
    Message,
    SemanticCacheEntry,
    SemanticCacheLookup,
)

MODEL = "claude-haiku-5-5"
PROMPT = "faq_answer@forget"


def _leave_traces(customer, *, fact: str, question: str) -> Conversation:
    """Everything memory keeps after a customer talked to support and asked an FAQ."""
    conversation = services.conversation_start(customer=customer)
    services.message_append(conversation=conversation, role="customer", content=question)
    services.message_append(conversation=conversation, role="assistant", content="An answer.")
    hot.recent_turns(conversation=conversation)  # builds the Redis hot copy
    services.customer_memory_add(customer=customer, text=fact, conversation=conversation)
    # A lookup linked to its customer, and one logged before lookups named anyone.
    services.semantic_cache_lookup(
        question=question, prompt_version=PROMPT, answer_model=MODEL, customer=customer
    )
    SemanticCacheLookup.objects.create(
        question=question, hit=False, reason="empty", prompt_version=PROMPT, kb_version=1
    )
    # Their generic question became a cached answer (its wording is theirs).
    services.semantic_cache_store(
        question=question,
        answer="A generic answer.",
        sources=[],
        prompt_version=PROMPT,
        kb_version=selectors.kb_version_get(),
        answer_model=MODEL,
    )
    # A vector of their memory cached before owners were recorded.
    EmbeddingCacheEntry.objects.create(
        model_id="legacy-model",
        content_hash=embeddings.content_hash(fact),
        embedding=embeddings.embed_text("legacy vector"),
    )
    selectors.passages_search(query=question, k=3)  # a retrieval-cache entry
    return conversation


def _traces(customer, conversation, *, fact: str, question: str, redis_client) -> dict[str, int]:
    fact_hash = embeddings.content_hash(fact)
    question_hash = embeddings.content_hash(question)
    with_text = SemanticCacheLookup.objects.filter(question=question)
    return {
        "memories": CustomerMemory.objects.filter(customer=customer).count(),
        "owned_vectors": EmbeddingCacheEntry.objects.filter(owner=customer).count(),
        "memory_vectors": EmbeddingCacheEntry.objects.filter(content_hash=fact_hash).count(),
        "question_vectors": EmbeddingCacheEntry.objects.filter(content_hash=question_hash).count(),
        "lookups": SemanticCacheLookup.objects.filter(customer=customer).count()
        + with_text.count(),
        "entries": SemanticCacheEntry.objects.filter(question=question).count(),
        "hot_copy": redis_client.exists(hot.key(conversation)),
        "search_cache": redis_client.exists(_search_key(question)),
    }


def _search_key(question: str) -> str:
    with connection.cursor() as cursor:
        fingerprint = selectors._kb_fingerprint(cursor)
    return selectors._search_cache_key(
        query=selectors.normalise_query(question),
        k=3,
        mode=settings.MEMORY_RETRIEVAL_MODE,
        fingerprint=fingerprint,
    )


A_FACT, A_QUESTION = "Prefers invoices in EUR", "How do I export my data to a spreadsheet?"
B_FACT, B_QUESTION = "Company moved to Berlin", "What are your support hours on weekends?"


@pytest.mark.django_db(transaction=True)
def test_forgetting_a_customer_leaves_nothing_of_theirs_and_all_of_another(
    customer, other_customer, redis_client
):
    services.helpcenter_ingest()
    conversation_a = _leave_traces(customer, fact=A_FACT, question=A_QUESTION)
    conversation_b = _leave_traces(other_customer, fact=B_FACT, question=B_QUESTION)
    b_before = _traces(
        other_customer, conversation_b, fact=B_FACT, question=B_QUESTION, redis_client=redis_client
    )
    assert all(b_before.values())  # the fixture really left every kind of trace

    counts = services.customer_forget(customer=customer)

    a_after = _traces(
        customer, conversation_a, fact=A_FACT, question=A_QUESTION, redis_client=redis_client
    )
    assert a_after == {
        "memories": 0,
        "owned_vectors": 0,
        "memory_vectors": 0,
        "question_vectors": 0,
        "lookups": 0,
        "entries": 0,
        "hot_copy": 0,
        "search_cache": 0,
    }
    assert counts == {
        "memories": 1,
        "embedding_cache_rows": 3,  # the owned memory vector, the legacy one, the question's
        "semantic_cache_lookups": 2,
        "semantic_cache_entries": 1,
        "hot_copies": 1,
        "search_cache_entries": 1,
    }
    b_after = _traces(
        other_customer, conversation_b, fact=B_FACT, question=B_QUESTION, redis_client=redis_client
    )
    assert b_after == b_before
    # A's conversation stays in Postgres (tickets point to it), with its messages.
    assert Message.objects.filter(conversation=conversation_a).count() == 2


@pytest.mark.django_db(transaction=True)
def test_forgetting_twice_deletes_nothing_more(customer, redis_client):
    services.customer_memory_add(customer=customer, text=A_FACT)
    services.customer_forget(customer=customer)

    again = services.customer_forget(customer=customer)

    assert set(again.values()) == {0}


def test_a_customers_memory_vector_is_theirs_alone(customer, other_customer):
    services.customer_memory_add(customer=customer, text=A_FACT)
    services.customer_memory_add(customer=other_customer, text=A_FACT)

    owners = EmbeddingCacheEntry.objects.filter(content_hash=embeddings.content_hash(A_FACT))

    assert sorted(owners.values_list("owner_id", flat=True)) == sorted(
        [customer.id, other_customer.id]
    )
    services.customer_forget(customer=customer)
    assert list(owners.values_list("owner_id", flat=True)) == [other_customer.id]
    assert CustomerMemory.objects.filter(customer=other_customer).count() == 1
