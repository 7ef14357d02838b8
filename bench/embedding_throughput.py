"""Embedding throughput of each provider on this machine (no database needed).

Embeds the 206 labelled benchmark questions and the help-center paragraphs with wordllama (the
default) and minilm (opt-in, numpy all-MiniLM-L6-v2), and times single-query latency, the cost
a semantic-cache lookup or a retrieval pays per question. Ends with one JSON line:
{"bench": "embedding_throughput", "<provider>_questions_per_s", "<provider>_passages_per_s",
 "<provider>_query_ms", ...}
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def _rate(embed: Callable[[Sequence[str]], object], texts: list[str], seconds: float) -> float:
    embed(texts[:8])  # warm up
    reps, started = 0, time.perf_counter()
    while reps == 0 or time.perf_counter() - started < seconds:
        embed(texts)
        reps += 1
    return reps * len(texts) / (time.perf_counter() - started)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledgerly.settings")
    import django

    django.setup()
    from memory.embeddings import MiniLMProvider, WordLlamaProvider

    questions = [
        json.loads(line)["question"]
        for name in ("retrieval_questions.jsonl", "retrieval_questions_heldout.jsonl")
        for line in (DATA / name).read_text().splitlines()
        if line.strip()
    ]
    paragraphs = [
        p
        for path in sorted((ROOT / "memory" / "helpcenter").glob("**/*.md"))
        for p in path.read_text().split("\n\n")
        if len(p) > 80
    ]
    figures: dict[str, float | str] = {"bench": "embedding_throughput"}
    for name, provider in (("wordllama", WordLlamaProvider(256)), ("minilm", MiniLMProvider(384))):
        q_rate = _rate(provider.embed, questions, 3.0)
        p_rate = _rate(provider.embed, paragraphs, 3.0)
        started = time.perf_counter()
        for question in questions[:50]:
            provider.embed([question])
        query_ms = (time.perf_counter() - started) / 50 * 1000
        print(
            f"{name:9s} {q_rate:9.0f} questions/s ({len(questions)})  "
            f"{p_rate:9.0f} passages/s ({len(paragraphs)})  {query_ms:6.2f} ms per single query"
        )
        figures |= {
            f"{name}_questions_per_s": round(q_rate, 1),
            f"{name}_passages_per_s": round(p_rate, 1),
            f"{name}_query_ms": round(query_ms, 3),
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
