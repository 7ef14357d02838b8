from django.contrib import admin

from ledgerly.llm.models import LLMBatch, LLMCall


@admin.register(LLMCall)
class LLMCallAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "purpose",
        "tier",
        "model",
        "outcome",
        "fallback",
        "simulated",
        "cost_usd",
        "latency_ms",
        "ticket_id",
    )
    list_filter = ("outcome", "model", "purpose", "simulated", "fallback")
    search_fields = ("ticket_id", "run_id", "customer_id", "request_id")
    readonly_fields = [f.name for f in LLMCall._meta.fields]


@admin.register(LLMBatch)
class LLMBatchAdmin(admin.ModelAdmin):
    list_display = ("created_at", "key", "state", "provider_batch_id", "run_id", "next_poll_at")
    list_filter = ("state",)
    search_fields = ("key", "provider_batch_id", "run_id", "ticket_id", "customer_ref")
    readonly_fields = [f.name for f in LLMBatch._meta.fields]
