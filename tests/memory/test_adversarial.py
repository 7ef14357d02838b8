"""A second reviewer's attacks on memory: customer data carried by the semantic cache, cached
answers served to questions they do not answer, stale answers after a KB change, and the Redis
hot copy serving one customer's turns to another."""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import replace

import pytest
from django.db import connections, transaction

from memory import hot, selectors, services
from memory.knowledge import load_directory
from memory.models import Conversation, Message, SemanticCacheEntry, SemanticCacheLookup

PROMPT = "faq_answer@adversarial"
MODEL = "claude-haiku-5-5"  # the model that wrote the cached answers


def _store(question: str, answer: str, kb_version: int | None = None):
    return services.semantic_cache_store(
        answer_model=MODEL,
        question=question,
        answer=answer,
        sources=[{"slug": "refund-timing", "title": "When will I see my refund?"}],
        prompt_version=PROMPT,
        kb_version=selectors.kb_version_get() if kb_version is None else kb_version,
    )


# --- Customer data that must never be cached (and so never served to another customer) ------


@pytest.mark.parametrize(
    "answer",
    [
        "Hi Anna, your refund is on its way.",
        "Thanks for waiting, Anna. Refunds take 5–10 business days.",
        "Anna Lopez, refunds take 5–10 business days.",
        "hi anna, refunds take 5–10 business days.",
        "Acme GmbH was refunded; it takes 5–10 business days.",
        "Invoice 2024-0012 was refunded.",
        "Invoice #10234 was refunded.",
        "You paid EUR 58.31, which will be refunded.",
        "You paid 58,31 €, which will be refunded.",
        "You paid 58.31, which will be refunded.",
        "Your refund of USD 12 is on its way.",
        "Your refund of 12 dollars is on its way.",
        "You were charged on 3 March 2026.",
        "You were charged on March 3, so a refund is possible.",
        "You were charged on 2026-03-03.",
        "You were charged on 1/3, so a refund is possible.",
        "Your card ending 4242 will get the refund.",
        "The refund goes to Visa •••• 42.",
        "Refund py_3Nabc123 is on its way.",
        "Charge ch-3Nabc123 was refunded.",
        "Your VAT ID DE123456789 is valid.",
        "Subscription sub_1234abcd renews next month.",
        "Call us back on +49 30 1234567.",
    ],
)
def test_an_answer_naming_a_customer_detail_is_never_cached(helpcenter, answer):
    with pytest.raises(services.CustomerSpecificAnswer):
        _store("Where is my refund?", answer)

    assert SemanticCacheEntry.objects.count() == 0


@pytest.mark.parametrize(
    "question",
    [
        "I'm Anna Lopez, where is my refund?",
        "Where is the refund for invoice 2024-0012?",
        "Where is my refund of 58.31?",
        "Where is the refund for my charge on 3 March?",
    ],
)
def test_a_question_naming_a_customer_detail_is_never_cached(helpcenter, question):
    with pytest.raises(services.CustomerSpecificAnswer):
        _store(question, "Refunds take 5–10 business days to appear [refund-timing].")

    assert SemanticCacheEntry.objects.count() == 0


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        (
            "How long do refunds take?",
            "Once a refund is issued it takes 5–10 business days to appear on your statement, "
            "on the original payment method [refund-timing].",
        ),
        (
            "When can I talk to a person?",
            "Human staff work Monday–Friday, 08:00–18:00 CET; the assistant answers around the "
            "clock [contacting-support].",
        ),
        (
            "How much is Growth?",
            "Growth costs $49 a month or $490 a year (€49 or £49 in EUR or GBP); Scale is $1,990 "
            "a year [plans-and-prices].",
        ),
        (
            "What if a payment fails?",
            "We retry on days 1, 3 and 7 after the failure; after 14 days unpaid the account "
            "turns read-only until the invoice is paid [failed-payments].",
        ),
        (
            "How do I pay?",
            "Sure. Ledgerly accepts Visa, Mastercard and American Express; SEPA Direct Debit for "
            "EUR accounts; bank transfer only for Scale annual [payment-methods].",
        ),
        (
            "Refund on an annual plan after 100 days?",
            "Yes, a prorated refund: for Growth annual ($490), 100 days after the charge 8 months "
            "are unused, so $490 × 8 / 12 = $326.67 [refunds-annual-plans].",
        ),
        (
            "Is there a refund on monthly plans?",
            "Unfortunately, after 14 days there is no refund for a monthly charge. Within 14 "
            "days of the charge it is refunded in full [refunds-monthly-plans].",
        ),
    ],
)
def test_a_generic_help_center_answer_is_still_cached(helpcenter, question, answer):
    entry = _store(question, answer)

    assert SemanticCacheEntry.objects.filter(id=entry.id, answer=answer).exists()


