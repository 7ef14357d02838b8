"""Billing in the Django admin: everything browsable by staff, money read-only, and refund
requests decided through `billing.services` (the admin never edits money or states directly)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from billing import services
from billing.models import (
    Charge,
    Customer,
    IdempotencyKey,
    Invoice,
    Plan,
    Refund,
    RefundRequest,
    Subscription,
)


class ReadOnlyMoneyAdmin(admin.ModelAdmin):
    """Money and ledger rows are written by services only; staff browse them here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # View-only, even for superusers: a Save writes back every column as the form loaded
        # it, undoing whatever a refund committed in between (a lost update of the ledger).
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["email", "name", "country", "currency", "vat_id", "ref"]
    search_fields = ["email", "name", "ref", "vat_id"]
    list_filter = ["currency", "country"]
    readonly_fields = ["ref", "currency", "created_at"]


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["code", "interval", "price", "seats", "invoice_limit"]
    readonly_fields = ["price"]


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyMoneyAdmin):
    list_display = ["ref", "customer", "plan", "currency", "status", "current_period_end"]
    list_filter = ["status", "plan", "currency"]
    search_fields = ["ref", "customer__email"]
    list_select_related = ["customer", "plan"]


class ChargeInline(admin.TabularInline):
    model = Charge
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "ref",
        "amount",
        "currency",
        "status",
        "charged_at",
        "refunded_amount",
    )
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyMoneyAdmin):
    list_display = ["number", "customer", "total", "currency", "status", "issued_at", "reissued"]
    list_filter = ["status", "currency", "reissued"]
    search_fields = ["number", "customer__email"]
    date_hierarchy = "issued_at"
    list_select_related = ["customer"]
    inlines = [ChargeInline]


class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    can_delete = False
    fields = readonly_fields = ("ref", "amount", "currency", "status", "created_at", "completed_at")
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Charge)
class ChargeAdmin(ReadOnlyMoneyAdmin):
    list_display = [
        "ref",
        "customer",
        "invoice",
        "amount",
        "currency",
        "status",
        "charged_at",
        "refunded_amount",
        "refund_pending_amount",
        "disputed_at",
    ]
    list_filter = ["status", "currency", "payment_method"]
    search_fields = ["ref", "customer__email", "invoice__number"]
    date_hierarchy = "charged_at"
    list_select_related = ["customer", "invoice"]
    inlines = [RefundInline]


@admin.register(Refund)
class RefundAdmin(ReadOnlyMoneyAdmin):
    list_display = ["ref", "charge", "amount", "currency", "status", "created_at", "completed_at"]
    list_filter = ["status", "currency"]
    search_fields = ["ref", "charge__ref", "idempotency_key", "processor_ref"]
    list_select_related = ["charge"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyMoneyAdmin):
    list_display = ["key", "operation", "recovery_point", "locked_at", "attempts", "created_at"]
    list_filter = ["recovery_point", "operation"]
    search_fields = ["key"]


@admin.register(RefundRequest)
class RefundRequestAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "customer",
        "charge",
        "amount",
        "currency",
        "clause",
        "state",
        "auto_approved",
        "created_at",
        "expires_at",
        "decided_by",
    ]
    list_filter = ["state", "clause", "auto_approved", "currency"]
    search_fields = ["customer__email", "charge__ref", "idempotency_key"]
    list_select_related = ["customer", "charge", "decided_by"]
    actions = ["approve_selected", "reject_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # requests are proposed through billing.services.refund_request_create

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # View-only: a Save would write the state as loaded over a decision or an execution
        # committed meanwhile (e.g. reopen a rejected request). Decisions are the actions below.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        # Every field is read-only; decisions go through the actions below.
        return [field.name for field in self.model._meta.fields]

    def _decide(
        self, request: HttpRequest, queryset: QuerySet[RefundRequest], approve: bool
    ) -> None:
        decide = services.refund_request_approve if approve else services.refund_request_reject
        done = 0
        for refund_request in queryset.order_by("pk"):
            try:
                decide(
                    refund_request=refund_request,
                    actor=request.user,
                    note=f"{'Approved' if approve else 'Rejected'} in the admin",
                )
            except (services.RefundError, PermissionDenied) as exc:
                self.message_user(request, f"#{refund_request.pk}: {exc}", messages.WARNING)
            else:
                done += 1
        verb = "approved" if approve else "rejected"
        self.message_user(request, f"{done} refund request(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Approve selected refund requests", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[RefundRequest]) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(description="Reject selected refund requests", permissions=["decide"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[RefundRequest]) -> None:
        self._decide(request, queryset, approve=False)

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.decide_refundrequest")
