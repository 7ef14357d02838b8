"""The default embedding model becomes all-MiniLM-L6-v2 (384-d; it was wordllama, 256-d).

The three vector columns change dimension. Their contents are re-embedded in place rather than
dropped: help-center chunks (so retrieval keeps working before the next ingest) and customer
memories (facts that cannot be regenerated). Semantic-cache entries are deleted: they are
regenerable answers, and lookups already ignore entries of another embedding model. The
embedding cache has no fixed dimension and keeps both models' rows (keyed by model id).

Steps: drop the HNSW indexes, let the columns take any dimension, re-embed, fix the dimension,
rebuild the indexes. Reversible: backwards re-embeds with wordllama at 256-d.
"""

from collections.abc import Callable, Sequence

import numpy as np
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations

Embed = Callable[[Sequence[str]], np.ndarray]


def _minilm() -> tuple[str, Embed]:
    from memory.minilm import MiniLMEncoder

    return "all-minilm-l6-v2", MiniLMEncoder().encode


def _wordllama() -> tuple[str, Embed]:
    from memory.embeddings import WordLlamaProvider

    provider = WordLlamaProvider(dim=256)
    return provider.model_id, provider.embed


def _reembed(apps, load: Callable[[], tuple[str, Embed]]) -> None:
    from memory.knowledge import passage_embedding_text

    Chunk = apps.get_model("memory", "Chunk")
    Article = apps.get_model("memory", "Article")
    CustomerMemory = apps.get_model("memory", "CustomerMemory")
    SemanticCacheEntry = apps.get_model("memory", "SemanticCacheEntry")

    SemanticCacheEntry.objects.all().delete()
    chunks = list(Chunk.objects.select_related("article"))
    memories = list(CustomerMemory.objects.all())
    if not chunks and not memories:
        return
    model_id, embed = load()
    if chunks:
        vectors = embed(
            [
                passage_embedding_text(
                    title=c.article.title,
                    keywords=c.article.keywords,
                    heading=c.heading,
                    text=c.text,
                )
                for c in chunks
            ]
        )
        for chunk, vector in zip(chunks, vectors, strict=True):
            chunk.embedding = vector
        Chunk.objects.bulk_update(chunks, ["embedding"], batch_size=500)
        Article.objects.filter(id__in={c.article_id for c in chunks}).update(
            indexed_model_id=model_id
        )
    if memories:
        for memory, vector in zip(memories, embed([m.text for m in memories]), strict=True):
            memory.embedding = vector
        CustomerMemory.objects.bulk_update(memories, ["embedding"], batch_size=500)


def _run(apps, schema_editor, load: Callable[[], tuple[str, Embed]]) -> None:
    _reembed(apps, load)
    # Deleted cache entries leave deferred foreign-key checks pending (the lookup log points at
    # them), and PostgreSQL refuses to ALTER a table with pending trigger events: run them now.
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def forwards(apps, schema_editor) -> None:
    _run(apps, schema_editor, _minilm)


def backwards(apps, schema_editor) -> None:
    _run(apps, schema_editor, _wordllama)


def _hnsw(name: str) -> pgvector.django.indexes.HnswIndex:
    return pgvector.django.indexes.HnswIndex(
        ef_construction=64,
        fields=["embedding"],
        m=16,
        name=name,
        opclasses=["vector_cosine_ops"],
    )


class Migration(migrations.Migration):
    dependencies = [
        ("memory", "0004_conversations_and_customer_memory"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="chunk", name="memory_chunk_embedding_hnsw"),
        migrations.RemoveIndex(
            model_name="semanticcacheentry", name="memory_semcache_embedding_hnsw"
        ),
        *(
            migrations.AlterField(
                model_name=model, name="embedding", field=pgvector.django.vector.VectorField()
            )
            for model in ("chunk", "semanticcacheentry", "customermemory")
        ),
        migrations.RunPython(forwards, backwards),
        *(
            migrations.AlterField(
                model_name=model,
                name="embedding",
                field=pgvector.django.vector.VectorField(dimensions=384),
            )
            for model in ("chunk", "semanticcacheentry", "customermemory")
        ),
        migrations.AddIndex(model_name="chunk", index=_hnsw("memory_chunk_embedding_hnsw")),
        migrations.AddIndex(
            model_name="semanticcacheentry", index=_hnsw("memory_semcache_embedding_hnsw")
        ),
    ]