# --- Near-misses beyond the labelled set -------------------------------------------------------


@pytest.mark.parametrize(
    ("cached", "asked"),
    [
        ("Can I get a refund?", "Can I not get a refund?"),
        ("Can I pay by card?", "Can I not pay by card?"),
        ("Do you refund annual plans?", "Don't you refund annual plans?"),
        ("Is VAT charged?", "Is VAT not charged?"),
        ("Is VAT charged?", "Is VAT never charged?"),
        ("Can I get a refund if I used the product?", "Can I get a refund if I never used it?"),
        (
            "Can I get a refund if I used the product?",
            "Can I get a refund if I haven't used the product?",
        ),
        ("Is my data deleted after cancellation?", "Is my data kept after cancellation?"),
        ("How long do refunds take?", "How long do refund decisions take?"),
        ("How do I cancel?", "How do I cancel my cancellation?"),
        ("Can staff approve refunds automatically?", "Can staff reject refunds automatically?"),
        ("Is a refund possible within two weeks?", "Is a refund possible within four weeks?"),
        ("What happens when my payment fails?", "What happens when my payment succeeds?"),
        ("How do I cancel my subscription?", "How do I renew my subscription?"),
        ("Can I cancel my subscription?", "Can I pause my subscription?"),
        ("Can I get a refund within 14 days?", "Can I get a refund within 30 days?"),
        ("Can I get a refund on the Starter plan?", "Can I get a refund on the Scale plan?"),
        ("Can I pay in EUR?", "Can I pay in GBP?"),
        # Found by bench/semantic_cache.py's review set after the fixes above.
        ("Do I pay VAT if I am in the EU?", "Do I pay VAT if I am outside the EU?"),
        (
            "Are duplicate charges under $25 approved automatically?",
            "Are duplicate charges over $25 approved automatically?",
        ),
        ("Is support open on weekdays?", "Is support closed on weekdays?"),
        ("Is SEPA available for EUR accounts?", "Is SEPA unavailable for EUR accounts?"),
        ("Can staff refund a disputed charge?", "Can staff refund an undisputed charge?"),
    ],
)
def test_a_near_miss_outside_the_labelled_set_never_hits(helpcenter, cached, asked):
    _store(cached, "Generic answer.")

    assert (
        services.semantic_cache_lookup(answer_model=MODEL, question=asked, prompt_version=PROMPT)
        is None
    )


@pytest.mark.parametrize(
    ("cached", "asked"),
    [
        ("Is a refund possible after 6 months?", "Is a refund possible after six months?"),
        ("Can I get a refund?", "can i get a refund"),
        ("Can't I get a refund after 14 days?", "Can I not get a refund after 14 days?"),
    ],
)
def test_a_paraphrase_outside_the_labelled_set_still_hits(helpcenter, cached, asked):
    entry = _store(cached, "Generic answer.")

    hit = services.semantic_cache_lookup(answer_model=MODEL, question=asked, prompt_version=PROMPT)

    assert hit is not None
    assert hit.entry_id == entry.id


# --- Staleness: an answer built from an older knowledge base --------------------------------


def test_an_answer_built_before_a_kb_change_is_never_served_after_it(helpcenter):
    # The FAQ lane reads the KB version, retrieves passages and calls the model; staff edit an
    # article while the model is answering; the answer is stored afterwards.
    version_of_passages = selectors.kb_version_get()
    article = selectors.article_get_by_slug(slug="payment-methods")
    assert article is not None
    services.article_update(article=article, body=article.body + "\n\nCheques are accepted.")

    _store(
        "What payment methods do you accept?",
        "PayPal, cheques and other methods are not accepted [payment-methods].",
        kb_version=version_of_passages,
    )

    assert (
        services.semantic_cache_lookup(
            answer_model=MODEL,
            question="What payment methods do you accept?",
            prompt_version=PROMPT,
        )
        is None
    )


# --- The Redis hot copy never carries one customer's turns into another's conversation -------


