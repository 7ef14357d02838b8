"""Memory in the Django admin. Articles are written through memory.services (so every change is
re-indexed and bumps the knowledge-base version); indexes, caches and logs are browse-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from memory import services
from memory.models import (
    Article,
    Chunk,
    Conversation,
    CustomerMemory,
    KnowledgeBaseState,
    Message,
    SemanticCacheEntry,
    SemanticCacheLookup,
)


class BrowseOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "section", "indexed", "updated_at"]
    list_filter = ["section"]
    search_fields = ["slug", "title", "body", "keywords"]
    fields = ["slug", "title", "section", "keywords", "body", "content_hash", "indexed_model_id"]
    readonly_fields = ["content_hash", "indexed_model_id"]
    actions = ["reindex"]

    @admin.display(boolean=True)
    def indexed(self, obj: Article) -> bool:
        return obj.indexed_hash == obj.content_hash

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The slug names the article in citations; it is fixed once created.
        return [*self.readonly_fields, "slug"] if obj else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Article, form: Any, change: bool) -> None:
        if change:
            services.article_update(
                article=obj,
                title=obj.title,
                section=obj.section,
                body=obj.body,
                keywords=obj.keywords,
            )
        else:
            created = services.article_create(
                slug=obj.slug,
                title=obj.title,
                section=obj.section,
                body=obj.body,
                keywords=obj.keywords,
            )
            obj.pk = created.pk

    def delete_model(self, request: HttpRequest, obj: Article) -> None:
        services.article_delete(article=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        for article in queryset:
            services.article_delete(article=article)

    @admin.action(description="Re-index the selected articles")
    def reindex(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        written = sum(services.article_reindex(article=a, force=True) for a in queryset)
        self.message_user(request, f"Re-indexed: {written} passages written.", messages.SUCCESS)


@admin.register(Chunk)
class ChunkAdmin(BrowseOnlyAdmin):
    list_display = ["article", "ordinal", "heading"]
    search_fields = ["article__slug", "text"]
    exclude = ["embedding", "search_vector"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(KnowledgeBaseState)
class KnowledgeBaseStateAdmin(BrowseOnlyAdmin):
    list_display = ["version", "updated_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CustomerMemory)
class CustomerMemoryAdmin(BrowseOnlyAdmin):
    """Staff can see and delete (privacy requests) what is remembered about a customer."""

    list_display = ["customer", "text", "conversation", "source", "created_at"]
    search_fields = ["customer__email", "text"]
    exclude = ["embedding"]

    def delete_model(self, request: HttpRequest, obj: CustomerMemory) -> None:
        services.customer_memory_delete(customer=obj.customer, memory_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CustomerMemory]) -> None:
        for memory in queryset.select_related("customer"):
            services.customer_memory_delete(customer=memory.customer, memory_id=memory.pk)


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["seq", "role", "content", "created_at"]
    readonly_fields = ["seq", "role", "content", "created_at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(BrowseOnlyAdmin):
    list_display = ["id", "customer", "last_seq", "updated_at"]
    search_fields = ["customer__email"]
    readonly_fields = ["customer", "last_seq", "summary", "summary_through_seq"]
    inlines = [MessageInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SemanticCacheEntry)
class SemanticCacheEntryAdmin(BrowseOnlyAdmin):
    list_display = ["question", "prompt_version", "kb_version", "hits", "expires_at"]
    search_fields = ["question", "answer"]
    exclude = ["embedding"]


@admin.register(SemanticCacheLookup)
class SemanticCacheLookupAdmin(BrowseOnlyAdmin):
    list_display = ["created_at", "question", "hit", "similarity", "reason", "kb_version"]
    list_filter = ["hit", "reason"]
