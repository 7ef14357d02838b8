"""Support in the admin: tickets and runs to read, and the staff actions of this issue (retry a
dead letter, resolve an escalation, pull a kill switch, edit the router's exemplars). Every
write goes through a service; the staff pages of the chat issue build on the same services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from support import router, services
from support.models import (
    DeadLetter,
    Escalation,
    GuardIntervention,
    KillSwitch,
    RouterExemplar,
    Run,
    RunStep,
    Ticket,
)


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Ticket)
class TicketAdmin(ReadOnly):
    list_display = ("id", "customer", "state", "first_lane", "lane", "channel", "created_at")
    list_filter = ("state", "lane", "channel")
    search_fields = ("customer__email", "subject")


class RunStepInline(admin.TabularInline):
    model = RunStep
    extra = 0
    can_delete = False
    readonly_fields = ("index", "kind", "tokens", "cost_usd", "worker", "started_at", "detail")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnly):
    list_display = ("id", "ticket", "status", "step", "turns", "tokens", "cost_usd", "wake_at")
    list_filter = ("status",)
    inlines = (RunStepInline,)


@admin.register(Escalation)
class EscalationAdmin(ReadOnly):
    list_display = ("id", "ticket", "reason", "state", "created_at")
    list_filter = ("state", "reason")
    actions = ("resolve",)

    @admin.action(description="Resolve the selected escalations")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Escalation]) -> None:
        done = sum(services.escalation_resolve(escalation=e) for e in queryset)
        self.message_user(request, f"{done} escalation(s) resolved.")


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnly):
    list_display = ("id", "run", "step", "created_at", "retried_at", "discarded_at")
    actions = ("retry", "discard")

    @admin.action(description="Retry from the last checkpoint")
    def retry(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done = sum(services.dead_letter_retry(dead_letter=d) for d in queryset)
        level = messages.SUCCESS if done else messages.WARNING
        self.message_user(request, f"{done} run(s) resumed from their checkpoint.", level)

    @admin.action(description="Discard")
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done = sum(services.dead_letter_discard(dead_letter=d) for d in queryset)
        self.message_user(request, f"{done} dead letter(s) discarded.")


@admin.register(KillSwitch)
class KillSwitchAdmin(admin.ModelAdmin):
    list_display = ("scope", "customer", "enabled", "reason", "updated_by", "updated_at")
    fields = ("scope", "customer", "enabled", "reason")

    def save_model(self, request: HttpRequest, obj: KillSwitch, form: Any, change: bool) -> None:
        services.kill_switch_set(
            enabled=obj.enabled,
            actor=f"staff:{request.user.get_username()}",
            customer=obj.customer if obj.scope == "customer" else None,
            reason=obj.reason,
        )


@admin.register(RouterExemplar)
class RouterExemplarAdmin(admin.ModelAdmin):
    list_display = ("text", "lane", "source", "model_id")
    list_filter = ("lane", "source")
    search_fields = ("text",)
    fields = ("text", "lane")

    def save_model(
        self, request: HttpRequest, obj: RouterExemplar, form: Any, change: bool
    ) -> None:
        if change and obj.pk:
            RouterExemplar.objects.filter(pk=obj.pk).delete()
        router.exemplar_add(text=obj.text, lane=obj.lane, source="staff")


@admin.register(GuardIntervention)
class GuardInterventionAdmin(ReadOnly):
    list_display = ("ticket", "lane", "action", "created_at")
    list_filter = ("action", "lane")
