"""Semantic-cache benchmark: choose the similarity threshold from labelled pairs, then measure.

bench/data/semantic_cache_pairs.jsonl holds pairs (cached question, new question), labelled
"paraphrase" (same answer: should hit) or "near_miss" (different answer: must never hit), e.g.
the refund window on a monthly vs an annual plan, adding vs removing a VAT ID, Visa vs SEPA.

1. Sweep: cosine similarity alone, and cosine + the discriminator guard (memory/semantic_cache.py).
   The chosen threshold is the lowest on a 0.01 grid at least MARGIN above every near-miss the
   guard lets through (zero false hits with room for unseen near-misses).
2. Leave-one-out: re-choose the threshold without each near-miss; count how many would then hit.
3. End to end through Postgres: per pair, store the cached question's answer with
   semantic_cache_store, ask with semantic_cache_lookup at the chosen threshold.

    python bench/semantic_cache.py
"""

from __future__ import annotations

import json
import math

from memory_harness import DATA, setup_django

MARGIN = 0.02
ANSWER_MODEL = "bench-answer-model"  # entries are served only for the model that wrote them


def choose(near_miss_sims: list[float]) -> float:
    top = max(near_miss_sims, default=0.0)
    return math.ceil(round((top + MARGIN) * 100, 6)) / 100


def main() -> None:
    setup_django()
    import numpy as np
    from django.conf import settings

    from memory import embeddings, services
    from memory.semantic_cache import guard_allows

    services.helpcenter_ingest()
    pairs = [json.loads(line) for line in (DATA / "semantic_cache_pairs.jsonl").open()]
    para = [p for p in pairs if p["label"] == "paraphrase"]
    near = [p for p in pairs if p["label"] == "near_miss"]
    print(f"{len(para)} paraphrase pairs, {len(near)} near-miss pairs")
    a = embeddings.embed_texts([p["cached"] for p in pairs])
    b = embeddings.embed_texts([p["asked"] for p in pairs])
    for p, sim in zip(pairs, (a * b).sum(axis=1), strict=True):
        p["sim"] = float(sim)
        p["guard"] = guard_allows(p["cached"], p["asked"])

    for name, use_guard in (("cosine only", False), ("cosine + guard", True)):
        leaked = [p["sim"] for p in near if p["guard"] or not use_guard]
        t = choose(leaked)
        hits = sum(p["sim"] >= t and (p["guard"] or not use_guard) for p in para)
        print(
            f"{name:15s} max near-miss similarity {max(leaked):.3f} -> threshold {t:.2f}: "
            f"hit rate {hits / len(para):.3f} ({hits}/{len(para)}), false hits 0"
        )
        for fixed in (0.80, 0.85, 0.90, 0.95):
            h = sum(p["sim"] >= fixed and (p["guard"] or not use_guard) for p in para)
            f = sum(p["sim"] >= fixed and (p["guard"] or not use_guard) for p in near)
            print(f"    at {fixed:.2f}: hit rate {h / len(para):.3f}, false hits {f}")

    leaked_all = [p for p in near if p["guard"]]
    loo_false = 0
    for held in leaked_all:
        t = choose([p["sim"] for p in leaked_all if p is not held])
        loo_false += held["sim"] >= t
    print(f"leave-one-out (cosine + guard): {loo_false} of {len(near)} near-misses would hit")

    threshold = choose([p["sim"] for p in leaked_all])
    print(
        f"chosen threshold {threshold:.2f} (SEMANTIC_CACHE_THRESHOLD is "
        f"{settings.SEMANTIC_CACHE_THRESHOLD:.2f})"
    )
    hits, sims = _end_to_end(pairs, threshold)
    hit_rate = round(hits["paraphrase"] / len(para), 4)
    print(
        f"end to end: {hits['paraphrase']}/{len(para)} paraphrases hit, "
        f"{hits['near_miss']}/{len(near)} near-misses hit; "
        f"hit similarity median {float(np.median(sims)) if sims else 0:.3f}"
    )
    # Pairs written by a reviewer after the threshold and the guard were chosen: the labelled
    # set's "0 false hits" holds by construction. First measured at 3/20 near-misses hitting;
    # the guard's scope/compare/state groups were then added for them, so this set is no
    # longer unseen either: a fresh set is the only honest check of the next change.
    heldout = [json.loads(line) for line in (DATA / "semantic_cache_pairs_review.jsonl").open()]
    held_hits, _ = _end_to_end(heldout, threshold)
    held_para = sum(p["label"] == "paraphrase" for p in heldout)
    held_near = len(heldout) - held_para
    print(
        f"review set: {held_hits['paraphrase']}/{held_para} paraphrases hit, "
        f"{held_hits['near_miss']}/{held_near} near-misses hit"
    )
    print(
        json.dumps(
            {
                "bench": "semantic_cache",
                "threshold": threshold,
                "hit_rate": hit_rate,
                "false_hits": hits["near_miss"],
                "paraphrases": len(para),
                "near_misses": len(near),
                "review_hit_rate": round(held_hits["paraphrase"] / held_para, 4),
                "review_false_hits": held_hits["near_miss"],
                "review_near_misses": held_near,
            }
        )
    )


def _end_to_end(pairs: list[dict], threshold: float) -> tuple[dict[str, int], list[float]]:
    """Per pair, through Postgres: store the cached question's answer, ask the other."""
    from memory import selectors, services
    from memory.models import SemanticCacheEntry

    hits = {"paraphrase": 0, "near_miss": 0}
    kb_version = selectors.kb_version_get()
    article = selectors.articles_list()[0]
    sims: list[float] = []
    for p in pairs:
        SemanticCacheEntry.objects.all().delete()
        try:
            services.semantic_cache_store(
                question=p["cached"],
                answer="A generic help-center answer.",
                sources=[{"slug": article.slug, "title": article.title}],
                prompt_version="bench-v1",
                kb_version=kb_version,
                answer_model=ANSWER_MODEL,
            )
        except services.CustomerSpecificAnswer as exc:
            print(f"  not cached ({exc}): {p['cached']!r}")
            continue
        got = services.semantic_cache_lookup(
            question=p["asked"],
            prompt_version="bench-v1",
            answer_model=ANSWER_MODEL,
            threshold=threshold,
        )
        hits[p["label"]] += got is not None
        if got is not None:
            sims.append(got.similarity)
        if got is not None and p["label"] == "near_miss":
            print(f"  FALSE HIT {got.similarity:.3f}: {p['cached']!r} ~ {p['asked']!r}")
    return hits, sims


if __name__ == "__main__":
    main()
