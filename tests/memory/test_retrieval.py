"""Help-center retrieval: two encoders fused, multilingual query rewriting, the result cache."""

from __future__ import annotations

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledgerly.redis_keys import prefixed
from memory import embeddings, hot, query_rewrite, selectors, services
from memory.models import Article, Chunk


def _searches(queries: CaptureQueriesContext) -> int:
    """How many of the captured queries scored chunks (one per search that really ran)."""
    return sum("FROM memory_chunk c" in q["sql"] and "ORDER BY" in q["sql"] for q in queries)


# --- query rewriting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "terms"),
    [
        ("¿Puedo exportar mis datos?", {"export", "data"}),
        ("Meine Rechnung als PDF herunterladen", {"invoice"}),
        ("Je voudrais un remboursement", {"refund"}),
        ("Ich wurde doppelt belastet", {"charged", "twice", "duplicate"}),
    ],
)
def test_foreign_billing_words_get_their_english_terms(question, terms):
    assert terms <= set(query_rewrite.expansions(question))
    assert query_rewrite.expand(question).startswith(question)


@pytest.mark.parametrize(
    "question",
    ["How long do I have to get my money back?", "can i pay by card", "where is my invoice"],
)
def test_an_english_question_is_left_as_it_is(question):
    assert query_rewrite.expand(question) == question


def test_a_phrase_is_translated_as_a_whole_and_terms_are_not_repeated():
    assert query_rewrite.expansions("Doppelt belastet!") == [
        "charged",
        "twice",
        "duplicate",
        "charge",
    ]


# --- retrieval ------------------------------------------------------------------------------------


def test_every_chunk_is_embedded_by_both_encoders(helpcenter):
    second = embeddings.minilm_provider()
    assert second is not None
    assert Chunk.objects.filter(minilm_embedding__isnull=True).count() == 0
    assert set(Article.objects.values_list("indexed_model_id", flat=True)) == {
        f"{embeddings.get_provider().model_id}+{second.model_id}"
    }


def test_an_article_indexed_by_the_first_encoder_only_is_reindexed(helpcenter):
    # A database indexed before the second encoder existed: its articles are stale.
    Article.objects.update(indexed_model_id=embeddings.get_provider().model_id)
    Chunk.objects.update(minilm_embedding=None)

    report = services.helpcenter_ingest()

    assert len(report.updated) == Article.objects.count()
    assert Chunk.objects.filter(minilm_embedding__isnull=True).count() == 0


@pytest.mark.parametrize(
    ("question", "slug"),
    [
        ("¿Puedo exportar mis datos en CSV?", "exporting-your-data"),
        ("Wo ändere ich die Rechnungsadresse?", "changing-billing-address"),
        ("Quels moyens de paiement acceptez-vous ? carte ?", "payment-methods"),
    ],
)
def test_a_question_in_spanish_german_or_french_finds_its_article(helpcenter, question, slug):
    found = [p.slug for p in selectors.passages_search(query=question, k=3, cache=False)]

    assert slug in found


def test_the_fused_ranking_is_the_average_of_both_encoders(helpcenter):
    query = "what happens when my card is declined"
    passages = selectors.passages_search(query=query, k=1, cache=False)
    best = Chunk.objects.get(id=passages[0].chunk_id)
    first = embeddings.embed_query(query)
    second = embeddings.embed_query(query, provider=embeddings.minilm_provider())
    expected = 0.5 * float(best.embedding @ first) + 0.5 * float(best.minilm_embedding @ second)

    assert passages[0].slug == "failed-payments"
    assert passages[0].score == pytest.approx(expected, abs=1e-4)


# --- the result cache ---------------------------------------------------------------------------


@pytest.fixture
def search_cache(redis_client, helpcenter):
    return redis_client


def test_a_hundred_identical_questions_are_one_search(search_cache):
    with CaptureQueriesContext(connection) as queries:
        results = [
            selectors.passages_search(query="What's your refund window?", k=3) for _ in range(100)
        ]

    assert _searches(queries) == 1
    assert all(r == results[0] for r in results)
    assert results[0][0].slug == "refunds-monthly-plans"


def test_the_cache_key_ignores_case_and_spacing_but_not_k(search_cache):
    with CaptureQueriesContext(connection) as queries:
        selectors.passages_search(query="What's your refund window?", k=3)
        selectors.passages_search(query="  what's YOUR refund   window? ", k=3)
        selectors.passages_search(query="What's your refund window?", k=2)

    assert _searches(queries) == 2


def test_the_cache_stores_no_question_text(search_cache):
    selectors.passages_search(query="my secret question about refunds", k=3)

    keys = [k.decode() for k in search_cache.keys(prefixed(f"{selectors.SEARCH_CACHE_PREFIX}*"))]
    assert len(keys) == 1
    assert "secret" not in keys[0]


def test_an_article_edit_invalidates_the_cached_results(search_cache):
    question = "can I buy a gift card for a friend"
    before = selectors.passages_search(query=question, k=1)
    services.article_create(
        slug="gift-cards",
        title="Gift cards and vouchers",
        section="Account",
        body="Ledgerly sells no gift cards or vouchers; a friend can start a plan of their own.",
    )

    with CaptureQueriesContext(connection) as queries:
        after = selectors.passages_search(query=question, k=1)

    assert before[0].slug != "gift-cards"
    assert _searches(queries) == 1
    assert after[0].slug == "gift-cards"


def test_an_article_update_invalidates_the_cached_text(search_cache):
    question = "when will i see my refund"
    selectors.passages_search(query=question, k=1)
    article = Article.objects.get(slug="refund-timing")
    services.article_update(article=article, body=article.body + "\n\nA new closing line.")

    after = selectors.passages_search(query=question, k=3)

    timing = next(p for p in after if p.slug == "refund-timing")
    assert Chunk.objects.filter(id=timing.chunk_id).exists()


def test_a_kb_version_bump_invalidates_the_cached_results(search_cache):
    selectors.passages_search(query="how do i cancel", k=3)
    services.kb_version_bump()

    with CaptureQueriesContext(connection) as queries:
        selectors.passages_search(query="how do i cancel", k=3)

    assert _searches(queries) == 1


def test_a_redis_outage_only_costs_the_search(helpcenter, monkeypatch):
    class Down:
        def get(self, *args, **kwargs):
            raise redis.ConnectionError("down")

        set = get

    monkeypatch.setattr(hot, "client", Down)

    passages = selectors.passages_search(query="What are your support hours?", k=3)

    assert passages[0].slug == "contacting-support"
