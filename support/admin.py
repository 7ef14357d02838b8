"""Support in the admin: tickets and runs to read, and the staff actions of this issue (retry a
dead letter, resolve an escalation, pull a kill switch, edit the router's exemplars). Every
write goes through a service; the staff pages of the chat issue build on the same services.

The audit trail: every staff write made here is in `support.AuditEntry` with
`via="admin:<path>"`, committed with the write: the actions shared with the staff pages go
through `support.staff_actions`; the rest record with `support.audit` in the admin's own
transaction (a change form or delete page is one already). billing and memory cannot import
support, so their admins that write (refund decisions, customers, plans, articles, customer
memories) are re-registered at the end of this module as subclasses that only add the audit
entry; every other behaviour and read-only protection is inherited unchanged. What stays
writable without an entry of ours is Django's own auth admin (users, groups, permissions:
superusers only; Django's LogEntry records those)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

import billing.admin as billing_admin
import memory.admin as memory_admin
from billing import services as billing_services
from billing.models import Customer, Plan, RefundRequest
from memory.models import Article, CustomerMemory
from support import apikeys, router, staff_actions
from support.audit import audit_record
from support.models import (
    ApiKey,
    ApiScope,
    DeadLetter,
    Escalation,
    GuardIntervention,
    KillSwitch,
    Release,
    RouterExemplar,
    Run,
    RunStep,
    ShadowOutput,
    Ticket,
)
from support.releases import (
    ReleaseError,
    release_compare,
    release_promote,
    release_rollback,
)


def _via(request: HttpRequest) -> str:
    return f"admin:{request.path}"


def _staff(request: HttpRequest) -> User:
    if not isinstance(request.user, User):  # the admin lets only signed-in staff this far
        raise PermissionDenied
    return request.user


class AuditedChanges(admin.ModelAdmin):
    """A change form, add form or delete that is a staff action: each save or delete records
    `<model>.add|change|delete` with the names of the fields changed (not their values: a
    customer's email or a key's hash has no place in the trail). The admin's change form and
    delete page run in one transaction, which the entry joins; a bulk delete is wrapped here."""

    def _audit_change(
        self, request: HttpRequest, verb: str, obj: Model, changed: list[str] | None = None
    ) -> None:
        name = obj._meta.model_name
        audit_record(
            actor=_staff(request),
            action=f"{name}.{verb}",
            target=f"{name}:{obj.pk}",
            via=_via(request),
            detail={"changed": changed} if changed is not None else None,
        )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            self._audit_change(request, "change" if change else "add", obj, form.changed_data)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            pk = obj.pk
            super().delete_model(request, obj)
            obj.pk = pk  # Django clears it on delete; the entry names the row that was
            self._audit_change(request, "delete", obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with transaction.atomic():
            rows = list(queryset)
            super().delete_queryset(request, queryset)
            for obj in rows:
                self._audit_change(request, "delete", obj)


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Release)
class ReleaseAdmin(ReadOnly):
    """Releases are made and started with `manage.py release` (which checks every pin); here
    staff read them, with the candidate's figures against the current release, and roll back
    or promote."""

    list_display = ("name", "state", "share", "started_at", "rolled_back_at", "rolled_back_by")
    list_filter = ("state",)
    readonly_fields = (
        "name",
        "state",
        "share",
        "prompt_versions",
        "model_ids",
        "notes",
        "created_by",
        "started_at",
        "started_by",
        "promoted_at",
        "promoted_by",
        "rolled_back_at",
        "rolled_back_by",
        "rollback_reason",
        "rollback_metrics",
        "figures",
    )
    fields = readonly_fields
    actions = ("rollback", "promote")

    @admin.display(description="Figures against the current release (the window now)")
    def figures(self, obj: Release) -> str:
        if obj.state not in ("shadow", "canary"):
            return "-"
        verdict = release_compare(candidate=obj)
        return "; ".join(verdict.reasons) or verdict.note or str(verdict.as_dict()["candidate"])

    @staticmethod
    def _audit(request: HttpRequest, action: str, release: Release) -> None:
        audit_record(
            actor=_staff(request),
            action=f"release.{action}",
            target=f"release:{release.name}",
            via=_via(request),
        )

    @admin.action(description="Roll back (no new ticket goes to it, at once)")
    def rollback(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        who = f"staff:{request.user.get_username()}"
        done = 0
        for release in queryset:
            with transaction.atomic():
                if release_rollback(
                    release=release, actor=who, reason="rolled back by staff in the admin"
                ):
                    self._audit(request, "rollback", release)
                    done += 1
        self.message_user(request, f"{done} release(s) rolled back.")

    @admin.action(description="Promote to current")
    def promote(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Promote one release at a time.", messages.WARNING)
            return
        try:
            with transaction.atomic():  # the promotion and its entry commit together
                release = release_promote(
                    release=queryset.get(), actor=f"staff:{request.user.get_username()}"
                )
                self._audit(request, "promote", release)
        except ReleaseError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{release.name} is the current release.")


@admin.register(ShadowOutput)
class ShadowOutputAdmin(ReadOnly):
    """What a shadow release would have answered (never sent), beside what the customer got."""

    list_display = ("id", "release", "live_run", "kind", "lane", "created_at")
    list_filter = ("release", "lane")


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
    list_display = (
        "id",
        "ticket",
        "release",
        "shadow_of",
        "status",
        "step",
        "turns",
        "tokens",
        "cost_usd",
        "outcome",
        "wake_at",
    )
    list_filter = ("status", "release", "outcome")
    inlines = (RunStepInline,)


@admin.register(Escalation)
class EscalationAdmin(ReadOnly):
    list_display = ("id", "ticket", "reason", "state", "created_at")
    list_filter = ("state", "reason")
    actions = ("resolve",)

    @admin.action(description="Resolve the selected escalations")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Escalation]) -> None:
        # As on the staff pages: the escalated ticket counts as answered from now on.
        done = sum(
            staff_actions.escalation_resolve(escalation=e, actor=_staff(request), via=_via(request))
            for e in queryset
        )
        self.message_user(request, f"{done} escalation(s) resolved.")


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnly):
    list_display = ("id", "run", "step", "created_at", "retried_at", "discarded_at")
    actions = ("retry", "discard")

    @admin.action(description="Retry from the last checkpoint")
    def retry(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done = sum(
            staff_actions.dead_letter_retry(dead_letter=d, actor=_staff(request), via=_via(request))
            for d in queryset
        )
        level = messages.SUCCESS if done else messages.WARNING
        self.message_user(request, f"{done} run(s) resumed from their checkpoint.", level)

    @admin.action(description="Discard")
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done = sum(
            staff_actions.dead_letter_discard(
                dead_letter=d, actor=_staff(request), via=_via(request)
            )
            for d in queryset
        )
        self.message_user(request, f"{done} dead letter(s) discarded.")


class KillSwitchForm(forms.ModelForm):
    class Meta:
        model = KillSwitch
        fields = ("scope", "customer", "enabled", "reason")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        scope = cleaned.get("scope", getattr(self.instance, "scope", None))
        customer = cleaned.get("customer", getattr(self.instance, "customer", None))
        if scope == "customer" and customer is None:
            raise forms.ValidationError("a customer's kill switch names the customer")
        if cleaned.get("enabled") and not (cleaned.get("reason") or "").strip():
            raise forms.ValidationError("give a reason for turning the switch on")
        return cleaned


@admin.register(KillSwitch)
class KillSwitchAdmin(admin.ModelAdmin):
    """Audited, not read-only: pulling a switch from here is the same action as on the staff
    page (`staff_actions.kill_switch_set`, a reason to turn it on). A saved switch's scope and
    customer are fixed (changing them would turn another switch), and it is turned off, not
    deleted (a delete would end it with no entry)."""

    form = KillSwitchForm
    list_display = ("scope", "customer", "enabled", "reason", "updated_by", "updated_at")
    fields = ("scope", "customer", "enabled", "reason")
    raw_id_fields = ("customer",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("scope", "customer") if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: KillSwitch, form: Any, change: bool) -> None:
        switch = staff_actions.kill_switch_set(
            enabled=obj.enabled,
            actor=_staff(request),
            customer=obj.customer if obj.scope == "customer" else None,
            reason=obj.reason,
            via=_via(request),
        )
        obj.pk, obj._state.adding = switch.pk, False


@admin.register(RouterExemplar)
class RouterExemplarAdmin(AuditedChanges):
    """Exemplars steer the router: adding, editing and deleting one is audited."""

    list_display = ("text", "lane", "source", "model_id")
    list_filter = ("lane", "source")
    search_fields = ("text",)
    fields = ("text", "lane")

    def save_model(
        self, request: HttpRequest, obj: RouterExemplar, form: Any, change: bool
    ) -> None:
        if change and obj.pk:
            RouterExemplar.objects.filter(pk=obj.pk).delete()
        saved = router.exemplar_add(text=obj.text, lane=obj.lane, source="staff")
        obj.pk, obj._state.adding = saved.pk, False
        self._audit_change(request, "change" if change else "add", obj, form.changed_data)


@admin.register(GuardIntervention)
class GuardInterventionAdmin(ReadOnly):
    list_display = ("ticket", "lane", "action", "created_at")
    list_filter = ("action", "lane")


# --- REST API keys ------------------------------------------------------------------------------
class ApiKeyAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "owner", "customer", "expires_at")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        owner = cleaned.get("owner")
        if ApiScope.STAFF in cleaned.get("scopes", []) and owner and not owner.is_staff:
            raise forms.ValidationError("a staff key's owner must be staff")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made by `support.apikeys` (the plaintext is shown once, on the page after the
    form), rotated (old key valid for the grace period) and revoked by actions, each through
    `support.staff_actions` (audited); a saved key is not edited, and it is revoked, not
    deleted (a delete would leave no entry and take the key's history with it)."""

    list_display = (
        "name",
        "prefix",
        "scopes",
        "owner",
        "customer",
        "expires_at",
        "revoked_at",
        "replaced_by",
        "last_used_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "owner__username", "customer__email")
    actions = ("rotate", "revoke")
    raw_id_fields = ("customer",)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("name", "scopes", "owner", "customer", "expires_at")
        return (*self.list_display, "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.get_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return
        issued = staff_actions.api_key_create(
            actor=_staff(request),
            via=_via(request),
            name=obj.name,
            scopes=form.cleaned_data["scopes"],
            owner=obj.owner,
            customer=obj.customer,
            expires_at=obj.expires_at,
        )
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.api_key, field.attname))
        obj._state.adding = False
        obj._state.db = issued.api_key._state.db
        request._api_keys_issued = [  # type: ignore[attr-defined]
            {"api_key": issued.api_key, "plaintext": issued.plaintext, "note": "new key"}
        ]

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None):
        issued = getattr(request, "_api_keys_issued", None)
        if issued:
            return self._issued_page(request, issued)
        return super().response_add(request, obj, post_url_continue)

    def _issued_page(self, request: HttpRequest, issued: list[dict[str, Any]]) -> TemplateResponse:
        response = TemplateResponse(
            request,
            "admin/support/apikey/issued.html",
            {**self.admin_site.each_context(request), "issued": issued},
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Rotate (new key; the old one stays valid for the grace period)")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> TemplateResponse | None:
        issued = []
        for api_key in queryset:
            try:
                new = staff_actions.api_key_rotate(
                    api_key=api_key, actor=_staff(request), via=_via(request)
                )
            except apikeys.ApiKeyError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            api_key.refresh_from_db()
            issued.append(
                {
                    "api_key": new.api_key,
                    "plaintext": new.plaintext,
                    "note": f"replaces {api_key.prefix}, which stays valid until "
                    f"{api_key.expires_at:%Y-%m-%d %H:%M} UTC",
                }
            )
        return self._issued_page(request, issued) if issued else None

    @admin.action(description="Revoke now")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        done = sum(
            staff_actions.api_key_revoke(api_key=k, actor=_staff(request), via=_via(request))
            for k in queryset
        )
        self.message_user(request, f"{done} key(s) revoked.")


# --- billing's and memory's admins, audited -----------------------------------------------------
admin.site.unregister(RefundRequest)


@admin.register(RefundRequest)
class AuditedRefundRequestAdmin(billing_admin.RefundRequestAdmin):
    """billing's view-only refund requests, whose approve/reject actions are the staff pages'
    (`staff_actions`: the decision and its entry in one transaction). The actions stay offered
    only to refund approvers; billing refuses anyone else again, and nothing is recorded."""

    def _decide(
        self, request: HttpRequest, queryset: QuerySet[RefundRequest], approve: bool
    ) -> None:
        decide = (
            staff_actions.refund_request_approve if approve else staff_actions.refund_request_reject
        )
        done = 0
        for refund_request in queryset.order_by("pk"):
            try:
                decide(
                    refund_request=refund_request,
                    actor=_staff(request),
                    note=f"{'Approved' if approve else 'Rejected'} in the admin",
                    via=_via(request),
                )
            except (
                billing_services.RefundError,
                PermissionDenied,
                staff_actions.StaffInputError,
            ) as exc:
                self.message_user(request, f"#{refund_request.pk}: {exc}", messages.WARNING)
            else:
                done += 1
        verb = "approved" if approve else "rejected"
        self.message_user(request, f"{done} refund request(s) {verb}.", messages.SUCCESS)


admin.site.unregister(Customer)
admin.site.unregister(Plan)


@admin.register(Customer)
class AuditedCustomerAdmin(AuditedChanges, billing_admin.CustomerAdmin):
    """Audited, not read-only: staff correct a customer's details (email, name, VAT id)."""


@admin.register(Plan)
class AuditedPlanAdmin(AuditedChanges, billing_admin.PlanAdmin):
    """Audited, not read-only: a plan's seats and invoice limit are staff-maintained."""


admin.site.unregister(Article)


@admin.register(Article)
class AuditedArticleAdmin(memory_admin.ArticleAdmin):
    """memory's article admin (audited, not read-only: it is where staff write the help
    center), each write the staff pages' and the API's `staff_actions` call."""

    def save_model(self, request: HttpRequest, obj: Article, form: Any, change: bool) -> None:
        actor, via = _staff(request), _via(request)
        title, section, body, keywords = obj.title, obj.section, obj.body, obj.keywords
        if change:
            staff_actions.article_edit(
                article=obj,
                actor=actor,
                via=via,
                title=title,
                section=section,
                body=body,
                keywords=keywords,
            )
        else:
            obj.pk = staff_actions.article_create(
                actor=actor,
                via=via,
                slug=obj.slug,
                title=title,
                section=section,
                body=body,
                keywords=keywords,
            ).pk

    def delete_model(self, request: HttpRequest, obj: Article) -> None:
        staff_actions.article_delete(article=obj, actor=_staff(request), via=_via(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        for article in queryset:
            staff_actions.article_delete(article=article, actor=_staff(request), via=_via(request))

    @admin.action(description="Re-index the selected articles")
    def reindex(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        written = sum(
            staff_actions.article_reindex(article=a, actor=_staff(request), via=_via(request))
            for a in queryset
        )
        self.message_user(request, f"Re-indexed: {written} passages written.", messages.SUCCESS)


admin.site.unregister(CustomerMemory)


@admin.register(CustomerMemory)
class AuditedCustomerMemoryAdmin(AuditedChanges, memory_admin.CustomerMemoryAdmin):
    """Forgetting a memory (a privacy request) is audited; the entry names the row, not what
    was remembered."""
