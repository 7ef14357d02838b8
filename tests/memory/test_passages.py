"""What a retrieved passage holds: its article's best chunks (not only the best one), within
the FAQ prompt's word budget."""

from __future__ import annotations

import pytest

from memory import selectors
from memory.models import Chunk


# Each fact is in its article's second-best chunk for the question: with one chunk per article
# the article was found and the fact was not (bench/data/retrieval_passages.jsonl).
@pytest.mark.parametrize(
    ("question", "slug", "fact"),
    [
        ("How long do I have to tell you about a double charge?", "duplicate-charges", "180 days"),
        (
            "If I drop down from Scale to Growth, does that happen right away?",
            "downgrading-your-plan",
            "next period",
        ),
        (
            "Wie lange habe ich Zeit, bei einem Monatsabo eine Erstattung zu beantragen?",
            "refunds-monthly-plans",
            "within 14 days",
        ),
    ],
)
def test_the_fact_in_the_next_section_of_the_best_article_is_returned(
    helpcenter, question, slug, fact
):
    passages = selectors.passages_search(query=question, k=4, cache=False)

    passage = next(p for p in passages if p.slug == slug)
    assert fact in " ".join(passage.text.split())


def test_a_passage_is_its_articles_best_chunks_in_the_articles_order(helpcenter):
    passages = selectors.passages_search(
        query="when will my refund reach my card", k=4, cache=False
    )

    chunks = [Chunk.objects.filter(id__in=p.chunk_ids).order_by("ordinal") for p in passages]
    assert len({p.slug for p in passages}) == len(passages) == 4
    assert [tuple(c.id for c in found) for found in chunks] == [p.chunk_ids for p in passages]
    assert [p.text for p in passages] == ["\n\n".join(c.text for c in found) for found in chunks]
    assert all(
        {c.article.slug for c in found} == {p.slug}
        for p, found in zip(passages, chunks, strict=True)
    )
    assert all(p.chunk_id in p.chunk_ids for p in passages)
    assert [len(p.chunk_ids) for p in passages] == [selectors.CHUNKS_PER_PASSAGE] * 4


def test_the_passages_together_stay_within_the_word_budget(helpcenter, monkeypatch):
    question = "how do refunds work for annual and monthly plans"
    full = selectors.passages_search(query=question, k=4, cache=False)
    first_chunks = sum(len(Chunk.objects.get(id=p.chunk_id).text.split()) for p in full)
    monkeypatch.setattr(selectors, "PASSAGES_MAX_WORDS", first_chunks)

    capped = selectors.passages_search(query=question, k=4, cache=False)

    assert sum(len(p.text.split()) for p in full) <= 600
    assert sum(len(p.text.split()) for p in full) > first_chunks
    assert [p.slug for p in capped] == [p.slug for p in full]
    assert [p.chunk_ids for p in capped] == [(p.chunk_id,) for p in full]


def test_a_cached_result_is_the_same_passages(redis_client, helpcenter):
    question = "where do I cancel my subscription"
    fresh = selectors.passages_search(query=question, k=4)

    cached = selectors.passages_search(query=question, k=4)

    assert cached == fresh
    assert cached == selectors.passages_search(query=question, k=4, cache=False)
