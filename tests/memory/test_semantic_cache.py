"""The semantic answer cache: hits on paraphrases, never on near-misses, never customer data."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from memory import selectors, services
from memory.models import SemanticCacheEntry, SemanticCacheLookup

PAIRS = [
    json.loads(line)
    for line in (Path(__file__).resolve().parents[2] / "bench/data/semantic_cache_pairs.jsonl")
    .read_text()
    .splitlines()
]
NEAR_MISSES = [p for p in PAIRS if p["label"] == "near_miss"]
PROMPT = "faq_answer@test"
MODEL = "claude-haiku-5-5"  # the model that wrote the cached answers


def _store(question: str, answer: str = "Generic answer.", prompt: str = PROMPT):
    return services.semantic_cache_store(
        answer_model=MODEL,
        question=question,
        answer=answer,
        sources=[{"slug": "refunds-monthly-plans", "title": "Refunds on monthly plans"}],
        prompt_version=prompt,
        kb_version=selectors.kb_version_get(),
    )


@pytest.mark.parametrize(
    ("cached", "asked"),
    [
        ("How do I cancel my subscription?", "how do i cancel my subscription"),
        ("How do I remove my VAT ID?", "How can I delete the VAT ID from my account?"),
        ("Are duplicate charges refunded?", "Do you refund a duplicate charge?"),
    ],
)
def test_a_paraphrase_gets_the_cached_answer(helpcenter, cached, asked):
    entry = _store(cached, answer="The cached answer.")

    hit = services.semantic_cache_lookup(answer_model=MODEL, question=asked, prompt_version=PROMPT)

    assert hit is not None
    assert (hit.entry_id, hit.answer, hit.question) == (entry.id, "The cached answer.", cached)
    assert hit.sources == [{"slug": "refunds-monthly-plans", "title": "Refunds on monthly plans"}]
    assert SemanticCacheEntry.objects.get(id=entry.id).hits == 1


@pytest.mark.parametrize(
    "pair", NEAR_MISSES, ids=[f"{p['cached']} ~ {p['asked']}" for p in NEAR_MISSES]
)
def test_a_near_miss_never_hits_at_the_configured_threshold(helpcenter, pair):
    _store(pair["cached"])

    assert (
        services.semantic_cache_lookup(
            answer_model=MODEL, question=pair["asked"], prompt_version=PROMPT
        )
        is None
    )


def test_the_labelled_set_has_at_least_40_pairs_of_each_kind():
    labels = [p["label"] for p in PAIRS]
    assert labels.count("paraphrase") >= 40
    assert labels.count("near_miss") >= 40


@pytest.mark.parametrize(
    ("question", "answer", "reason"),
    [
        ("Why was I charged?", "We charged ana.lopez@example.com twice.", "email address"),
        ("Is my invoice paid?", "INV-2026-0042 was paid on Monday.", "invoice number"),
        ("Refund status?", "Refund for ch_3Nabc123 is on its way.", "payment reference"),
        ("How much is refunded?", "You will get $326.12 back.", "amount not in the help center"),
        ("Refund for INV-2026-0042?", "Refunds take 5–10 business days.", "invoice number"),
    ],
)
def test_answers_with_customer_data_are_refused(helpcenter, question, answer, reason):
    with pytest.raises(services.CustomerSpecificAnswer, match=reason):
        _store(question, answer=answer)

    assert SemanticCacheEntry.objects.count() == 0


def test_public_help_center_amounts_are_cacheable(helpcenter):
    entry = _store(
        "How much is Growth?", answer="Growth costs $49 a month or $490 a year; Scale $1,990."
    )

    assert entry.pk is not None


def test_a_new_prompt_version_invalidates_the_cache(helpcenter):
    _store("What payment methods do you accept?", prompt="faq_answer@1")

    assert services.semantic_cache_lookup(
        answer_model=MODEL,
        question="What payment methods do you accept?",
        prompt_version="faq_answer@1",
    )
    assert (
        services.semantic_cache_lookup(
            answer_model=MODEL,
            question="What payment methods do you accept?",
            prompt_version="faq_answer@2",
        )
        is None
    )


def test_a_kb_change_invalidates_the_cache(helpcenter):
    _store("What payment methods do you accept?")
    article = selectors.article_get_by_slug(slug="payment-methods")
    assert article is not None

    services.article_update(article=article, body=article.body + "\n\nCheques are not accepted.")

    assert (
        services.semantic_cache_lookup(
            answer_model=MODEL,
            question="What payment methods do you accept?",
            prompt_version=PROMPT,
        )
        is None
    )
    assert services.semantic_cache_purge() == 1


def test_an_expired_entry_does_not_hit(helpcenter):
    entry = _store("How do I export my data?")
    SemanticCacheEntry.objects.filter(id=entry.id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert (
        services.semantic_cache_lookup(
            answer_model=MODEL, question="How do I export my data?", prompt_version=PROMPT
        )
        is None
    )


def test_every_lookup_is_recorded_with_hit_and_similarity(helpcenter):
    _store("How do I export my data?")

    services.semantic_cache_lookup(
        answer_model=MODEL, question="How can I export my data?", prompt_version=PROMPT
    )
    services.semantic_cache_lookup(
        answer_model=MODEL, question="What are your support hours?", prompt_version=PROMPT
    )
    services.semantic_cache_lookup(
        answer_model=MODEL, question="How do I import my data?", prompt_version=PROMPT
    )
    stats = selectors.semantic_cache_stats()

    rows = list(SemanticCacheLookup.objects.order_by("id").values_list("hit", "reason"))
    assert rows == [(True, "hit"), (False, "below_threshold"), (False, "below_threshold")]
    assert SemanticCacheLookup.objects.filter(similarity__isnull=True).count() == 0
    assert (stats.lookups, stats.hits, stats.hit_rate) == (3, 1, 0.3333)
    assert stats.mean_hit_similarity is not None


OTHER_MODEL = "claude-sonnet-5-5"


def test_an_answer_is_served_only_for_the_model_that_wrote_it(helpcenter):
    _store("What payment methods do you accept?", answer="Written by the small model.")

    same = services.semantic_cache_lookup(
        question="What payment methods do you accept?", prompt_version=PROMPT, answer_model=MODEL
    )
    other = services.semantic_cache_lookup(
        question="What payment methods do you accept?",
        prompt_version=PROMPT,
        answer_model=OTHER_MODEL,
    )

    assert same is not None
    assert same.answer == "Written by the small model."
    assert other is None
    assert list(SemanticCacheLookup.objects.order_by("id").values_list("answer_model", "hit")) == [
        (MODEL, True),
        (OTHER_MODEL, False),
    ]


def test_two_models_answers_to_one_question_are_two_entries(helpcenter):
    question = "How do I cancel my subscription?"
    entries = {
        model: services.semantic_cache_store(
            question=question,
            answer=answer,
            sources=[],
            prompt_version=PROMPT,
            kb_version=selectors.kb_version_get(),
            answer_model=model,
        )
        for model, answer in [(MODEL, "Small answer."), (OTHER_MODEL, "Large answer.")]
    }

    assert entries[MODEL].id != entries[OTHER_MODEL].id
    for model, answer in [(MODEL, "Small answer."), (OTHER_MODEL, "Large answer.")]:
        hit = services.semantic_cache_lookup(
            question=question, prompt_version=PROMPT, answer_model=model
        )
        assert hit is not None
        assert hit.answer == answer


def test_the_answering_model_is_required(helpcenter):
    with pytest.raises(TypeError):
        services.semantic_cache_store(  # type: ignore[call-arg]
            question="How do I cancel?",
            answer="From settings.",
            sources=[],
            prompt_version=PROMPT,
            kb_version=selectors.kb_version_get(),
        )
    with pytest.raises(TypeError):
        services.semantic_cache_lookup(  # type: ignore[call-arg]
            question="How do I cancel?", prompt_version=PROMPT
        )
    with pytest.raises(ValueError, match="answer_model"):
        services.semantic_cache_store(
            question="How do I cancel?",
            answer="From settings.",
            sources=[],
            prompt_version=PROMPT,
            kb_version=selectors.kb_version_get(),
            answer_model=" ",
        )
    assert SemanticCacheEntry.objects.count() == 0


def test_entries_from_before_the_answer_model_column_are_never_served(helpcenter):
    entry = _store("What payment methods do you accept?")
    SemanticCacheEntry.objects.filter(id=entry.id).update(
        answer_model=""
    )  # the migration's default

    assert (
        services.semantic_cache_lookup(
            question="What payment methods do you accept?",
            prompt_version=PROMPT,
            answer_model=MODEL,
        )
        is None
    )
