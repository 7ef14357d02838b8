"""Staff REST API for the help center (mounted at /api/v1/helpcenter/ by ledgerly/api.py).

Who may call it (scope `staff`) and the audit trail of its writes are given where it is mounted:
memory knows nothing of API keys. Thin: validate, call a service or selector, render. Every input
is checked before it reaches Postgres: slugs by their pattern, no NUL characters in text (Postgres
refuses them), a non-empty search query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from django.db import IntegrityError
from django.http import HttpRequest
from ninja import Path, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import AfterValidator, Field, StringConstraints

from memory import selectors, services
from memory.models import Article

router = Router(tags=["help center"])

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,79}$"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("may not be blank")
    return value


def _text(max_length: int, *, required: bool = True) -> object:
    checks = [AfterValidator(_no_nul)] + ([AfterValidator(_not_blank)] if required else [])
    return Annotated[
        str, StringConstraints(min_length=1 if required else 0, max_length=max_length), *checks
    ]


Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, description="^[a-z0-9][a-z0-9-]{0,79}$")]
Title = _text(200)
Section = _text(100)
Body = _text(100_000)
Keywords = _text(2_000, required=False)
Query_ = _text(500)


class ArticleIn(Schema):
    slug: Slug
    title: Title  # type: ignore[valid-type]
    section: Section  # type: ignore[valid-type]
    body: Body  # type: ignore[valid-type]
    keywords: Keywords = ""  # type: ignore[valid-type]


class ArticlePatch(Schema):
    title: Title | None = None  # type: ignore[valid-type]
    section: Section | None = None  # type: ignore[valid-type]
    body: Body | None = None  # type: ignore[valid-type]
    keywords: Keywords | None = None  # type: ignore[valid-type]


class SearchIn(Schema):
    q: Query_  # type: ignore[valid-type]
    k: int = Field(3, ge=1, le=20)


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
def get_article(request: HttpRequest, slug: SlugPath) -> ArticleOut:
    return _out(_get(slug))


@router.post("/articles", response={201: ArticleOut})
def create_article(request: HttpRequest, payload: ArticleIn) -> Status[ArticleOut]:
    try:
        article = services.article_create(**payload.dict())
    except IntegrityError:
        raise HttpError(409, f"an article {payload.slug!r} exists already") from None
    return Status(201, _out(article))


@router.patch("/articles/{slug}", response=ArticleOut)
def update_article(request: HttpRequest, slug: SlugPath, payload: ArticlePatch) -> ArticleOut:
    article = services.article_update(article=_get(slug), **payload.dict())
    return _out(article)


@router.delete("/articles/{slug}", response={204: None})
def delete_article(request: HttpRequest, slug: SlugPath) -> Status[None]:
    services.article_delete(article=_get(slug))
    return Status(204, None)


@router.post("/articles/{slug}/reindex", response=ReindexOut)
def reindex_article(request: HttpRequest, slug: SlugPath) -> ReindexOut:
    written = services.article_reindex(article=_get(slug), force=True)
    return ReindexOut(slug=slug, chunks_written=written, kb_version=selectors.kb_version_get())


@router.post("/ingest", response=IngestOut)
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
def search(request: HttpRequest, params: Query[SearchIn]) -> list[PassageOut]:
    return [
        PassageOut(slug=p.slug, title=p.title, heading=p.heading, text=p.text, score=p.score)
        for p in selectors.passages_search(query=params.q, k=params.k)
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
