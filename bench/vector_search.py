"""Vector search benchmark: HNSW top-5 over 100,000 chunks, latency and recall against exact search.

The chunks are real wordllama embeddings (256-d, unit length) of 100,000 synthetic passages:
sentences of the help center with words dropped, swapped for other help-center words and mixed
with sentences of other articles, so that the vectors have the clustered shape of a real
knowledge base. The queries are the 206 labelled customer questions plus 294 held-back
synthetic passages. The table and index are built exactly like memory_chunk's (HNSW, cosine,
m=16, ef_construction=64), in a private embedded Postgres.

Exact top-5 comes from numpy (brute-force dot products); recall@5 = |HNSW ∩ exact| / 5 averaged
over queries. Latency is measured at the client (psycopg over the unix socket) after a warm-up,
for several hnsw.ef_search values; the JSON line reports the one MEMORY_HNSW_EF_SEARCH selects.

    python bench/vector_search.py [--chunks 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time

from memory_harness import DATA, setup_django

EF_SEARCH_VALUES = (20, 40, 64, 100, 160, 250)
# ann-benchmarks' tie-aware recall: a result counts when its distance is within EPS of the
# 5th exact distance (near-duplicate passages make exact ties common).
EPS = 1e-3


def synthetic_passages(n: int, seed: int) -> list[str]:
    from memory.knowledge import chunk_body, load_directory

    rng = random.Random(seed)
    articles = load_directory()
    sentences = [
        s.strip()
        for a in articles
        for p in chunk_body(a.body)
        for s in re.split(r"(?<=[.!?])\s+|\n+", p.text)
        if len(s.split()) >= 4
    ]
    vocab = sorted({w for s in sentences for w in re.findall(r"[A-Za-z$€£0-9,]+", s)})
    out: dict[str, None] = {}  # distinct passages only: identical vectors make ties
    while len(out) < n:
        words = rng.choice(sentences).split()
        if rng.random() < 0.5:
            words += rng.choice(sentences).split()
        words = [
            rng.choice(vocab) if rng.random() < 0.2 else w for w in words if rng.random() > 0.15
        ]
        out[" ".join(words) or rng.choice(vocab)] = None
    return list(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    setup_django(migrate=False)
    import numpy as np
    import psycopg
    from django.conf import settings
    from django.db import connection
    from pgvector.psycopg import register_vector

    from memory import embeddings

    provider = embeddings.get_provider()
    t0 = time.perf_counter()
    texts = synthetic_passages(args.chunks, seed=1)
    corpus = np.asarray(provider.embed(texts), dtype=np.float32)
    questions = [
        json.loads(line)["question"]
        for name in ("retrieval_questions.jsonl", "retrieval_questions_heldout.jsonl")
        for line in (DATA / name).open()
    ]
    extra = synthetic_passages(max(args.queries - len(questions), 0), seed=2)
    queries = np.asarray(provider.embed((questions + extra)[: args.queries]), dtype=np.float32)
    elapsed = time.perf_counter() - t0
    print(f"embedded {len(texts)} chunks and {len(queries)} queries in {elapsed:.1f} s")

    sims = queries @ corpus.T
    exact = np.argsort(-sims, axis=1)[:, :5] + 1  # ids start at 1
    fifth = np.sort(sims, axis=1)[:, -5]

    params = connection.get_connection_params()
    conninfo = psycopg.conninfo.make_conninfo(
        dbname=params.get("dbname", "postgres"),
        user=params.get("user", "postgres"),
        host=params.get("host"),
        port=params.get("port") or None,
        password=params.get("password") or None,
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("DROP TABLE IF EXISTS bench_chunk")
        conn.execute(
            f"CREATE TABLE bench_chunk (id bigint PRIMARY KEY, embedding vector({provider.dim}))"
        )
        t0 = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY bench_chunk (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int8", "vector"])
            for i, vector in enumerate(corpus, start=1):
                copy.write_row((i, vector))
        print(f"loaded in {time.perf_counter() - t0:.1f} s")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        t0 = time.perf_counter()
        conn.execute(
            "CREATE INDEX bench_chunk_hnsw ON bench_chunk USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        print(f"HNSW index (m=16, ef_construction=64) built in {time.perf_counter() - t0:.1f} s")
        conn.execute("VACUUM ANALYZE bench_chunk")

        sql = "SELECT id FROM bench_chunk ORDER BY embedding <=> %s LIMIT 5"
        plan = conn.execute("EXPLAIN " + sql, (queries[0],)).fetchall()
        assert any("bench_chunk_hnsw" in row[0] for row in plan), plan
        results: dict[int, dict[str, float]] = {}
        for ef in EF_SEARCH_VALUES:
            conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            for q in queries[:50]:  # warm-up: index pages into shared buffers
                conn.execute(sql, (q,)).fetchall()
            latencies = []
            recalls = []
            tie_aware = []
            for i, (q, truth) in enumerate(zip(queries, exact, strict=True)):
                started = time.perf_counter()
                got = [row[0] for row in conn.execute(sql, (q,)).fetchall()]
                latencies.append((time.perf_counter() - started) * 1000)
                recalls.append(len(set(got) & set(truth.tolist())) / 5)
                got_sims = corpus[[g - 1 for g in got]] @ q
                tie_aware.append(float(np.sum(got_sims >= fifth[i] - EPS)) / 5)
            results[ef] = {
                "p50_ms": round(float(np.percentile(latencies, 50)), 3),
                "p95_ms": round(float(np.percentile(latencies, 95)), 3),
                "recall_at_5": round(float(np.mean(recalls)), 4),
                "recall_at_5_tie_aware": round(float(np.mean(tie_aware)), 4),
            }
            print(f"ef_search={ef:4d} {results[ef]}")
        conn.execute("DROP TABLE bench_chunk")

    ef = settings.MEMORY_HNSW_EF_SEARCH
    if ef not in results:
        raise SystemExit(f"MEMORY_HNSW_EF_SEARCH={ef} is not among {EF_SEARCH_VALUES}")
    print(f"MEMORY_HNSW_EF_SEARCH={ef}")
    print(
        json.dumps(
            {"bench": "vector_search", "chunks": args.chunks, "ef_search": ef, **results[ef]}
        )
    )


if __name__ == "__main__":
    main()
