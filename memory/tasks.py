"""Memory's Celery tasks: thin wrappers over services (safe to run twice)."""

from __future__ import annotations

from celery import shared_task

from memory import services


@shared_task(acks_late=True, ignore_result=True)
def purge_semantic_cache() -> int:
    """Delete expired semantic-cache entries and those of older KB versions."""
    return services.semantic_cache_purge()


@shared_task(acks_late=True, ignore_result=True)
def ingest_helpcenter() -> int:
    """Bring the knowledge base in line with the article files (idempotent)."""
    return services.helpcenter_ingest().chunks_written