@pytest.mark.django_db(transaction=True)
def test_a_reused_conversation_id_never_serves_the_previous_customers_turns(
    customer, other_customer, redis_client
):
    conversation = services.conversation_start(customer=customer)
    for text in ("My card 4242 was charged twice", "Looking into it", "Thanks"):
        services.message_append(conversation=conversation, role="customer", content=text)
    hot.recent_turns(conversation=conversation)  # the hot copy now holds A's turns
    reused_id = conversation.pk
    # A's conversation is deleted (privacy request) and the id comes back, e.g. after a
    # database restore resets the sequence; B's conversation has as many turns as A's had.
    Conversation.objects.filter(pk=reused_id).delete()
    reused = Conversation.objects.create(id=reused_id, customer=other_customer, last_seq=3)
    Message.objects.bulk_create(
        Message(conversation=reused, seq=i, role="customer", content=f"B turn {i}")
        for i in (1, 2, 3)
    )

    turns = hot.recent_turns(conversation=reused)

    assert [t.content for t in turns] == ["B turn 1", "B turn 2", "B turn 3"]


# --- Retrieval while the HNSW index holds dead entries (re-indexed, not yet vacuumed) --------


class _RolledBack(Exception):
    pass


def test_retrieval_finds_the_right_article_after_many_rolled_back_reindexes(helpcenter):
    # A re-index that rolls back (a failed request, a test) leaves its inserted chunks in the
    # HNSW index as dead entries until VACUUM; pgvector drops them only after the scan's
    # candidate list was cut, so they crowd out the live chunks.
    for _ in range(25):
        with contextlib.suppress(_RolledBack), transaction.atomic():
            services.helpcenter_ingest(
                sources=[replace(s, body=s.body + "\n\nx") for s in load_directory()]
            )
            raise _RolledBack

    passages = selectors.passages_search(query="What are your support hours?", k=3)

    assert [p.slug for p in passages][:1] == ["contacting-support"]
    assert len(passages) == 3


@pytest.mark.parametrize(
    "sources",
    [
        [{"slug": "refund-timing", "title": "Refund of ch_3Nabc123 for Anna Lopez"}],
        [{"slug": "customer-anna-lopez-charges", "title": "When will I see my refund?"}],
    ],
)
def test_sources_that_are_not_help_center_articles_are_never_cached(helpcenter, sources):
    with pytest.raises(services.CustomerSpecificAnswer):
        services.semantic_cache_store(
            answer_model=MODEL,
            question="Where is my refund?",
            answer="Refunds take 5–10 business days to appear [refund-timing].",
            sources=sources,
            prompt_version=PROMPT,
            kb_version=selectors.kb_version_get(),
        )

    assert SemanticCacheEntry.objects.count() == 0


def test_the_lookup_log_never_keeps_a_customers_details(helpcenter):
    # The log is kept for hit-rate figures and is linked to no customer, so a customer's
    # deletion request could never reach a detail stored there.
    services.semantic_cache_lookup(
        answer_model=MODEL,
        question="Hi, I'm Anna Lopez: where is the refund of €58.31 for INV-2026-0042?",
        prompt_version=PROMPT,
    )
    services.semantic_cache_lookup(
        answer_model=MODEL, question="How long do refunds take?", prompt_version=PROMPT
    )

    logged = list(SemanticCacheLookup.objects.order_by("id").values_list("question", flat=True))
    assert logged[1] == "How long do refunds take?"
    assert [detail in logged[0] for detail in ("Anna", "Lopez", "58.31", "INV-2026")] == [False] * 4


@pytest.mark.parametrize("trial", range(3))
@pytest.mark.django_db(transaction=True)
def test_hot_copy_matches_postgres_after_writers_race_readers_that_rebuild_it(
    customer, redis_client, settings, trial
):
    # Readers rebuild the copy from Postgres while writers' on-commit appends land in any
    # order (and onto a copy that may already hold their turn): whatever interleaving, the
    # next read must equal Postgres.
    settings.CONVERSATION_HOT_TURNS = 12
    conversation = services.conversation_start(customer=customer)
    services.message_append(conversation=conversation, role="customer", content="first")
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for i in range(8):
                services.message_append(
                    conversation=Conversation.objects.get(pk=conversation.pk),
                    role="customer",
                    content=f"{name}-{i}",
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def reader() -> None:
        try:
            barrier.wait()
            for _ in range(20):
                redis_client.delete(hot.key(conversation))
                hot.recent_turns(conversation=conversation)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    expected = [
        (m.seq, m.content)
        for m in Message.objects.filter(conversation=conversation).order_by("-seq")[:12]
    ][::-1]
    assert errors == []
    assert [(t.seq, t.content) for t in hot.recent_turns(conversation=conversation)] == expected
    stored = [json.loads(x) for x in redis_client.lrange(hot.key(conversation), 0, -1)]
    assert [(t["seq"], t["content"]) for t in stored] == expected
