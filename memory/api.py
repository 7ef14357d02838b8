"""Staff REST API for the help center (mounted at /api/memory/).

Staff only, through the Django session (the API issue will add its own auth later). Thin: parse,
call a service or selector, render.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError
from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.errors import HttpError
from ninja.security import SessionAuthIsStaff

from memory import selectors, services
from memory.models import Article

router = Router(tags=["help center"], auth=SessionAuthIsStaff())


class ArticleIn(Schema):
    slug: str
    title: str
    section: str
    body: str
    keywords: str = ""


class ArticlePatch(Schema):
    title: str | None = None
    section: str | None = None
    body: str | None = None
    keywords: str | None = None


class ArticleOut(Schema):
    slug: str
    title: str
    section: str
    body: str
    keywords: str
    content_hash: str
    indexed: bool
    chunks: int
    updated_at: datetime


class ReindexOut(Schema):
    slug: str
    chunks_written: int
    kb_version: int


class IngestOut(Schema):
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]
    chunks_written: int
    kb_version: int


class PassageOut(Schema):
    slug: str
    title: str
    heading: str
    text: str
    score: float


class CacheStatsOut(Schema):
    lookups: int
    hits: int
    hit_rate: float
    by_reason: dict[str, int]
    mean_hit_similarity: float | None
    kb_version: int


def _out(article: Article) -> ArticleOut:
    return ArticleOut(
        slug=article.slug,
        title=article.title,
        section=article.section,
        body=article.body,
        keywords=article.keywords,
        content_hash=article.content_hash,
        indexed=article.indexed_hash == article.content_hash,
        chunks=article.chunks.count(),
        updated_at=article.updated_at,
    )


def _get(slug: str) -> Article:
    article = selectors.article_get_by_slug(slug=slug)
    if article is None:
        raise HttpError(404, f"no article {slug!r}")
    return article


@router.get("/articles", response=list[ArticleOut])
def list_articles(request: HttpRequest) -> list[ArticleOut]:
    return [_out(a) for a in selectors.articles_list()]


@router.get("/articles/{slug}", response=ArticleOut)
def get_article(request: HttpRequest, slug: str) -> ArticleOut:
    return _out(_get(slug))


@router.post("/articles", response={201: ArticleOut})
def create_article(request: HttpRequest, payload: ArticleIn) -> Status[ArticleOut]:
    try:
        article = services.article_create(**payload.dict())
    except IntegrityError:
        raise HttpError(409, f"an article {payload.slug!r} exists already") from None
    return Status(201, _out(article))


@router.patch("/articles/{slug}", response=ArticleOut)
def update_article(request: HttpRequest, slug: str, payload: ArticlePatch) -> ArticleOut:
    article = services.article_update(article=_get(slug), **payload.dict())
    return _out(article)


@router.delete("/articles/{slug}", response={204: None})
def delete_article(request: HttpRequest, slug: str) -> Status[None]:
    services.article_delete(article=_get(slug))
    return Status(204, None)


@router.post("/articles/{slug}/reindex", response=ReindexOut)
def reindex_article(request: HttpRequest, slug: str) -> ReindexOut:
    written = services.article_reindex(article=_get(slug), force=True)
    return ReindexOut(slug=slug, chunks_written=written, kb_version=selectors.kb_version_get())


@router.post("/helpcenter/ingest", response=IngestOut)
def ingest_helpcenter(request: HttpRequest, prune: bool = False) -> IngestOut:
    report = services.helpcenter_ingest(prune=prune)
    return IngestOut(
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        deleted=report.deleted,
        chunks_written=report.chunks_written,
        kb_version=report.kb_version,
    )


@router.get("/search", response=list[PassageOut])
def search(request: HttpRequest, q: str, k: int = 3) -> list[PassageOut]:
    return [
        PassageOut(slug=p.slug, title=p.title, heading=p.heading, text=p.text, score=p.score)
        for p in selectors.passages_search(query=q, k=min(max(k, 1), 20))
    ]


@router.get("/semantic-cache/stats", response=CacheStatsOut)
def semantic_cache_stats(request: HttpRequest) -> CacheStatsOut:
    stats = selectors.semantic_cache_stats()
    return CacheStatsOut(
        lookups=stats.lookups,
        hits=stats.hits,
        hit_rate=stats.hit_rate,
        by_reason=stats.by_reason,
        mean_hit_similarity=stats.mean_hit_similarity,
        kb_version=selectors.kb_version_get(),
    )
